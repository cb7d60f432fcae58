"""The wire format: a versioned header and a typed body, packed with msgpack.

A message is the msgpack array ``[version, scenario, episode, round, sender, kind,
body]``; ``body`` is a map whose fields are checked against the message class of that
kind (``comms.messages``: the field types declare the checks). Numbers travel
as msgpack floats and ints, arrays as ``{"dtype", "shape", "data"}`` with raw
little-endian bytes (float16/32/64, int8/32/64 only). msgpack never executes anything
while decoding (no pickle on the wire). ``decode`` raises ``WireError`` with a reason
for anything that is not a well-formed message of this scenario: nodes log the reason,
count it and keep serving.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, fields
from typing import Any

import msgpack
import numpy as np

from peergrid.comms.messages import KINDS, Message

WIRE_VERSION = 1
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_DTYPES = {"<f4": np.float32, "<f8": np.float64, "<i8": np.int64,
           # a compressed consensus vector (agents.exchange): float16, int8, top-k positions
           "<f2": np.float16, "|i1": np.int8, "<i4": np.int32}

class WireError(ValueError):
    """A message that cannot be accepted, with the reason."""


@dataclass(frozen=True)
class Header:
    scenario: str
    episode: int
    round: int
    sender: str
    kind: str
    version: int = WIRE_VERSION

    @property
    def key(self) -> tuple[str, int, int, str]:
        """What identifies a message for duplicate detection."""
        return (self.kind, self.episode, self.round, self.sender)


def _pack_value(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        a = np.ascontiguousarray(v)
        dtype = a.dtype.newbyteorder("<").str
        if dtype not in _DTYPES:
            raise WireError(f"array dtype {a.dtype} is not sent on the wire")
        return {"dtype": dtype, "shape": list(a.shape), "data": a.astype(dtype).tobytes()}
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, dict):
        return {k: _pack_value(x) for k, x in v.items()}
    return v


def encode(header: Header, msg: Message) -> bytes:
    if header.kind != msg.kind:
        raise WireError(f"header kind {header.kind!r} for a {msg.kind!r} message")
    body = {k: _pack_value(v) for k, v in msg.fields().items()}
    check_body(header.kind, body)  # never send what a receiver would refuse
    data = msgpack.packb(
        [header.version, header.scenario, header.episode, header.round, header.sender,
         header.kind, body], use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:  # the receiver's socket would drop it, unread
        raise WireError(f"{header.kind}: {len(data)} bytes, more than {MAX_MESSAGE_BYTES}")
    return data


def _bin_header(n: int) -> int:
    """Bytes msgpack puts before a bin of ``n`` bytes (bin 8, 16 or 32)."""
    return 2 if n < 2**8 else 3 if n < 2**16 else 5


def encoded_size(header: Header, msg: Message) -> int:
    """``len(encode(header, msg))`` without packing the arrays' data: what a message
    costs on the wire, for accounting (the in-process trainer's consensus bytes)."""
    body, data = {}, 0
    for k, v in msg.fields().items():
        if isinstance(v, np.ndarray):
            n = v.size * v.dtype.itemsize
            body[k] = {"dtype": v.dtype.newbyteorder("<").str, "shape": list(v.shape),
                       "data": b""}
            data += n + _bin_header(n) - _bin_header(0)
        else:
            body[k] = _pack_value(v)
    return data + len(msgpack.packb(
        [header.version, header.scenario, header.episode, header.round, header.sender,
         header.kind, body], use_bin_type=True))


def _unpack_array(field: str, v: Any) -> np.ndarray:
    if not isinstance(v, dict) or set(v) != {"dtype", "shape", "data"}:
        raise WireError(f"{field}: not an array")
    dtype = _DTYPES.get(v["dtype"]) if isinstance(v["dtype"], str) else None
    shape = v["shape"]
    if dtype is None:
        raise WireError(f"{field}: dtype {v['dtype']!r} not accepted")
    if (not isinstance(shape, list) or len(shape) > 4
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape)):
        raise WireError(f"{field}: bad shape {shape!r}")
    if not isinstance(v["data"], bytes):
        raise WireError(f"{field}: data is not bytes")
    n = math.prod(shape)
    if len(v["data"]) != n * np.dtype(dtype).itemsize:
        raise WireError(f"{field}: {len(v['data'])} bytes do not fill shape {shape}")
    out = np.frombuffer(v["data"], dtype=dtype).reshape(shape).copy()
    if out.dtype.kind == "f" and not np.isfinite(out).all():
        raise WireError(f"{field}: non-finite values")
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_MAX_ABS = 1e12  # no quantity of a feeder comes near this; larger is garbage
_MAX_ITEMS = 100_000
_MAX_TEXT = 256


