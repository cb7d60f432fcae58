"""State files that load without running code: checkpoints, trained policies.

A plain pickle executes whatever its author wrote (``__reduce__`` can call any
function), so a checkpoint or policy file from shared storage would be a way into every
node that loads it. This format is pickle's (fast, exact for numpy arrays and our
dataclasses) behind a magic line, read by an unpickler that resolves only an allowlist
of classes, the same mechanism as ``torch.load(weights_only=True)``:

- plain containers (``list``, ``tuple``, ``dict``, ``set``, ``frozenset``,
  ``collections.OrderedDict``, ``bytearray``, ``complex``);
- numpy arrays, dtypes and scalars (how numpy pickles them);
- classes of the ``peergrid`` package that are dataclasses or enums, or that are
  marked ``@state_class`` (plain classes a node's state holds, such as the prosumer),
  from modules the loading program has already imported (a file cannot make anything
  be imported), by plain (not dotted) names.

Anything else (a function, ``os.system``, ``builtins.eval``, torch's storage loaders,
a class outside ``peergrid``) is refused with ``StateFileError`` naming the file and the
global, before it is called. Tensors are stored as numpy arrays
(``agents.learners.portable``). A file without the magic line, such as a checkpoint of
an older peergrid (``torch.save`` or a bare pickle), is refused unread.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import pickle
import sys
from pathlib import Path
from typing import Any

MAGIC = b"peergrid-state v1\n"
_STATE_CLASSES: set[type] = set()
_BUILTINS = {"list", "tuple", "dict", "set", "frozenset", "bytearray", "complex"}
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class StateFileError(ValueError):
    """A state file that cannot be loaded safely, with the reason."""


def state_class(cls: type) -> type:
    """Allow a plain (non-dataclass) ``peergrid`` class in state files."""
    _STATE_CLASSES.add(cls)
    return cls


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(io.BytesIO(data))
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if "." in name:  # protocol 4 resolves dotted names attribute by attribute
            return self._refuse(module, name)
        if module == "builtins" and name in _BUILTINS:
            return super().find_class(module, name)
        if (module, name) in _NUMPY or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        if module == "collections" and name == "OrderedDict":
            return super().find_class(module, name)
        if module.startswith("peergrid."):
            # only a module the loading program has imported already: naming one makes
            # nothing run (an import has effects: preload warms torch up, for one)
            obj = getattr(sys.modules.get(module), name, None)
            if isinstance(obj, type) and (dataclasses.is_dataclass(obj)
                                          or issubclass(obj, enum.Enum)
                                          or obj in _STATE_CLASSES):
                return obj
        return self._refuse(module, name)

    def _refuse(self, module: str, name: str) -> Any:
        raise StateFileError(f"{self.where}: refers to {module}.{name}, which a state file "
                             "may not contain (loading it could run code); refused")

    def persistent_load(self, pid: Any) -> Any:
        raise StateFileError(f"{self.where}: external references are not allowed")


def dumps(state: Any) -> bytes:
    return MAGIC + pickle.dumps(state, protocol=5)


def loads(data: bytes, where: str = "state") -> Any:
    """The state in ``data``; ``StateFileError`` for anything not written by ``dumps``
    or referring to a class outside the allowlist."""
    if not data.startswith(MAGIC):
        pickled = data[:1] == b"\x80" or data[:2] == b"PK"  # pickle, or torch.save's zip
        hint = (" (a pickle: a checkpoint or policy of an older peergrid, or not ours; "
                "unpickling it could run code, so it is not read. Train or deploy again "
                "with this version)") if pickled else ""
        raise StateFileError(f"{where}: not a peergrid state file{hint}")
    try:
        return _Unpickler(data[len(MAGIC):], where).load()
    except StateFileError:
        raise
    except Exception as err:  # a damaged file: pickle raises many types
        raise StateFileError(f"{where}: damaged state file ({type(err).__name__}: "
                             f"{err})"[:400]) from None


def save(path: str | Path, state: Any) -> None:
    Path(path).write_bytes(dumps(state))


def load(path: str | Path) -> Any:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise StateFileError(f"{path}: {err.strerror or err}") from None
    return loads(data, str(path))
