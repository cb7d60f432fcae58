"""The grid-operator process: comms.protocol.grid behind a socket."""

from __future__ import annotations

import os
from pathlib import Path

from peergrid.comms.node import Node
from peergrid.comms.nodes.loop import Checkpoints, apply, serve
from peergrid.comms.protocol.grid import GridProtocol
from peergrid.comms.replica import Replica, node_tables
from peergrid.comms.runlog import RunWriter
from peergrid.comms.runtime import open_node
from peergrid.comms.spec import DeploySpec
from peergrid.grid.build import make_grid_operator


def run_grid(spec: DeploySpec, incarnation: int = 0, key_file: str | None = None,
             node: Node | None = None, replica: Replica | None = None,
             finish: bool = False) -> None:
    """``finish``: the run is over and the grid was down at its end: book the rows of the
    rounds it missed from its checkpoint, then exit. ``node``: its shell already open
    (comms.raylaunch binds before the spec is whole). ``replica``: copies each
    checkpoint off this machine (comms.replica)."""
    node = node or open_node(spec, "grid", key_file)
    writer = RunWriter(Path(spec.out))
    checkpoints = Checkpoints(Path(spec.out) / "checkpoints" / "grid.state", writer,
                              node_tables("grid", "grid"), replica)
    state = checkpoints.load() if incarnation > 0 or finish else None
    if finish:
        proto = grid_protocol(spec, state, incarnation, os.getpid())
        apply(proto.finish(), node, writer, checkpoints)
        checkpoints.close()
        writer.close()
        node.close()
        return
    serve(node, lambda st, inc: grid_protocol(spec, st, inc, os.getpid()), writer, checkpoints,
          incarnation, state)


def grid_protocol(spec: DeploySpec, state=None, incarnation: int = 0,
                  pid: int = 0) -> GridProtocol:
    g = spec.grid
    return GridProtocol(spec.agents, g.buses, spec.window.window(),
                        make_grid_operator(g.feeder, g.buses, g.dt_h, g.rule, g.connections),
                        idle_exit_s=spec.timing.idle_exit_s, state=state,
                        incarnation=incarnation, pid=pid)
