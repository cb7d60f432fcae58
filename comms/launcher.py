"""Start every node of a deployment as its own OS process, watch them, stop them all.

Processes come from a ``forkserver`` that has already imported torch, pandapower and
peergrid and run torch's lazy initialisation (comms/preload.py), so each prosumer process
shares those pages instead of paying for its own import (see bench/deploy.py for the
memory this saves). Injected crashes: a prosumer named in ``[[deploy.kills]]`` kills
itself with SIGKILL on the market's ``crash`` control message, sent as its round begins
(so no injected network fault can cancel it); the launcher restarts it (from its
checkpoint) once the market has finished the round before ``restart_round``, and the
market waits for its ``hello`` before that round. Every child is stopped on exit, on
error, on Ctrl-C and on SIGTERM; and each node watches the launcher, so not even a
launcher killed outright leaves orphans.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path

from peergrid.comms.keys import KeyFileError
from peergrid.comms.spec import DeploySpec
from peergrid.comms.node import NodeLog
from peergrid.comms.replica import node_tables

_PRELOAD = ["peergrid.comms.preload"]


def run_node(role: str, name: str, config: str, incarnation: int = 0,
             launcher_pid: int | None = None, finish: bool = False,
             key_file: str | None = None, insecure: bool = False) -> None:
    """Entry point of one node process (also what `peergrid node` calls). ``insecure``:
    plain TCP is accepted even with endpoints on other hosts (the launcher's nodes: the
    user asked `deploy --insecure`)."""
    import torch

    if launcher_pid is not None:
        threading.Thread(target=_exit_with, args=(launcher_pid,), daemon=True).start()

    torch.set_num_threads(1)
    spec = DeploySpec.read(config)
    if spec.security is None and launcher_pid is None:  # the launcher has said so once
        check_plain_tcp(spec, insecure)
    if role == "market":
        from peergrid.comms.nodes.market import run_market

        run_market(spec, incarnation, key_file)
    elif role == "grid":
        from peergrid.comms.nodes.grid import run_grid

        run_grid(spec, incarnation, key_file, finish=finish)
    elif role == "prosumer":
        from peergrid.comms.nodes.prosumer import run_prosumer

        run_prosumer(spec, name, incarnation, finish=finish, key_file=key_file)
    else:
        raise ValueError(f"role = {role!r}: market, grid or prosumer")


def check_plain_tcp(spec: DeploySpec, allowed: bool) -> None:
    """A deploy.json without keys runs plain TCP: said on the terminal, and refused for
    endpoints beyond this machine unless asked for (``--insecure``)."""
    import ipaddress
    from urllib.parse import urlsplit

    remote = []
    for name, endpoint in spec.endpoints.items():
        host = urlsplit(endpoint).hostname or ""
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            remote.append(f"{name} {endpoint}")
    if remote and not allowed:
        raise KeyFileError(
            f"{spec.out}/deploy.json has no security section (plain TCP) and endpoints "
            f"beyond this machine ({', '.join(remote[:3])}{' ...' if len(remote) > 3 else ''}):"
            " anyone who reaches them could speak for any node. Add keys (peergrid keys, "
            "docs/deploy.md) or pass --insecure")
    print("WARNING: plain TCP (no security section in deploy.json): no authentication, "
          "no encryption", file=sys.stderr)


def _exit_with(pid: int) -> None:
    """Terminate this node when the launcher ``pid`` is gone, however it went (even
    SIGKILL, which no clean-up code survives): no orphan nodes. The forkserver is no
    help here, as every node holds it open."""
    try:
        fd = os.pidfd_open(pid)  # Linux: readable once the process has exited
        select.select([fd], [], [])
    except (AttributeError, OSError):
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through launch()'s clean-up


def count_rows(path: Path) -> int:
    """Lines in a run file (rows booked); 0 before it exists."""
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _rounds_done(out: Path) -> int:
    return count_rows(out / "market.jsonl")


def check_ports_free(endpoints: dict[str, str]) -> None:
    """Fail early, naming the endpoint, when a local port is already taken."""
    import socket

    for name, ep in endpoints.items():
        host, port = ep.removeprefix("tcp://").rsplit(":", 1)
        if host not in ("127.0.0.1", "localhost", "0.0.0.0"):
            continue
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as zmq binds
            try:
                s.bind((host, int(port)))
            except OSError as err:
                raise OSError(f"endpoint of {name} ({ep}) is not free: {err.strerror}; "
                              "choose another [deploy] base_port or --base-port") from None


class _Supervisor:
    """Starts the nodes, restarts one that dies (from its checkpoint, with a budget and
    a doubling back-off), and keeps a log of what it did (nodes/launcher.jsonl)."""

    def __init__(self, spec: DeploySpec, config: Path) -> None:
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(_PRELOAD)
        self.config, self.timing = config, spec.timing
        self.procs: dict[str, mp.process.BaseProcess] = {}
        self.role = {"market": "market", "grid": "grid", **{a: "prosumer" for a in spec.agents}}
        self.incarnation: dict[str, int] = {}
        self.exits: dict[str, int | None] = {}
        self.restarts: dict[str, int] = {}
        self.retry_at: dict[str, float] = {}
        self.log = NodeLog(Path(spec.out) / "nodes" / "launcher.jsonl")

    def start(self, name: str, incarnation: int = 0, finish: bool = False) -> None:
        p = self.ctx.Process(target=run_node, args=(self.role[name], name, str(self.config),
                                                    incarnation, os.getpid(), finish),
                             name=f"peergrid-{name}", daemon=False)
        p.start()
        self.procs[name] = p
        self.incarnation[name] = incarnation
        self.log.event("started", node=name, incarnation=incarnation, pid=p.pid, finish=finish)

    def reap(self, name: str) -> None:
        """Note the exit of ``name``'s current process."""
        p = self.procs[name]
        self.exits[f"{name}#{self.incarnation[name]}"] = p.exitcode
        self.log.event("died", node=name, incarnation=self.incarnation[name],
                       exit_code=p.exitcode)

    def restart_if_due(self, name: str) -> None:
        """An unscheduled death: restart after the back-off, while the budget lasts."""
        if name not in self.retry_at:
            self.reap(name)
            n = self.restarts.get(name, 0)
            if n >= self.timing.restart_budget:
                self.log.event("gave_up", node=name, restarts=n)
                self.retry_at[name] = float("inf")
                return
            self.retry_at[name] = time.monotonic() + self.timing.restart_backoff_s * 2 ** n
        if time.monotonic() >= self.retry_at[name]:
            del self.retry_at[name]
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self.start(name, self.incarnation[name] + 1)

    def stop_all(self, grace_s: float = 5.0) -> None:
        """SIGTERM to every node, one shared grace period, then SIGKILL to the rest (a
        node closing its sockets towards peers already gone can linger for seconds per
        socket: waiting for each node in turn could take minutes)."""
        for p in self.procs.values():
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + grace_s
        for p in self.procs.values():
            p.join(timeout=max(deadline - time.monotonic(), 0.0))
        for p in self.procs.values():
            if p.is_alive():
                p.kill()
                p.join()


