"""CURVE key pairs: one per node, its secret readable by its owner only.

``peergrid deploy`` makes every node's pair into the run directory (``keys/``, mode
0700; ``NAME.key_secret`` mode 0600, ``NAME.key`` public) and writes the public keys
into ``deploy.json``. For nodes started by hand on other hosts, ``peergrid keys new``
makes a pair on the host that will use it, so no secret ever travels: only the public
``NAME.key`` files are copied to where ``deploy.json`` is assembled
(``peergrid keys add``) and ``deploy.json`` is copied to every host. The files are
ZeroMQ's certificate format (``zmq.auth``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85


KEY_DIR = "keys"
"""Where `peergrid deploy` puts the pairs, in the run directory."""


class KeyFileError(ValueError):
    """A key file that cannot be used, naming the file and why."""


@dataclass(frozen=True)
class NodeKeys:
    """What a node needs to speak CURVE: its own pair and everyone's public key."""

    name: str
    public: bytes
    secret: bytes = field(repr=False)  # never in a log line or an error's text
    peers: dict[str, bytes]
    """Node name -> public key (z85), this node's included: the allow-list."""

    def name_of(self, public_z85: bytes) -> str | None:
        return self._names.get(public_z85)

    @cached_property
    def _names(self) -> dict[bytes, str]:
        names: dict[bytes, str] = {}
        for name, key in self.peers.items():
            names.setdefault(key, name)
        return names

    @cached_property
    def user_ids(self) -> dict[str, str]:
        """ZAP ``User-Id`` -> node name, for each node's key on the list now
        (``user_id``): what a node looks a message's connection up in."""
        return {user_id(name, key): name for name, key in self.peers.items()}


def user_id(name: str, public_z85: bytes) -> str:
    """The ZAP ``User-Id`` of a connection that ``name``'s key opened (comms.node): the
    name and the key (z85), so a message says which key its connection was opened with
    and is accepted only while that is still the name's key."""
    return f"{name} {public_z85.decode('ascii')}"


def secret_path(key_dir: Path, name: str) -> Path:
    return Path(key_dir) / f"{name}.key_secret"


def new_pair(key_dir: Path, name: str) -> str:
    """Make ``name``'s pair in ``key_dir`` (refusing to overwrite one); its public key."""
    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(key_dir, 0o700)
    if secret_path(key_dir, name).exists():
        raise KeyFileError(f"{secret_path(key_dir, name)}: exists; remove it to make a new pair")
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        public_file, secret_file = zmq.auth.create_certificates(str(key_dir), name)
    finally:
        os.umask(old)
    os.chmod(public_file, 0o644)
    return read_public(Path(public_file))


def new_pairs(key_dir: Path, names: Iterable[str]) -> dict[str, str]:
    return {name: new_pair(key_dir, name) for name in names}


def read_public(path: Path) -> str:
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as err:
        raise KeyFileError(f"{path}: not a key file ({err})") from None
    if public is None:
        raise KeyFileError(f"{path}: holds no public key")
    return public.decode("ascii")


def read_secret(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) from ``path``; refused when others may read it (as ssh does)."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"{path}: no secret key file (deploy.json's security.key_dir, or "
                        "`peergrid node --key`)")
    st = path.stat()
    if st.st_uid != os.getuid():
        raise KeyFileError(f"{path}: owned by uid {st.st_uid}, not by this node's user "
                           f"({os.getuid()})")
    mode = st.st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{path}: mode {stat.filemode(mode)}: a secret key must be readable "
                        f"by its owner only (chmod 600 {path.name})")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as err:
        raise KeyFileError(f"{path}: not a key file ({err})") from None
    if not secret:
        raise KeyFileError(f"{path}: holds no secret key")
    return public, secret


def check_public_keys(public_keys: dict[str, str], names: Iterable[str]) -> None:
    """Every node has a key, no two share one, each is a CURVE public key (40 z85
    characters): else a node would fail at its first send, or misname a sender."""
    problems = []
    missing = sorted(set(names) - set(public_keys))
    if missing:
        problems.append(f"no public key for {', '.join(missing)} (peergrid keys add)")
    bad = sorted(n for n, k in public_keys.items()
                 if not isinstance(k, str) or len(k) != 40 or not _is_z85(k))
    if bad:
        problems.append(f"not a CURVE public key: {', '.join(bad)}")
    seen: dict[str, str] = {}
    for n, k in sorted(public_keys.items()):
        if k in seen:
            problems.append(f"{n} and {seen[k]} share one key")
        seen[k] = n
    if problems:
        raise KeyFileError("deploy.json security.public_keys: " + "; ".join(problems))


def _is_z85(text: str) -> bool:
    try:
        return len(z85.decode(text.encode("ascii"))) == 32
    except (ValueError, UnicodeEncodeError, KeyError, IndexError):
        return False


def node_keys(name: str, secret_file: Path, public_keys: dict[str, str],
              names: Iterable[str] = ()) -> NodeKeys:
    """``name``'s keys; ``names``: every node of the deployment (each must have a key)."""
    check_public_keys(public_keys, [*names, name])
    if not curve_available():
        raise KeyFileError("this libzmq was built without CURVE: install pyzmq's wheel "
                           "(it bundles libsodium) or deploy with --insecure")
    public, secret = read_secret(secret_file)
    listed = public_keys.get(name, "").encode("ascii")
    if listed != public:
        raise KeyFileError(f"{secret_file}: its public key is not {name!r}'s in deploy.json "
                        "(security.public_keys): the wrong file, or deploy.json is stale")
    return NodeKeys(name, public, secret, {n: k.encode("ascii") for n, k in public_keys.items()})


def curve_available() -> bool:
    return bool(zmq.has("curve"))


def add_public_keys(config: Path, files: Iterable[Path]) -> dict[str, str]:
    """Put the public keys of ``files`` (``NAME.key``, named by their file) into
    ``deploy.json``'s allow-list; what was added. Secret key files are refused: they
    never need to leave their host."""
    from dataclasses import replace

    from peergrid.comms.spec import DeploySpec, Security

    spec = DeploySpec.read(config)
    nodes = {"market", "grid", *spec.agents}
    added = {}
    for f in map(Path, files):
        if f.name.endswith(".key_secret"):
            raise KeyFileError(f"{f}: a secret key; copy only the public NAME.key files")
        name = f.name.removesuffix(".key")
        if name not in nodes:
            raise KeyFileError(f"{f}: {name!r} is not a node of {config}")
        added[name] = read_public(f)
    old = spec.security
    keys = {**(old.public_keys if old else {}), **added}
    spec = replace(spec, security=Security(keys, old.key_dir if old else KEY_DIR))
    spec.write(Path(config))
    return added
