"""Every node of a deployment as a Ray actor (``peergrid deploy --engine ray``).

Ray places, starts and restarts the nodes; ZeroMQ still carries every message between
them, CURVE on every link. The market, the grid and each prosumer is one actor (its own
worker process), spread over the cluster's nodes by a placement group (one bundle per
node process, strategy SPREAD: as even as the cluster allows, several per Ray node when
it must).

Start-up, with no endpoint file:

1. ``bind``: each actor makes its own CURVE key pair in memory (the secret never leaves
   its process: not written, not returned, not in Ray's object store), binds its inbox on
   its Ray node's address at a port the OS picks, and returns the endpoint and the
   public key;
2. the driver completes the spec (every endpoint, every public key: the allow-list),
   writes it to ``deploy.json`` (the record of what ran) and hands it to every actor
   with ``run``; each opens its links from it before it sends anything. The market,
   last, waits for every node's ``hello`` as in a local deployment.

Restarts, with the local supervisor's semantics: an actor whose process dies (killed, or
its Ray node removed) is restarted by Ray (``max_restarts``: the scenario's restart
budget, plus one for an injected crash that is to come back), in its bundle, which Ray
moves to a live node when its node is gone. The driver then calls ``bind`` on it (a new
incarnation, a new key pair, perhaps a new address), tells every running peer the new
endpoint and key (``update_peer``: applied by the peer's own node loop, which closes its
old connection; the driver waits until they have, so the new incarnation's ``hello`` is
accepted) and only then ``run``\\ s it, with the incarnation number: it resumes from its
checkpoint, cuts its record files back to it, and books the rounds it missed as down,
exactly as ``comms.launcher`` restarts a process. An injected crash is restarted once
the market has cleared the round before ``restart_round``; an agent still down when the
market ends is run once more with ``finish`` to book its remaining rounds.

Who may move a peer: only the driver, through Ray's control plane (which already
decides what code every actor runs: whoever can call an actor's methods can run code on
the cluster, so it is trusted as far as the processes themselves are). No ZeroMQ
message changes an endpoint or a key, and a moved endpoint still has to present the key
the driver announced, so a wrong address is at worst a lost peer, never an impostor.

Files: every actor writes the run directory at the path the driver gave it, so the run
directory must be one file system seen by every node at that path (one machine, or a
shared mount on a cluster: docs/deploy.md). A checkpoint is only worth something if it
survives its node: a restart on another node resumes from it.

Ray is an optional dependency (``pip install 'peergrid[cluster]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from peergrid.comms.keys import NodeKeys, check_public_keys
from peergrid.comms.launcher import count_rows, finish_status
from peergrid.comms.node import Node, NodeLog
from peergrid.comms.spec import DeploySpec, Security

PROCESS_CPUS = 0.01
"""Ray's logical CPUs reserved per node process (market, grid, each prosumer): what one
uses on average. A rule prosumer computes about 1 ms of a round that the market's clock
stretches to 20-160 ms (bench/deploy.py, 13-64 prosumers on 2 cores): a few per cent of
a core, and a learning one a burst at each day's end. 0.01 lets 128 prosumers and the
two operators (1.3) fit on one 2-CPU node. It is a reservation, not a limit (Ray caps no
process's CPU), so it decides how many fit; and as SPREAD puts each bundle on the node
with the smallest share reserved, one equal share for every process spreads the counts
evenly (a larger share for the operators would pile the prosumers elsewhere)."""
UPDATE_WAIT_S = 10.0
"""How long the driver waits for the peers to take a moved node's new endpoint."""
BIND_WAIT_S = 300.0
"""How long an actor may take to start (a worker process importing torch and pandapower;
on a restart, Ray first has to notice the loss and move the bundle)."""


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

    def bind(self, spec_json: bytes, incarnation: int, secure: bool) -> dict[str, Any]:
        """Open this incarnation's inbox on this Ray node's address (a port the OS
        picks), with a key pair made here; its endpoint and public key."""
        import ray
        import torch
        import zmq
        from peergrid.comms.runtime import open_node

        torch.set_num_threads(1)  # as the local nodes: fast, and the same floats
        if self.node is not None:  # a run that raised left its shell open
            with contextlib.suppress(Exception):
                self.node.close()
        spec = DeploySpec.from_json(spec_json)
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
                "incarnation": incarnation}

    def configure(self, spec_json: bytes, incarnations: dict[str, int]) -> bool:
        """Take the complete spec: every peer's endpoint and key (the allow-list), before
        this node or any peer sends a thing (a connection from a key not yet on the list
        is refused at the handshake, and not tried again). ``incarnations``: whose
        endpoint it holds, per peer (an update queued for a later one wins)."""
        spec = DeploySpec.from_json(spec_json)
        if self.node is None:
            raise RuntimeError(f"{self.name}: configure before bind")
        keys = None
        if spec.security is not None:
            keys = {n: k.encode("ascii") for n, k in spec.security.public_keys.items()}
        with self._cv:
            self.node.set_peers(spec.endpoints, keys)
            self._known.update(incarnations)
            self._spec = spec
        return True

    def run(self, incarnation: int, finish: bool = False) -> int:
        """Serve until the market says stop (or falls silent); 0."""
        from peergrid.comms.nodes.grid import run_grid
        from peergrid.comms.nodes.market import run_market
        from peergrid.comms.nodes.prosumer import run_prosumer

        node, spec = self.node, self._spec
        if node is None or spec is None:
            raise RuntimeError(f"{self.name}: run before bind and configure")
        with self._cv:
            self._serving = True
        try:
            if self.role == "market":
                run_market(spec, incarnation, node=node)
            elif self.role == "grid":
                run_grid(spec, incarnation, node=node)
            else:
                run_prosumer(spec, self.name, incarnation, finish=finish, node=node)
        finally:
            with self._cv:
                self._serving = False
                self._cv.notify_all()
        self.node, self._spec = None, None  # closed by its loop (one that raised: by ``bind``)
        return 0

    def update_peer(self, peer: str, incarnation: int, endpoint: str,
                    public_key: str | None) -> bool:
        """``peer`` restarted as ``incarnation`` at ``endpoint`` with ``public_key``:
        queued for this node's loop; True once the loop has applied it (or when no loop
        runs yet: ``run`` applies it)."""
        key = public_key.encode("ascii") if public_key is not None else None
        with self._cv:
            if incarnation <= self._known.get(peer, -1):
                return True
            self._pending[peer] = (incarnation, endpoint, key)
            deadline = time.monotonic() + UPDATE_WAIT_S
            while self._serving and peer in self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
            return True

    def _take_updates(self) -> None:
        """Called by the node loop's own thread, before each receive."""
        with self._cv:
            if not self._pending:
                return
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