def finish_status(status: dict, spec: DeploySpec, rounds_done: int) -> None:
    """Complete ``status`` and write status.json: complete means every round cleared and
    every agent's every round booked (the same test whoever launched the nodes)."""
    out, n_rounds = Path(spec.out), spec.window.n_rounds
    if status["rounds_done"] == 0:
        status["rounds_done"] = rounds_done
    booked = {a: count_rows(out / "agents" / f"{a}.jsonl") for a in spec.agents}
    status["agent_rounds_missing"] = {a: n_rounds - n for a, n in booked.items()
                                      if n != n_rounds}
    status["complete"] = (status["reason"] == "finished" and status["rounds_done"]
                          == n_rounds and not status["agent_rounds_missing"])
    (out / "status.json").write_text(json.dumps(status, indent=2))


def launch(spec: DeploySpec, timeout_s: float = 3600.0) -> dict[str, int]:
    """Run a deployment to its end, supervising its nodes; returns each process's exit
    code (``name#i`` for an incarnation that died before the last). Writes
    ``status.json``: whether every round was run, and up to which."""
    check_ports_free(spec.endpoints)
    out = Path(spec.out)
    config = out / "deploy.json"
    spec.write(config)
    n_rounds = spec.window.n_rounds
    scheduled = {k.agent: k for k in spec.kills}  # crashed on purpose: restarted on schedule
    sup = _Supervisor(spec, config)
    if spec.security is None:
        warning = ("links are plain TCP (--insecure): no authentication, no encryption; "
                   "anyone who reaches the ports can speak for any node")
        print(f"WARNING: {warning}", file=sys.stderr)
        sup.log.event("insecure", warning=warning)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if on_main_thread else None
    status = {"complete": False, "rounds": n_rounds, "rounds_done": 0, "reason": "interrupted"}
    try:
        sup.start("grid")
        for a in spec.agents:
            sup.start(a)
        sup.start("market")
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment did not finish within {timeout_s:.0f} s")
            market = sup.procs["market"]
            if not market.is_alive():
                if market.exitcode == 0 or sup.retry_at.get("market") == float("inf"):
                    break
                sup.restart_if_due("market")  # from its checkpoint; the nodes wait for it
            for name, p in list(sup.procs.items()):
                if name == "market" or p.is_alive() or p.exitcode == 0:
                    continue  # a clean exit: told to stop (or its market fell silent)
                k = scheduled.get(name)
                if (k is not None and sup.incarnation[name] == 0
                        and _rounds_done(out) >= k.at_round):
                    # the injected crash: back before its restart round, or never
                    if (k.restart_round is not None and name not in sup.retry_at
                            and _rounds_done(out) >= k.restart_round):
                        sup.reap(name)
                        sup.start(name, 1)
                    continue
                sup.restart_if_due(name)
            time.sleep(0.02)
        market_exit = sup.procs["market"].exitcode
        status["rounds_done"] = _rounds_done(out)
        if market_exit != 0:  # the round clock itself died: the run cannot go on
            status["reason"] = f"market exited with {market_exit}"
        else:
            status["reason"] = "finished"
            # the market sent everyone "stop": give them a shared grace period
            grace = time.monotonic() + 10.0
            for p in sup.procs.values():
                p.join(timeout=max(grace - time.monotonic(), 0.1))
            # a node down at the end (dead, still running after the grace, or gone
            # silent before the end: fewer rows than rounds) is run once more to book
            # what remains: an agent from its checkpoint and the market's ledger, the
            # grid a row for each round it missed
            nodes = [n for n in sup.procs if sup.role[n] != "market"]
            late = [n for n in nodes if sup.procs[n].is_alive()]
            for name in late:
                sup.log.event("stopping", node=name, reason="still running after the "
                              "market's end and the grace period")
                sup.procs[name].kill()
            for name in late:
                sup.procs[name].join(timeout=10)
            due = [n for n in nodes if sup.procs[n].exitcode is not None  # else: its port
                   and (sup.procs[n].exitcode != 0
                        or count_rows(out / node_tables(sup.role[n], n)[0]) < n_rounds)]
            for name in due:  # all together, against one deadline
                sup.reap(name)
                sup.start(name, sup.incarnation[name] + 1, finish=True)
            finish_by = time.monotonic() + 60.0
            for name in due:
                sup.procs[name].join(timeout=max(finish_by - time.monotonic(), 0.1))
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
        sup.stop_all()
        finish_status(status, spec, _rounds_done(out))
        sup.log.event("end", **status)
        sup.log.close()
    exits = {**sup.exits, **{name: p.exitcode for name, p in sup.procs.items()}}
    (out / "exit_codes.json").write_text(json.dumps(exits, indent=2))
    return exits
