"""Every node of a deployment as a Ray actor (``peergrid deploy --engine ray``): the
driver, which starts and supervises them (the actors' side: comms.rayactor).

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
budget, plus one for an injected crash that is to come back, plus one to book an agent
down at the end), in its bundle, which Ray moves to a live node when its node is gone.
The driver then calls ``bind`` on it (a new incarnation, a new key pair, perhaps a new
address), ``configure``\\ s it, tells every peer that holds a spec the new endpoint and
key (``update_peer``: applied by a serving peer's own node loop, which closes its old
connection, at once by one not serving) and only then ``run``\\ s it, with the
incarnation number: it resumes from its checkpoint, cuts its record files back to it,
and books the rounds it missed as down, exactly as ``comms.launcher`` restarts a
process. Each of these steps is a call the supervision loop polls with the running
nodes, so any number of restarts proceed together and none holds up the noticing of
another death. A process that dies between ``bind`` and ``run`` is bound again while its
budget lasts. A peer whose loop has not applied the update within ``UPDATE_WAIT_S`` is
asked again, until it has or is no longer running, for at most ``BIND_WAIT_S``; the
node then runs anyway and ``moved`` names the peers that ``missed`` it. A node that
exits because its market fell silent (``idle_exit_ms``: the market's Ray node lost and
not yet back) is started again too, as a new incarnation, at no cost to its budget;
while the market is being restarted, the others' new incarnations run only once it
does (their ``hello`` must reach its new address). An
injected crash is restarted once the market has cleared the round before
``restart_round``. When the market ends, a restart under way ends in a ``finish`` run;
after a shared grace of 10 s an incarnation still running is stopped (Ray restarts its
process); and every agent or grid down at the end, or that did not exit on the
market's ``stop``, is run once more with ``finish`` to book its remaining rounds: every
(episode, round, agent) once, and a grid row for every round.

Who may move a peer: only the driver, through Ray's control plane (which already
decides what code every actor runs: whoever can call an actor's methods can run code on
the cluster, so it is trusted as far as the processes themselves are). No ZeroMQ
message changes an endpoint or a key, and a moved endpoint still has to present the key
the driver announced, so a wrong address is at worst a lost peer, never an impostor.

Files (``FILES``): an actor that sees the driver's run directory (one machine, or a
shared mount at the same path) writes it; one that does not writes a directory of its
own machine, seeded from the run directory when it starts, and copies every checkpoint
with the rows it counts to the run directory (over ZeroMQ, CURVE, to a store the driver
serves from a thread: comms.runstore) before it sends what the checkpoint covers
(comms.replica). Either way the run directory ends with every record and node log, and
a checkpoint survives its node: a restart on another node resumes from it.

Ray is an optional dependency (``pip install 'peergrid[cluster]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from peergrid.comms.keys import check_public_keys
from peergrid.comms.launcher import count_rows, finish_status
from peergrid.comms.node import NodeLog
from peergrid.comms.rayactor import FILES, RUN_MARKER, NodeActor
from peergrid.comms.replica import LEDGER
from peergrid.comms.spec import DeploySpec, Security

__all__ = ["FILES", "NodeActor", "launch_on_ray"]

PROCESS_CPUS = 0.01
"""Ray's logical CPUs reserved per node process (market, grid, each prosumer): what one
uses on average. A rule prosumer computes about 1 ms of a round that the market's clock
stretches to 20-160 ms (bench/deploy.py, 13-64 prosumers on 2 cores): a few per cent of
a core, and a learning one a burst at each day's end. 0.01 lets 128 prosumers and the
two operators (1.3) fit on one 2-CPU node. It is a reservation, not a limit (Ray caps no
process's CPU), so it decides how many fit; and as SPREAD puts each bundle on the node
with the smallest share reserved, one equal share for every process spreads the counts
evenly (a larger share for the operators would pile the prosumers elsewhere)."""
BIND_WAIT_S = 300.0
"""How long an actor may take to start (a worker process importing torch and pandapower;
on a restart, Ray first has to notice the loss and move the bundle)."""


class _Restart:
    """One node being brought back: ``bind``, ``configure``, peers told (``update_peer``),
    ``run``. Each step is a Ray call the supervision loop polls, never waits for, so one
    slow restart holds up nothing else."""

    def __init__(self, name: str, k: int, finish: bool) -> None:
        now = time.monotonic()
        self.name, self.k, self.finish = name, k, finish
        self.stage = "bind"
        self.ref: Any = None
        self.not_before = now
        self.give_up_at = now + BIND_WAIT_S
        self.asked: dict[Any, str] = {}  # update_peer call -> peer
        self.told: set[str] = set()
        self.info: dict[str, Any] = {}


def _ready(ref: Any) -> bool:
    import ray

    done, _ = ray.wait([ref], num_returns=1, timeout=0)
    return bool(done)


def _why(err: BaseException) -> str:
    import ray

    if isinstance(err, ray.exceptions.RayTaskError):
        err = err.cause
    lines = str(err).splitlines() or [""]
    return f"{type(err).__name__}: {lines[0][:300]}"


def launch_on_ray(spec: DeploySpec, address: str | None = None, secure: bool = True,
                  timeout_s: float = 3600.0, files: str = "auto") -> dict[str, int]:
    """Run a deployment to its end on Ray, supervising its nodes as
    ``comms.launcher.launch`` does; each incarnation's exit code (``name#i`` for one that
    died or was replaced: -1 for a process Ray lost, 1 for a node that raised, 0 for one
    that exited because its market fell silent). ``address=None`` starts a local Ray
    instance (stopped at the end); an address joins that cluster; a Ray already
    initialised in this process is used as it is if ``address`` is None or names its
    cluster (``comms.raycluster.init_ray``). ``secure``: CURVE on every link, each
    actor with a key pair of its own (``spec.security`` is filled in here). ``files``:
    where the actors write (``FILES``)."""
    import ray
    from peergrid.comms.raycluster import init_ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    if files not in FILES:
        raise ValueError(f"files = {files!r}: one of {', '.join(FILES)}")

    errors = ray.exceptions
    out = Path(spec.out).absolute()  # the actors do not share the driver's directory
    # every path absolute: the actors do not share the driver's working directory
    spec = replace(spec, out=str(out), security=None, prosumers={
        a: replace(p, policy=replace(p.policy, file=str(Path(p.policy.file).absolute())))
        if p.policy.file else p for a, p in spec.prosumers.items()})
    names = ["market", "grid", *spec.agents]
    role = {"market": "market", "grid": "grid", **{a: "prosumer" for a in spec.agents}}
    n_rounds = spec.window.n_rounds
    scheduled = {k.agent: k for k in spec.kills}
    log = NodeLog(out / "nodes" / "launcher.jsonl")
    log.event("engine", engine="ray", address=address or "local", files=files)
    token = uuid.uuid4().hex
    (out / RUN_MARKER).write_text(token)
    if not secure:
        warning = ("links are plain TCP (--insecure): no authentication, no encryption; "
                   "anyone who reaches the ports can speak for any node")
        print(f"WARNING: {warning}", file=sys.stderr)
        log.event("insecure", warning=warning)
    started_here = False
    pg = None
    actors: dict[str, Any] = {}
    server: Any = None  # the run directory's store for actors on other machines
    gathered: dict[str, bool] = {}  # node -> its files on its own machine (replicated)
    log_gen: dict[str, str] = {}  # node -> the id of its machine's node log copy
    status = {"complete": False, "rounds": n_rounds, "rounds_done": 0, "reason": "interrupted"}
    exits: dict[str, int] = {}
    try:
        started_here = init_ray(address)
        if files != "shared":  # on the driver's machine, for actors that cannot see it
            from peergrid.comms.runstore import StoreServer

            ip = ray.util.get_node_ip_address()
            server = StoreServer(out, f"[{ip}]" if ":" in ip else ip, role, secure)
        cpus = dict.fromkeys(names, PROCESS_CPUS)
        pg = placement_group([{"CPU": cpus[n]} for n in names], strategy="SPREAD")
        try:
            ray.get(pg.ready(), timeout=BIND_WAIT_S)
        except errors.GetTimeoutError:
            raise RuntimeError(
                f"the Ray cluster cannot place {len(names)} node processes "
                f"({sum(cpus.values()):.2f} CPUs): add nodes or CPUs") from None
        remote = ray.remote(NodeActor)
        budget = spec.timing.restart_budget
        for i, n in enumerate(names):
            extra = 1 if n in scheduled and scheduled[n].restart_round is not None else 0
            actors[n] = remote.options(
                num_cpus=cpus[n], max_restarts=budget + extra + 1, max_task_retries=0,
                max_concurrency=16,  # run, and update_peer calls for several moved peers
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    pg, placement_group_bundle_index=i)).remote(role[n], n)
        base = spec.to_json()
        incarnation = dict.fromkeys(names, 0)
        endpoints: dict[str, str] = {}
        public: dict[str, str] | None = {} if secure else None
        restarts: dict[str, int] = {}

        def current() -> DeploySpec:
            security = None
            if public is not None:
                check_public_keys(public, names)
                security = Security(dict(public), "")
            return replace(spec, endpoints=dict(endpoints), security=security)

        def record(final: DeploySpec) -> bytes:
            final.write(out / "deploy.json")
            return final.to_json()

        def spend(n: str, why: str) -> bool:
            """``n``'s process died (again): False once its restart budget is spent."""
            restarts[n] = restarts.get(n, 0) + 1
            if restarts[n] > budget:
                log.event("gave_up", node=n, restarts=restarts[n] - 1, reason=why)
                return False
            return True

        def took(n: str, k: int, info: dict[str, Any], finish: bool = False) -> None:
            endpoints[n] = info["endpoint"]
            if public is not None:
                public[n] = info["public_key"]
            gathered[n] = info["files"] == "gathered"
            log_gen[n] = info["log_gen"]
            if server is not None:  # the old incarnation and key may no longer write
                server.allow(n, k, info["public_key"])
            log.event("started", node=n, incarnation=k, pid=info["pid"],
                      endpoint=info["endpoint"], ray_node=info["ray_node"], finish=finish,
                      files=info["files"], **({"local_dir": info["local_dir"]}
                                              if info["local_dir"] else {}))

        def files_of(n: str) -> tuple[dict[str, bytes] | None, dict[str, Any] | None]:
            """``configure``'s seed and store for ``n``: what it reads from the run
            directory, if it keeps its files on its machine."""
            if not gathered.get(n):
                return None, None
            seed, log_from = server.seed(role[n], n, log_gen[n])
            return seed, {"endpoint": server.endpoint, "public_key": server.public_key,
                          "log_from": log_from}

        def finish_seed(n: str, finish: bool) -> dict[str, bytes] | None:
            """A ``finish`` run on its own machine reads the market's final ledger."""
            if finish and gathered.get(n) and (out / LEDGER).is_file():
                return {LEDGER: (out / LEDGER).read_bytes()}
            return None

        # start-up: every node bound, then every node holds the whole spec; one that dies
        # on the way is bound again (its restart budget permitting), and all configured
        # again with its new endpoint
        unbound = list(names)
        start_by = time.monotonic() + BIND_WAIT_S
        while unbound:
            if time.monotonic() > start_by:
                raise RuntimeError(f"{', '.join(unbound)} did not start within "
                                   f"{BIND_WAIT_S:.0f} s")
            calls = {actors[n].bind.remote(base, 0, secure, files, token): n for n in unbound}
            left = max(start_by - time.monotonic(), 0.0)
            ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=left)
            if len(ready) < len(calls):
                late = sorted(calls[r] for r in calls if r not in ready)
                raise RuntimeError(f"{', '.join(late)} did not start within {BIND_WAIT_S:.0f} s")
            unbound = []
            for ref in ready:
                n = calls[ref]
                try:
                    took(n, 0, ray.get(ref))
                except errors.ActorUnavailableError:
                    unbound.append(n)  # Ray is restarting it
                except errors.RayActorError as err:
                    if not spend(n, _why(err)):
                        raise RuntimeError(f"{n} could not be started: {_why(err)}") from None
                    unbound.append(n)
            if unbound:
                time.sleep(0.2)
                continue
            final = record(current())
            calls = {actors[n].configure.remote(final, dict(incarnation), *files_of(n)): n
                     for n in names}
            left = max(start_by - time.monotonic(), 0.0)
            ready, _ = ray.wait(list(calls), num_returns=len(calls), timeout=left)
            if len(ready) < len(calls):
                late = sorted(calls[r] for r in calls if r not in ready)
                raise RuntimeError(f"{', '.join(late)} did not start within {BIND_WAIT_S:.0f} s")
            for ref in ready:
                n = calls[ref]
                try:
                    ray.get(ref)
                except errors.ActorUnavailableError:
                    unbound.append(n)
                except errors.RayActorError as err:  # died between bind and configure
                    log.event("died", node=n, incarnation=0, exit_code=-1, reason=_why(err))
                    if not spend(n, _why(err)):
                        raise RuntimeError(f"{n} could not be started: {_why(err)}") from None
                    unbound.append(n)
            if unbound:
                time.sleep(0.2)

        running: dict[Any, tuple[str, int, bool]] = {}  # run call -> (node, incarnation, finish)
        for n in ["grid", *spec.agents, "market"]:  # the market last: it starts the clock
            running[actors[n].run.remote(0)] = (n, 0, False)
        restarting: dict[str, _Restart] = {}
        waiting: set[str] = set()  # crashed on purpose, back at their restart round
        down: set[str] = set()  # dead for good (or until the run's end)
        finished: set[str] = set()  # agents whose ``finish`` run is done
        state = {"market_done": False}

        def rounds_done() -> int:
            return count_rows(out / "market.jsonl")

        def restart(n: str, finish: bool = False) -> None:
            """Begin a new incarnation of ``n`` (Ray restarts the process, on another node
            if its node is gone); ``advance`` takes it on from there."""
            restarting[n] = _Restart(n, incarnation[n] + 1, finish)

        def give_up(r: _Restart, why: str) -> None:
            log.event("gave_up", node=r.name, reason=why[:300])
            restarting.pop(r.name, None)
            down.add(r.name)
            if r.name == "market":
                state["market_done"] = True

        def died_again(r: _Restart, err: BaseException) -> None:
            """Its process died between ``bind`` and ``run``: bind again while the
            budget lasts."""
            now = time.monotonic()
            if isinstance(err, errors.ActorUnavailableError):  # being restarted by Ray
                if now > r.give_up_at:
                    give_up(r, f"not back within {BIND_WAIT_S:.0f} s: {_why(err)}")
                else:
                    r.stage, r.ref, r.not_before = "bind", None, now + 0.2
                return
            log.event("died", node=r.name, incarnation=r.k, exit_code=-1, stage=r.stage,
                      reason=_why(err))
            if not spend(r.name, _why(err)):
                give_up(r, _why(err))
                return
            r.stage, r.ref, r.not_before = "bind", None, now + 0.2
            r.asked, r.told = {}, set()
            r.k = max(r.k, incarnation[r.name]) + 1
            r.give_up_at = now + BIND_WAIT_S

        def peers_of(n: str) -> set[str]:
            """Nodes that hold a spec and may run: those running, and those restarting
            that are already configured (a node still to bind is configured from the
            current spec)."""
            peers = {m for m, _, _ in running.values()}
            peers |= {m for m, r in restarting.items() if r.stage in ("configure", "update")}
            return peers - {n}

        def launch_run(r: _Restart) -> None:
            n = r.name
            if state["market_done"]:
                r.finish = True  # no market to serve: book what remains
            if r.finish:  # books what remains from its checkpoint and the ledger
                log.event("finishing", node=n, incarnation=r.k)
            else:
                missed = sorted(set(r.asked.values()))
                log.event("moved", node=n, incarnation=r.k, endpoint=r.info["endpoint"],
                          peers_told=len(r.told), peers=len(r.told) + len(missed),
                          missed=missed)
            running[actors[n].run.remote(r.k, r.finish, finish_seed(n, r.finish))] = (
                n, r.k, r.finish)
            restarting.pop(n, None)

        def advance(r: _Restart) -> None:
            n, now = r.name, time.monotonic()
            if r.stage == "bind":
                if r.ref is None:
                    if now >= r.not_before:
                        r.ref = actors[n].bind.remote(base, r.k, secure, files, token)
                    return
                if not _ready(r.ref):
                    if now > r.give_up_at:
                        give_up(r, f"bind did not return within {BIND_WAIT_S:.0f} s")
                    return
                try:
                    r.info = ray.get(r.ref)
                except errors.RayError as err:
                    died_again(r, err)
                    return
                incarnation[n] = r.k
                took(n, r.k, r.info, r.finish)
                final = record(current())
                # itself first: its peers connect as soon as they are told
                r.ref = actors[n].configure.remote(final, dict(incarnation), *files_of(n))
                r.stage = "configure"
                r.give_up_at = now + BIND_WAIT_S
            elif r.stage == "configure":
                if not _ready(r.ref):
                    if now > r.give_up_at:
                        give_up(r, f"configure did not return within {BIND_WAIT_S:.0f} s")
                    return
                try:
                    ray.get(r.ref)
                except errors.RayError as err:
                    died_again(r, err)
                    return
                if r.finish or state["market_done"]:
                    launch_run(r)
                    return
                r.asked = {actors[p].update_peer.remote(n, r.k, r.info["endpoint"],
                                                        r.info["public_key"]): p
                           for p in peers_of(n)}
                r.stage, r.give_up_at = "update", now + BIND_WAIT_S
            if r.stage == "update":
                if r.asked:
                    done, _ = ray.wait(list(r.asked), num_returns=len(r.asked), timeout=0)
                    for ref in done:
                        p = r.asked.pop(ref)
                        try:
                            applied = ray.get(ref)
                        except errors.RayError:
                            continue  # died: configured from the current spec when back
                        if applied:
                            r.told.add(p)
                        elif p in peers_of(n) and incarnation[n] == r.k:
                            # its loop did not take it within UPDATE_WAIT_S: ask again
                            r.asked[actors[p].update_peer.remote(
                                n, r.k, r.info["endpoint"], r.info["public_key"])] = p
                    # a peer no longer running needs no telling
                    alive = peers_of(n)
                    r.asked = {ref: p for ref, p in r.asked.items() if p in alive}
                # while the market itself is coming back, a node waits for it: its hello
                # must reach the market's new incarnation, not the lost one's address
                held = n != "market" and "market" in restarting
                if state["market_done"] or now > r.give_up_at or not (r.asked or held):
                    launch_run(r)

        def poll() -> list[tuple[str, int, bool, str | None, int, str]]:
            """Runs that ended: (node, incarnation, finish, exit reason or None, code, why);
            restarts moved on."""
            ended = []
            if running:
                ready, _ = ray.wait(list(running), num_returns=len(running), timeout=0.1)
            else:
                ready = []
                time.sleep(0.1)
            for ref in ready:
                n, k, fin = running.pop(ref)
                try:
                    reason = ray.get(ref)
                    ended.append((n, k, fin, str(reason), 0, ""))
                except errors.RayActorError as err:
                    ended.append((n, k, fin, None, -1, _why(err)))
                except errors.RayTaskError as err:
                    ended.append((n, k, fin, None, 1, _why(err)))
            for r in list(restarting.values()):
                advance(r)
            return ended

        deadline = time.monotonic() + timeout_s
        while not state["market_done"]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment did not finish within {timeout_s:.0f} s")
            for n, k, _, reason, code, why in poll():
                if code == 0 and (n == "market" or reason != "market_silent"):
                    exits[n] = 0
                    if n == "market":
                        state["market_done"] = True
                    continue
                if code == 0:
                    # its market fell silent (lost, not yet back): serve the market's next
                    # incarnation (no restart spent: the process is alive)
                    exits[f"{n}#{k}"] = 0
                    log.event("silent", node=n, incarnation=k, rounds_done=rounds_done())
                    restart(n)  # after the market's end: its ``finish`` run
                    continue
                exits[f"{n}#{k}"] = code
                log.event("died", node=n, incarnation=k, exit_code=code, reason=why,
                          rounds_done=rounds_done())
                sk = scheduled.get(n)
                if sk is not None and k == 0 and rounds_done() >= sk.at_round:
                    (waiting if sk.restart_round is not None else down).add(n)
                    continue
                if not spend(n, why):
                    down.add(n)
                    if n == "market":
                        state["market_done"] = True
                    continue
                restart(n)
            for n in sorted(waiting):
                if rounds_done() >= scheduled[n].restart_round:
                    waiting.discard(n)
                    restart(n)
        status["rounds_done"] = rounds_done()
        if exits.get("market") != 0:
            status["reason"] = "market could not be restarted"
        else:
            status["reason"] = "finished"
            # the market sent everyone "stop": a shared grace period. A restart under way
            # ends in a ``finish`` run; a run still going after the grace, or that ended
            # without "stop", is down: its process is restarted and its ``finish`` run
            # books what remains from its checkpoint (and a prosumer's from the market's
            # ledger). Every (episode, round, agent) once, and every round a grid row.
            for n in list(restarting):
                restarting[n].finish = True
            grace_at = time.monotonic() + 10.0
            end_by = grace_at + BIND_WAIT_S + 60.0
            killed: set[str] = set()
            stopped = False
            tried: set[str] = set()  # agents given their ``finish`` run (one each)
            while True:
                now = time.monotonic()
                for n, k, fin, reason, code, why in poll():
                    if fin:
                        if code == 0:
                            exits[n] = 0
                            finished.add(n)
                        else:
                            exits[f"{n}#{k}"] = code
                            log.event("died", node=n, incarnation=k, exit_code=code,
                                      reason=why, finish=True)
                            if spend(n, why):
                                restart(n, finish=True)
                            else:
                                finished.add(n)  # nothing more to try
                        continue
                    if code == 0 and reason == "stop":
                        exits[n] = 0
                        continue
                    exits[f"{n}#{k}"] = code if n not in killed else -1
                    log.event("died" if code else "silent", node=n, incarnation=k,
                              exit_code=code, after_market=True,
                              reason=why or f"exited {reason} after the market ended")
                    down.add(n)
                if now >= grace_at and not stopped:
                    stopped = True
                    for n, _, fin in running.values():
                        if not fin:
                            killed.add(n)
                            log.event("stopping", node=n, reason="still running after the "
                                      "market's end and the grace period")
                            with contextlib.suppress(Exception):
                                ray.kill(actors[n], no_restart=False)  # Ray brings it back
                busy = {m for m, _, _ in running.values()} | set(restarting)
                for n in sorted(down | waiting):
                    if role[n] != "market" and n not in tried | finished | busy:
                        tried.add(n)
                        restart(n, finish=True)
                if not running and not restarting:
                    break
                if now > end_by:
                    log.event("gave_up", reason="finish runs not done",
                              nodes=sorted({m for m, _, _ in running.values()} | set(restarting)))
                    break
    finally:
        if any(gathered.values()):  # each machine's copy: the run directory has it all
            with contextlib.suppress(Exception):
                ray.wait([actors[n].discard.remote() for n, g in gathered.items() if g],
                         num_returns=sum(gathered.values()), timeout=10)
        for a in actors.values():
            with contextlib.suppress(Exception):
                ray.kill(a, no_restart=True)
        if server is not None:
            server.close()
            log.event("store", endpoint=server.endpoint, requests=server.requests,
                      refused=dict(server.refused), first_refusals=server.first_refusals)
        (out / RUN_MARKER).unlink(missing_ok=True)
        if pg is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(pg)
        if started_here:
            with contextlib.suppress(Exception):
                ray.shutdown()
        finish_status(status, spec, count_rows(out / "market.jsonl"))
        log.event("end", **status)
        log.close()
    (out / "exit_codes.json").write_text(json.dumps(exits, indent=2))
    return exits
