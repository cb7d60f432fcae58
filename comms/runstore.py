"""The run directory's writer for nodes on other machines (comms.replica), over ZeroMQ.

The driver of a Ray deployment serves it from a thread (``StoreServer``): a ROUTER
socket on its machine's address, a CURVE server with a key pair of its own, which
accepts a connection only from a node's current public key (the driver replaces it
when the node restarts, so an old incarnation still alive behind a partition can no
longer write) and lets each node write its own files only: its record file, its
checkpoints, its node log and, for the market, the ledger. A node's ``StoreClient``
sends one request per checkpoint and waits for the answer, so what the store holds is
in the run directory before the node sends anything that checkpoint covers. Ray is not
on this path: it places and supervises the nodes, ZeroMQ carries their bytes.

A request: a JSON header ``{"name", "incarnation", "log_gen", "items": [[kind, relpath,
offset], ...]}`` and one frame per item with its bytes; the answer ``ok`` or
``refused: why``. Only the node's current incarnation (``allow``) may write, with
``--insecure`` too (where the name and the incarnation are only what the request says).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import IO, Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from peergrid.comms.replica import LEDGER, Item, checkpoint_files, node_tables, seed_files

ZAP_DOMAIN = "peergrid-store"
STORE_WAIT_S = 60.0
"""How long a node waits for the store's answer before it gives up (and dies: a node
that cannot keep its checkpoint must not send what it covers; it is restarted)."""
MAX_REQUEST_BYTES = 1 << 30


class Refused(ValueError):
    """A request the store does not write, with a reason code (counted per code)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


class StoreUnreachable(RuntimeError):
    """The run directory's store did not answer a node's copy in time, or refused it."""


def _check_relpath(rel: str) -> Path:
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"replica: {rel!r} is not a path inside the run directory")
    return p