def _field_types(cls: type[Message]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


_SPECS = {kind: _field_types(cls) for kind, cls in KINDS.items()}


def _check_number(where: str, v: Any, nan_ok: bool) -> float:
    if not _is_number(v):
        raise WireError(f"{where} = {v!r}: not a number")
    x = float(v)
    if math.isnan(x) and nan_ok:
        return x
    if not math.isfinite(x):
        raise WireError(f"{where} = {v!r}: not finite")
    if abs(x) > _MAX_ABS:
        raise WireError(f"{where} = {v!r}: beyond any quantity of a feeder")
    return x


def _check_field(where: str, typ: Any, v: Any, nan_ok: bool) -> Any:
    if typ is int:
        if not (isinstance(v, int) and not isinstance(v, bool)) or abs(v) > 2**62:
            raise WireError(f"{where} = {v!r}: not an integer")
        return v
    if typ is float:
        return _check_number(where, v, nan_ok)
    if typ is str:
        if not isinstance(v, str) or len(v) > _MAX_TEXT:
            raise WireError(f"{where} = {v!r:.40}: not a name")
        return v
    if typ is bool:
        if not isinstance(v, bool):
            raise WireError(f"{where} = {v!r}: not a boolean")
        return v
    if typ is np.ndarray:
        return _unpack_array(where, v) if not isinstance(v, np.ndarray) else v
    if typing.get_origin(typ) is dict:
        value_type = typing.get_args(typ)[1]
        if not isinstance(v, dict) or len(v) > _MAX_ITEMS:
            raise WireError(f"{where}: not a map of names")
        out = {}
        for name, x in v.items():
            if not isinstance(name, str) or len(name) > _MAX_TEXT:
                raise WireError(f"{where}: key {name!r:.40} is not a name")
            out[name] = _check_field(f"{where}[{name}]", value_type, x, nan_ok)
        return out
    raise TypeError(f"{where}: no wire check for {typ}")  # a message class out of step


def check_body(kind: str, body: Any) -> dict[str, Any]:
    """The body with arrays unpacked, or ``WireError`` naming the field and the problem."""
    spec = _SPECS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        raise WireError(f"unknown kind {kind!r}")
    if not isinstance(body, dict):
        raise WireError(f"{kind}: body is not a map")
    if set(body) != set(spec):
        missing, extra = sorted(set(spec) - set(body)), sorted(set(body) - set(spec), key=str)
        raise WireError(f"{kind}: fields missing {missing}, unexpected {extra}")
    nan_ok = KINDS[kind].nan_ok
    return {field: _check_field(f"{kind}.{field}", typ, body[field], field in nan_ok)
            for field, typ in spec.items()}


def decode(data: bytes, scenario: str | None = None) -> tuple[Header, Message]:
    """Header and checked body of ``data``; ``WireError`` for anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError("not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"{len(data)} bytes: larger than {MAX_MESSAGE_BYTES}")
    try:
        msg = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as err:  # msgpack raises several types for malformed input
        raise WireError(f"not msgpack: {type(err).__name__}") from None
    if not isinstance(msg, list) or len(msg) != 7:
        raise WireError("not a 7-element message array")
    version, scen, episode, rnd, sender, kind, body = msg
    if version != WIRE_VERSION:
        raise WireError(f"wire version {version!r}, expected {WIRE_VERSION}")
    if not isinstance(scen, str) or (scenario is not None and scen != scenario):
        raise WireError(f"foreign scenario {scen!r}")
    for name, v in (("episode", episode), ("round", rnd)):
        if not isinstance(v, int) or isinstance(v, bool) or v < -1:
            raise WireError(f"header.{name} = {v!r}: not a round number")
    if not isinstance(sender, str) or not sender:
        raise WireError(f"header.sender = {sender!r}: not a name")
    if not isinstance(kind, str) or kind not in KINDS:
        raise WireError(f"unknown kind {kind!r:.40}")
    return Header(scen, episode, rnd, sender, kind), KINDS[kind](**check_body(kind, body))
