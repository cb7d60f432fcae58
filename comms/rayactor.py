"""One node of a deployment inside its Ray actor (the driver: comms.raylaunch).

``NodeActor`` is a plain class until the driver applies ``ray.remote`` to it, so this
module imports no Ray at import time (the tests drive its update ordering without Ray).
An actor ``bind``\\ s its inbox and makes its key pair, is ``configure``\\ d with the
whole spec (and, when it keeps its files on its own machine, their seed and the
driver's store: comms.replica, comms.runstore), ``run``\\ s its node's loop, and takes
``update_peer`` calls for peers that moved while it serves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from peergrid.comms.keys import NodeKeys
from peergrid.comms.node import Node
from peergrid.comms.replica import Replica, node_tables
from peergrid.comms.spec import DeploySpec

UPDATE_WAIT_S = 10.0
"""How long the driver waits for the peers to take a moved node's new endpoint."""


class NodeActor:
    """One node of the deployment in its own Ray worker process (``ray.remote`` is
    applied by the driver, so importing this module needs no Ray)."""

    def __init__(self, role: str, name: str) -> None:
        self.role, self.name = role, name
        self.node: _RayNode | None = None
        self._cv = threading.Condition()
        self._pending: dict[str, tuple[int, str, bytes | None]] = {}
        """Peer -> (its incarnation, endpoint, public key) not yet applied by the loop."""
        self._known: dict[str, int] = {}
        """Peer -> the incarnation whose endpoint the loop has applied."""
        self._serving = False
        self._spec: DeploySpec | None = None
        self._local: Path | None = None
        """This machine's directory for the node's files, when it cannot see the run
        directory (comms.replica); None: it writes the run directory itself."""
        self._store: dict[str, Any] | None = None
        """The driver's store (comms.runstore): its endpoint and public key, and how
        much of this machine's node log it has (``log_from``)."""
        self._log_gen = ""

    def bind(self, spec_json: bytes, incarnation: int, secure: bool, files: str = "shared",
             token: str = "") -> dict[str, Any]:
        """Open this incarnation's inbox on this Ray node's address (a port the OS
        picks), with a key pair made here; its endpoint and public key, and where it
        keeps its files (``files``: ``shared``, ``gathered``, or ``auto``: shared if this
        machine sees the run directory, known by the driver's ``token`` in it)."""
        import ray
        import torch
        import zmq
        from peergrid.comms.runtime import open_node

        torch.set_num_threads(1)  # as the local nodes: fast, and the same floats
        if self.node is not None:  # a run that raised left its shell open
            with contextlib.suppress(Exception):
                self.node.close()
        with self._cv:  # a new shell: what it holds comes with ``configure``
            self.node, self._spec = None, None
            self._known.clear()
            self._pending.clear()
        spec = DeploySpec.from_json(spec_json)
        self._local = None
        if files == "gathered" or (files == "auto" and not _sees(Path(spec.out), token)):
            self._local = Path(tempfile.gettempdir()) / "peergrid-ray" / token / self.name
            self._log_gen = _fresh_but_the_log(self._local)
            spec = _relocated(spec, self._local)
        ip = ray.util.get_node_ip_address()
        host = f"[{ip}]" if ":" in ip else ip
        # the peers' endpoints are not known yet: nothing is sent before ``run``
        endpoints = {n: "tcp://0.0.0.0:0" for n in spec.endpoints}
        endpoints[self.name] = f"tcp://{host}:*"
        keys = None
        if secure:
            public, secret = zmq.curve_keypair()
            keys = NodeKeys(self.name, public, secret, {self.name: public})
        node = open_node(replace(spec, endpoints=endpoints, security=None), self.name,
                         keys=keys, node_type=_RayNode)
        node.updates = self._take_updates
        endpoint = node.inbox.getsockopt_string(zmq.LAST_ENDPOINT)
        node.endpoints[self.name] = endpoint
        self.node = node
        return {"endpoint": endpoint, "public_key": keys.public.decode() if keys else None,
                "pid": os.getpid(), "ip": ip, "ray_node": ray.get_runtime_context().get_node_id(),
                "incarnation": incarnation,
                "files": "shared" if self._local is None else "gathered",
                "local_dir": None if self._local is None else str(self._local),
                "log_gen": self._log_gen}

    def configure(self, spec_json: bytes, incarnations: dict[str, int],
                  seed: dict[str, bytes] | None = None,
                  store: dict[str, Any] | None = None) -> bool:
        """Take the complete spec: every peer's endpoint and key (the allow-list), before
        this node or any peer sends a thing (a connection from a key not yet on the list
        is refused at the handshake, and not tried again). ``incarnations``: whose
        endpoint it holds, per peer (an update queued for a later one wins). A node that
        keeps its files here: ``seed``, what it reads from the run directory
        (``replica.seed_files``), and ``store``, the endpoint and public key of the
        driver's store it copies them to (comms.runstore) and ``log_from``."""
        with self._cv:
            if self._serving:  # set_peers belongs to the node loop's thread then
                raise RuntimeError(f"{self.name}: configure while serving (update_peer moves "
                                   "a peer of a running node)")
            if self.node is None:
                raise RuntimeError(f"{self.name}: configure before bind")
            spec = DeploySpec.from_json(spec_json)
            if self._local is not None:
                spec = _relocated(spec, self._local)
                _write_files(self._local, seed or {})
                self._store = store
            keys = None
            if spec.security is not None:
                keys = {n: k.encode("ascii") for n, k in spec.security.public_keys.items()}
            endpoints = dict(spec.endpoints)
            for peer, k in self._known.items():  # a later incarnation was applied: kept
                if peer in endpoints and k > incarnations.get(peer, -1):
                    endpoints[peer] = self.node.endpoints[peer]
                    if keys is not None and self.node.keys is not None:
                        keys[peer] = self.node.keys.peers[peer]
            self.node.set_peers(endpoints, keys)
            for peer, k in incarnations.items():
                self._known[peer] = max(k, self._known.get(peer, -1))
            self._spec = spec
        return True

    def run(self, incarnation: int, finish: bool = False,
            seed: dict[str, bytes] | None = None) -> str:
        """Serve until the market says stop (or falls silent); why the loop ended
        (``stop``, ``market_silent``, ...: the node log's ``exit`` reason; ``finished``
        for a ``finish`` run). ``seed``: files to take first (a ``finish`` run's ledger,
        the market's final one)."""
        from peergrid.comms.nodes.grid import run_grid
        from peergrid.comms.nodes.market import run_market
        from peergrid.comms.nodes.prosumer import run_prosumer

        node, spec = self.node, self._spec
        if node is None or spec is None:
            raise RuntimeError(f"{self.name}: run before bind and configure")
        replica = push = None
        if self._local is not None:
            from peergrid.comms.runstore import client_for

            if self._store is None:
                raise RuntimeError(f"{self.name}: its files are on its machine but it was "
                                   "given no store to copy them to")
            _write_files(self._local, seed or {})
            push = client_for(self.name, incarnation, self._log_gen, self._store["endpoint"],
                              self._store["public_key"], node.keys)
            replica = Replica(self._local, self.name, node_tables(self.role, self.name), push,
                              ledger=self.role == "market", log_from=self._store["log_from"])
        reasons: list[str] = []
        event = node.log.event

        def noted(kind: str, **fields: Any) -> None:
            if kind == "exit":
                reasons.append(str(fields.get("reason") or "finished"))
            event(kind, **fields)

        node.log.event = noted  # type: ignore[method-assign]
        with self._cv:
            if self._pending:  # announced before configure: applied before any send
                self._apply()
            self._serving = True
        ended = False
        try:
            if self.role == "market":
                run_market(spec, incarnation, node=node, replica=replica)
            elif self.role == "grid":
                run_grid(spec, incarnation, node=node, replica=replica, finish=finish)
            else:
                run_prosumer(spec, self.name, incarnation, finish=finish, node=node,
                             replica=replica)
            ended = True
        finally:
            with self._cv:
                self._serving = False
                self._cv.notify_all()
            if replica is not None:  # the rest: the node log's last lines
                try:
                    if ended:
                        replica.sync()
                    elif push.broken is None:  # after a failed copy: nothing more
                        with contextlib.suppress(Exception):  # the run's own error wins
                            replica.sync()
                finally:
                    push.close()
        self.node, self._spec = None, None  # closed by its loop (one that raised: by ``bind``)
        return reasons[-1] if reasons else "finished"

    def update_peer(self, peer: str, incarnation: int, endpoint: str,
                    public_key: str | None) -> bool:
        """``peer`` restarted as ``incarnation`` at ``endpoint`` with ``public_key``: True
        once this node accepts the new key and sends to the new address. While a loop
        serves, it is queued for the loop's own thread (False if not taken within
        UPDATE_WAIT_S: still queued); otherwise applied here and now (the inbox is bound
        from ``bind`` on, so the key must be on its allow-list before the peer runs);
        before ``bind``, kept for the spec ``configure`` brings (the later one wins)."""
        key = public_key.encode("ascii") if public_key is not None else None
        with self._cv:
            if incarnation <= self._known.get(peer, -1):
                return True
            self._pending[peer] = (incarnation, endpoint, key)
            if not self._serving:
                if self.node is not None:
                    self._apply()
                return True
            deadline = time.monotonic() + UPDATE_WAIT_S
            while self._serving and peer in self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def discard(self) -> None:
        """Remove this machine's copy of the node's files (the run directory has them)."""
        if self._local is not None:
            shutil.rmtree(self._local, ignore_errors=True)
            with contextlib.suppress(OSError):
                self._local.parent.rmdir()

    def _take_updates(self) -> None:
        """Called by the node loop's own thread, before each receive."""
        with self._cv:
            if self._pending:
                self._apply()

    def _apply(self) -> None:
        """Apply the queued updates later than what the node holds (under ``_cv``, on
        the loop's thread or with no loop running)."""
        due = {p: u for p, u in self._pending.items() if u[0] > self._known.get(p, -1)}
        self._pending.clear()
        if due and self.node is not None:
            node = self.node
            keys = None
            if node.keys is not None:
                keys = {**node.keys.peers, **{p: u[2] for p, u in due.items()}}
            node.set_peers({**node.endpoints, **{p: u[1] for p, u in due.items()}}, keys)
            self._known.update({p: u[0] for p, u in due.items()})
        self._cv.notify_all()


