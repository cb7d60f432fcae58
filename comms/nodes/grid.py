"""The grid-operator process: comms.protocol.grid behind a socket."""

from __future__ import annotations

import os
from pathlib import Path

from peergrid.comms.deployment import Deployment
from peergrid.comms.nodes.loop import Checkpoints, serve
from peergrid.comms.protocol.grid import GridProtocol
from peergrid.comms.protocol.market import Window
from peergrid.comms.runlog import RunWriter
from peergrid.comms.runtime import open_node


def run_grid(dep: Deployment, incarnation: int = 0) -> None:
    from peergrid.scenarios.community import Clock, make_grid_operator

    scenario, node = open_node(dep, "grid")
    clock = Clock(scenario, dep.days)
    window = Window(clock.steps_per_day, [int(h) for h in clock.hours[:clock.n_rounds]],
                    [t.isoformat() for t in clock.times])
    writer = RunWriter(Path(dep.out))
    checkpoints = Checkpoints(Path(dep.out) / "checkpoints" / "grid.pkl", writer, ["grid.jsonl"])
    state = checkpoints.load() if incarnation > 0 else None
    proto = GridProtocol(dep.agents, {a.id: a.bus for a in scenario.agents}, window,
                         make_grid_operator(scenario, clock.dt_h),
                         idle_exit_s=scenario.deploy.idle_exit_ms / 1e3, state=state,
                         incarnation=incarnation, pid=os.getpid())
    serve(node, proto, writer, checkpoints)