class RunStore:
    """Writes items into a run directory (see comms.replica for the three kinds). Files
    stay open between requests (a round brings a few per node: an open, a rename and a
    close each would cost more than the bytes); a checkpoint file is rewritten in place,
    as its node writes it (its CRC tells a whole one from one cut short)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self._logs: dict[tuple[str, str], int] = {}
        """(node log, the machine's copy it comes from) -> bytes of that copy written."""
        self._files: dict[str, IO[bytes]] = {}

    def log_end(self, rel: str, log_gen: str) -> int:
        """How much of the node log copy ``log_gen`` the run directory has."""
        return self._logs.get((rel, log_gen), 0)

    def _file(self, rel: str) -> IO[bytes]:
        f = self._files.get(rel)
        if f is None:
            path = self.out / _check_relpath(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._files[rel] = open(path, "r+b" if path.is_file() else "w+b")  # noqa: SIM115
        return f

    def put(self, items: list[Item], log_gen: str = "") -> int:
        """Write ``items`` (``log_gen``: which machine's copy the log lines come from);
        the bytes written."""
        written = 0
        for kind, rel, start, data in items:
            if kind == "whole" and rel == LEDGER:  # read whole by others: replaced whole
                path = self.out / _check_relpath(rel)
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
                written += len(data)
                continue
            if kind not in ("at", "whole", "log"):
                raise ValueError(f"replica: unknown kind {kind!r} for {rel}")
            f = self._file(rel)
            size = os.fstat(f.fileno()).st_size  # its node may have written it itself
            if kind == "at":
                if start > size:  # rows the run directory never had: refused, not padded
                    raise Refused("past end", f"{rel}: rows from byte {start}, but it has {size}")
            elif kind == "whole":
                start = 0
            else:
                end = self.log_end(rel, log_gen)
                self._logs[(rel, log_gen)] = max(end, start + len(data))
                data = data[max(end - start, 0):]  # what it has already: not again
                start = size
            f.seek(start)
            f.write(data)
            if kind != "log" and start + len(data) < size:
                f.truncate()
            f.flush()
            written += len(data)
        return written

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def own_files(role: str, name: str) -> frozenset[str]:
    """What a node may write through the store: its own files only."""
    own = {*node_tables(role, name), *checkpoint_files(name), f"nodes/{name}.jsonl"}
    if role == "market":
        own.add(LEDGER)
    return frozenset(own)


class _Auth(ThreadAuthenticator):
    """ZAP for the store: a connection only from a node's current key, named by it."""

    def __init__(self, ctx: zmq.Context, keys: dict[bytes, str]) -> None:
        super().__init__(ctx)
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys

    def curve_user_id(self, client_public_key: bytes) -> str:  # once per connection
        key = z85.encode(client_public_key)
        return f"{self.keys.get(key, '')} {key.decode('ascii')}"


class StoreServer:
    """The store, served from a thread of the driver: ``endpoint`` and ``public_key``
    go to the nodes (``configure``), ``allow`` names each node's current key."""

    def __init__(self, out: Path, host: str, roles: dict[str, str], secure: bool) -> None:
        self.store, self.roles = RunStore(out), dict(roles)
        self.out = Path(out)
        self.ctx = zmq.Context()  # its own: one ZAP handler per context
        self._keys: dict[bytes, str] = {}  # current public key (z85) -> node
        self._incarnation: dict[str, int] = {}  # node -> the one that may write
        self._locks = {n: threading.Lock() for n in roles}
        self.refused: Counter[str] = Counter()
        self.first_refusals: list[str] = []
        self.requests = 0
        self.auth: _Auth | None = None
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        self.public_key: str | None = None
        if secure:
            public, secret = zmq.curve_keypair()
            self.auth = _Auth(self.ctx, self._keys)
            self.auth.start()
            self.auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self.auth)
            self.sock.curve_server = True
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
            self.sock.zap_domain = ZAP_DOMAIN.encode()
            self.public_key = public.decode("ascii")
        self.sock.bind(f"tcp://{host}:*")
        self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="peergrid-store",
                                        daemon=True)
        self._thread.start()

    def allow(self, name: str, incarnation: int, public_key: str | None) -> None:
        """``name`` is now ``incarnation``, with ``public_key``: an older incarnation may
        no longer write (nor its key connect; a connection it opened stays open, but its
        requests are refused), whatever it still has in flight."""
        with self._locks[name]:
            self._incarnation[name] = incarnation
            if public_key is None:
                return
            for k, n in list(self._keys.items()):
                if n == name:
                    self._keys.pop(k, None)
            self._keys[public_key.encode("ascii")] = name

    def seed(self, role: str, name: str, log_gen: str) -> tuple[dict[str, bytes], int]:
        """``replica.seed_files``, never in the middle of one of ``name``'s writes, and
        how much of its machine's node log copy ``log_gen`` the run directory has."""
        with self._locks[name]:
            return (seed_files(self.out, role, name),
                    self.store.log_end(f"nodes/{name}.jsonl", log_gen))

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(200):
                continue
            try:
                frames = self.sock.recv_multipart(copy=False)
            except zmq.ZMQError:
                continue
            answer = self._handle(frames)
            try:
                self.sock.send_multipart([frames[0].bytes, answer.encode()])
            except zmq.ZMQError:
                pass  # its connection is gone: the node is too

    def _handle(self, frames: list[Any]) -> str:
        self.requests += 1
        try:
            if len(frames) < 2:
                raise Refused("malformed", "no header")
            header = json.loads(frames[1].bytes)
            claimed = str(header.get("name", ""))
            if self.auth is not None:  # the key that opened the connection, if still its
                name, _, key = frames[1].get("User-Id").partition(" ")
                if self._keys.get(key.encode("ascii")) != name or name != claimed:
                    raise Refused("stale key", f"a request for {claimed[:40]!r} on a connection of "
                                     f"{name!r}'s key, which is not (or no longer) its own")
            name = claimed
            if name not in self.roles:
                raise Refused("unknown node", f"{name[:40]!r} is not a node of this deployment")
            incarnation, log_gen = header.get("incarnation"), str(header.get("log_gen", ""))
            specs, data = header["items"], frames[2:]
            if not isinstance(specs, list) or len(specs) != len(data):
                raise Refused("malformed", "items and data frames do not match")
            own = own_files(self.roles[name], name)
            items: list[Item] = []
            for spec, frame in zip(specs, data, strict=True):
                kind, rel, start = spec
                if rel not in own:
                    raise Refused("not its file", f"{name} may not write {str(rel)[:80]!r}")
                if kind not in ("at", "whole", "log") or not isinstance(start, int) \
                        or start < 0:
                    raise Refused("malformed", f"bad item {str(spec)[:80]}")
                items.append((kind, rel, start, frame.bytes))
            with self._locks[name]:
                if incarnation != self._incarnation.get(name):
                    raise Refused("stale incarnation", f"{name}'s incarnation {str(incarnation)[:20]} is not "
                                     f"its current one ({self._incarnation.get(name)})")
                self.store.put(items, log_gen)
            return "ok"
        except Exception as err:  # whatever arrives: refused, counted, the store serves on
            why = (str(err) if isinstance(err, Refused) else f"{type(err).__name__}: {err}")[:300]
            self.refused[err.code if isinstance(err, Refused) else "malformed"] += 1
            if len(self.first_refusals) < 5:
                self.first_refusals.append(why)
            return f"refused: {why}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join()  # it wakes every 0.2 s: the socket is its own until then
        self.sock.close(0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
        self.store.close()


class StoreClient:
    """A node's side: ``__call__(items)`` returns once the store has written them."""

    def __init__(self, name: str, incarnation: int, log_gen: str, endpoint: str,
                 server_key: str | None, public: bytes | None = None,
                 secret: bytes | None = None, wait_s: float = STORE_WAIT_S) -> None:
        self.name, self.wait_s = name, wait_s
        self.incarnation, self.log_gen = incarnation, log_gen
        self.broken: StoreUnreachable | None = None
        """The failure after which this client sends nothing more (an answer to the
        request it gave up on could be taken for the next one's)."""
        self.ctx = zmq.Context()  # its own: the node's context serves its inbox's ZAP
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if server_key is not None:
            if public is None or secret is None:
                raise ValueError("a CURVE store needs the node's key pair")
            self.sock.curve_serverkey = server_key.encode("ascii")
            self.sock.curve_publickey, self.sock.curve_secretkey = public, secret
        self.sock.connect(endpoint)

    def __call__(self, items: list[Item]) -> None:
        if self.broken is not None:
            raise self.broken
        header = json.dumps({"name": self.name, "incarnation": self.incarnation,
                             "log_gen": self.log_gen,
                             "items": [[k, rel, start] for k, rel, start, _ in items]})
        self.sock.send_multipart([header.encode(), *(data for *_, data in items)])
        if not self.sock.poll(int(self.wait_s * 1000)):
            self.broken = StoreUnreachable(f"{self.name}: the run directory's store did not "
                                           f"answer within {self.wait_s:.0f} s")
            raise self.broken
        answer = self.sock.recv().decode("utf-8", "replace")
        if answer != "ok":
            self.broken = StoreUnreachable(f"{self.name}: the run directory's store {answer}")
            raise self.broken

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def client_for(name: str, incarnation: int, log_gen: str, endpoint: str,
               server_key: str | None, keys: Any) -> StoreClient:
    """A node's push function (``keys``: its ``NodeKeys``, or None with --insecure)."""
    if keys is None:
        return StoreClient(name, incarnation, log_gen, endpoint, None)
    return StoreClient(name, incarnation, log_gen, endpoint, server_key, keys.public,
                       keys.secret)