class _RayNode(Node):
    """A node whose peers may move while it runs: before each receive it applies what
    the driver has announced (the loop receives at least once a second)."""

    updates: Any = None

    def receive(self, timeout_s: float):
        if self.updates is not None:
            self.updates()
        return super().receive(timeout_s)


def launch_on_ray(spec: DeploySpec, address: str | None = None, secure: bool = True,
                  timeout_s: float = 3600.0) -> dict[str, int]:
    """Run a deployment to its end on Ray, supervising its nodes as
    ``comms.launcher.launch`` does; each incarnation's exit code (``name#i`` for one that
    died: -1 for a process Ray lost, 1 for a node that raised). ``address=None`` starts a
    local Ray instance (stopped at the end); an address joins that cluster; a Ray already
    initialised in this process is used as it is. ``secure``: CURVE on every link, each
    actor with a key pair of its own (``spec.security`` is filled in here)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    out = Path(spec.out).absolute()  # the actors do not share the driver's directory
    spec = replace(spec, out=str(out), security=None)
    names = ["market", "grid", *spec.agents]
    role = {"market": "market", "grid": "grid", **{a: "prosumer" for a in spec.agents}}
    n_rounds = spec.window.n_rounds
    scheduled = {k.agent: k for k in spec.kills}
    log = NodeLog(out / "nodes" / "launcher.jsonl")
    log.event("engine", engine="ray", address=address or "local")
    if not secure:
        warning = ("links are plain TCP (--insecure): no authentication, no encryption; "
                   "anyone who reaches the ports can speak for any node")
        print(f"WARNING: {warning}", file=sys.stderr)
        log.event("insecure", warning=warning)
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:
            ray.init(address="local", include_dashboard=False, logging_level=logging.ERROR)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    cpus = dict.fromkeys(names, PROCESS_CPUS)
    pg = placement_group([{"CPU": cpus[n]} for n in names], strategy="SPREAD")
    actors: dict[str, Any] = {}
    status = {"complete": False, "rounds": n_rounds, "rounds_done": 0, "reason": "interrupted"}
    exits: dict[str, int] = {}
    try:
        try:
            ray.get(pg.ready(), timeout=BIND_WAIT_S)
        except ray.exceptions.GetTimeoutError:
            raise RuntimeError(
                f"the Ray cluster cannot place {len(names)} node processes "
                f"({sum(cpus.values()):.2f} CPUs): add nodes or CPUs") from None
        remote = ray.remote(NodeActor)
        budget = spec.timing.restart_budget
        for i, n in enumerate(names):
            extra = 1 if n in scheduled and scheduled[n].restart_round is not None else 0
            actors[n] = remote.options(
                num_cpus=cpus[n], max_restarts=budget + extra + 1, max_task_retries=0,
                max_concurrency=4,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=i)).remote(role[n], n)
        base = spec.to_json()
        bound = dict(zip(names, ray.get([actors[n].bind.remote(base, 0, secure) for n in names],
                                        timeout=BIND_WAIT_S), strict=True))
        endpoints = {n: bound[n]["endpoint"] for n in names}
        public = {n: bound[n]["public_key"] for n in names} if secure else None
        incarnation = dict.fromkeys(names, 0)
        for n in names:
            log.event("started", node=n, incarnation=0, pid=bound[n]["pid"],
                      endpoint=endpoints[n], ray_node=bound[n]["ray_node"])

        def current() -> DeploySpec:
            security = None
            if public is not None:
                check_public_keys(public, names)
                security = Security(dict(public), "")
            return replace(spec, endpoints=dict(endpoints), security=security)

        def record(final: DeploySpec) -> bytes:
            final.write(out / "deploy.json")
            return final.to_json()

        running: dict[Any, str] = {}
        final = record(current())
        # every node holds the whole spec before any sends: then they run
        ray.get([actors[n].configure.remote(final, dict(incarnation)) for n in names],
                timeout=BIND_WAIT_S)
        for n in ["grid", *spec.agents, "market"]:  # the market last: it starts the clock
            running[actors[n].run.remote(0)] = n
        restarts: dict[str, int] = {}
        waiting: set[str] = set()  # crashed on purpose, back at their restart round
        down: set[str] = set()  # dead for good (or until the run's end)

        def restart(n: str, finish: bool = False) -> bool:
            """A new incarnation of ``n``: bound, announced to its peers, run."""
            k = incarnation[n] + 1
            give_up_at = time.monotonic() + BIND_WAIT_S
            while True:  # Ray restarts the process (on another node if its node is gone)
                try:
                    info = ray.get(actors[n].bind.remote(base, k, secure), timeout=BIND_WAIT_S)
                    break
                except ray.exceptions.ActorUnavailableError as err:
                    if time.monotonic() < give_up_at:
                        time.sleep(0.2)
                        continue
                    why = err
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                    why = err
                log.event("gave_up", node=n, reason=f"{type(why).__name__}: {str(why)[:300]}")
                down.add(n)
                return False
            incarnation[n] = k
            endpoints[n] = info["endpoint"]
            if public is not None:
                public[n] = info["public_key"]
            log.event("started", node=n, incarnation=k, pid=info["pid"], endpoint=info["endpoint"],
                      ray_node=info["ray_node"], finish=finish)
            final = record(current())
            try:  # itself first: its peers connect as soon as they are told
                ray.get(actors[n].configure.remote(final, dict(incarnation)),
                        timeout=BIND_WAIT_S)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as err:
                log.event("gave_up", node=n, reason=f"{type(err).__name__}: {str(err)[:300]}")
                down.add(n)
                return False
            peers = [p for p in running.values() if p != n]
            refs = [actors[p].update_peer.remote(n, k, info["endpoint"], info["public_key"])
                    for p in peers]
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=UPDATE_WAIT_S)
            applied = 0
            for ref in ready:
                with contextlib.suppress(ray.exceptions.RayError):
                    applied += bool(ray.get(ref))
            log.event("moved", node=n, incarnation=k, endpoint=info["endpoint"],
                      peers_told=applied, peers=len(peers))
            running[actors[n].run.remote(k, finish)] = n
            return True

        def rounds_done() -> int:
            return count_rows(out / "market.jsonl")

        deadline = time.monotonic() + timeout_s
        market_done = False
        while not market_done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment did not finish within {timeout_s:.0f} s")
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.2)
            for ref in ready:
                n = running.pop(ref)
                try:
                    exits[n] = ray.get(ref)
                    if n == "market":
                        market_done = True
                    continue
                except ray.exceptions.RayActorError as err:
                    code, why = -1, f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                except ray.exceptions.RayTaskError as err:
                    code, why = 1, f"{type(err.cause).__name__}: {str(err.cause)[:300]}"
                exits[f"{n}#{incarnation[n]}"] = code
                log.event("died", node=n, incarnation=incarnation[n], exit_code=code,
                          reason=why, rounds_done=rounds_done())
                k = scheduled.get(n)
                if k is not None and incarnation[n] == 0 and rounds_done() >= k.at_round:
                    (waiting if k.restart_round is not None else down).add(n)
                    continue
                restarts[n] = restarts.get(n, 0) + 1
                if restarts[n] > budget:
                    log.event("gave_up", node=n, restarts=restarts[n] - 1)
                    down.add(n)
                    if n == "market":
                        market_done = True
                    continue
                if not restart(n) and n == "market":
                    market_done = True
            for n in sorted(waiting):
                if rounds_done() >= scheduled[n].restart_round:
                    waiting.discard(n)
                    restart(n)
        status["rounds_done"] = rounds_done()
        if exits.get("market") != 0:
            status["reason"] = "market could not be restarted"
        else:
            status["reason"] = "finished"
            # the market sent everyone "stop": give them a shared grace period
            ready, _ = ray.wait(list(running), num_returns=len(running), timeout=10.0)
            for ref in ready:
                n = running.pop(ref)
                try:
                    exits[n] = ray.get(ref)
                except ray.exceptions.RayError:
                    exits[f"{n}#{incarnation[n]}"] = -1
                    down.add(n)
            # agents down at the end book their remaining rounds from their checkpoint
            # and the market's ledger
            for n in sorted(down | waiting):
                if role[n] != "prosumer":
                    continue
                if restart(n, finish=True):
                    ref = next(r for r, m in running.items() if m == n)
                    try:
                        exits[n] = ray.get(ref, timeout=60)
                    except ray.exceptions.RayError as err:
                        exits[f"{n}#{incarnation[n]}"] = -1
                        log.event("died", node=n, incarnation=incarnation[n], exit_code=-1,
                                  reason=str(err).splitlines()[0][:300])
                    running.pop(ref, None)
    finally:
        for a in actors.values():
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)
        with contextlib.suppress(Exception):
            remove_placement_group(pg)
        if started_here:
            ray.shutdown()
        finish_status(status, spec, count_rows(out / "market.jsonl"))
        log.event("end", **status)
        log.close()
    (out / "exit_codes.json").write_text(json.dumps(exits, indent=2))
    return exits