FILES = ("auto", "shared", "gathered")
"""Where the actors write: ``shared``, the run directory itself (one machine, or a
shared mount at the same path on every node); ``gathered``, a directory of their own
machine, each checkpoint and the rows it covers copied to the run directory before the
messages it covers are sent (comms.replica); ``auto``, each actor the first if it sees
the run directory, else the second."""
RUN_MARKER = ".ray-run"
"""A file the driver writes into the run directory: an actor that reads the run's token
in it sees the run directory (``files="auto"``)."""


def _sees(out: Path, token: str) -> bool:
    """This machine sees the run directory, and may write it."""
    try:
        return (bool(token) and (out / RUN_MARKER).read_text() == token
                and os.access(out, os.W_OK))
    except OSError:
        return False


def _relocated(spec: DeploySpec, local: Path) -> DeploySpec:
    """``spec`` writing into ``local``: its run directory, and its policy files there."""
    out = Path(spec.out)
    prosumers = {}
    for a, p in spec.prosumers.items():
        if p.policy.file and Path(p.policy.file).is_relative_to(out):
            p = replace(p, policy=replace(
                p.policy, file=str(local / Path(p.policy.file).relative_to(out))))
        prosumers[a] = p
    return replace(spec, out=str(local), prosumers=prosumers)


def _fresh_but_the_log(local: Path) -> str:
    """Empty ``local`` for a new incarnation (``configure`` seeds it from the run
    directory) but for the node log, whose lines the run directory may still lack (a
    predecessor on this machine that died between two copies); the log copy's id."""
    gen_file = local / ".log-generation"
    if local.is_dir():
        for p in local.iterdir():
            if p.name not in ("nodes", gen_file.name):
                # a predecessor still exiting may remove its files meanwhile
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    local.mkdir(parents=True, exist_ok=True)
    if not gen_file.is_file():
        gen_file.write_text(uuid.uuid4().hex)
    return gen_file.read_text()


def _write_files(local: Path, files: dict[str, bytes]) -> None:
    root = local.resolve()
    for rel, data in files.items():
        path = (local / rel).resolve()
        if not path.is_relative_to(root) or path == root:
            raise ValueError(f"seed: {rel!r} is not a path inside the node's directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class _RayNode(Node):
    """A node whose peers may move while it runs: before each receive it applies what
    the driver has announced (the loop receives at least once a second)."""

    updates: Any = None

    def receive(self, timeout_s: float):
        if self.updates is not None:
            self.updates()
        return super().receive(timeout_s)


