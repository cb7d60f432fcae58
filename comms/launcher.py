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
import threading
import time
from pathlib import Path

from peergrid.comms.deployment import Deployment

_PRELOAD = ["peergrid.comms.preload"]


def run_node(role: str, name: str, config: str, incarnation: int = 0,
             launcher_pid: int | None = None) -> None:
    """Entry point of one node process (also what `peergrid node` calls)."""
    import torch

    if launcher_pid is not None:
        threading.Thread(target=_exit_with, args=(launcher_pid,), daemon=True).start()

    torch.set_num_threads(1)
    dep = Deployment.read(config)
    if role == "market":
        from peergrid.comms.nodes.market import run_market

        run_market(dep)
    elif role == "grid":
        from peergrid.comms.nodes.grid import run_grid

        run_grid(dep)
    elif role == "prosumer":
        from peergrid.comms.nodes.prosumer import run_prosumer

        run_prosumer(dep, name, incarnation)
    else:
        raise ValueError(f"role = {role!r}: market, grid or prosumer")


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


def _rounds_done(out: Path) -> int:
    path = out / "market.jsonl"
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


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


def launch(dep: Deployment, timeout_s: float = 3600.0) -> dict[str, int]:
    """Run a deployment to its end; returns each process's exit code."""
    check_ports_free(dep.endpoints)
    out = Path(dep.out)
    config = out / "deploy.json"
    dep.write(config)
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    from peergrid.scenarios.loader import scenario_from_dump

    kills = scenario_from_dump(dep.scenario).deploy.kills
    procs: dict[str, mp.process.BaseProcess] = {}
    exits: dict[str, int] = {}

    def start(role: str, name: str, incarnation: int = 0) -> None:
        p = ctx.Process(target=run_node, args=(role, name, str(config), incarnation,
                                               os.getpid()),
                        name=f"peergrid-{name}", daemon=False)
        p.start()
        procs[name] = p

    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if on_main_thread else None
    try:
        start("grid", "grid")
        for a in dep.agents:
            start("prosumer", a)
        start("market", "market")
        restarted: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while procs["market"].is_alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment did not finish within {timeout_s:.0f} s")
            for k in kills:
                p = procs[k.agent]
                if (k.restart_round is not None and k.agent not in restarted
                        and not p.is_alive() and _rounds_done(out) >= k.restart_round):
                    exits[f"{k.agent}#0"] = p.exitcode
                    start("prosumer", k.agent, incarnation=1)
                    restarted.add(k.agent)
            time.sleep(0.02)
        # the market sent everyone "stop": give them a shared grace period, then stop them
        grace = time.monotonic() + 10.0
        for p in procs.values():
            p.join(timeout=max(grace - time.monotonic(), 0.1))
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
        for p in procs.values():
            if p.is_alive():
                p.terminate()
        for p in procs.values():
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    exits.update({name: p.exitcode for name, p in procs.items()})
    (out / "exit_codes.json").write_text(json.dumps(exits, indent=2))
    return exits
