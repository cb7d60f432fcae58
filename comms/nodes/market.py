"""The market-operator process: comms.protocol.market behind a socket."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from peergrid.comms.node import Node
from peergrid.comms.nodes.loop import Checkpoints, serve
from peergrid.comms.protocol.market import MarketProtocol
from peergrid.comms.replica import Replica, node_tables
from peergrid.comms.runlog import RunWriter
from peergrid.comms.runtime import open_node
from peergrid.comms.spec import DeploySpec
from peergrid.market.operator import MarketOperator


def run_market(spec: DeploySpec, incarnation: int = 0, key_file: str | None = None,
               node: Node | None = None, replica: Replica | None = None) -> None:
    """``node``: its shell already open (comms.raylaunch binds before the spec is whole)."""
    node = node or open_node(spec, "market", key_file)
    writer = RunWriter(Path(spec.out))
    checkpoints = Checkpoints(Path(spec.out) / "checkpoints" / "market.state", writer,
                              node_tables("market", "market"), replica)
    state = checkpoints.load() if incarnation > 0 else None
    serve(node, lambda st, _inc: market_protocol(spec, st), writer, checkpoints, incarnation,
          state)


def market_protocol(spec: DeploySpec, state=None) -> MarketProtocol:
    m = spec.market
    return MarketProtocol(
        spec.agents, spec.window.window(), MarketOperator(m.retail, m.feed_in), m.max_kwh,
        spec.market_timing(), kills={k.at_round: k.agent for k in spec.kills},
        restarts={k.restart_round: k.agent for k in spec.kills if k.restart_round is not None},
        state=state)


def max_position_kwh(prosumer) -> float:
    """The largest metered position the agent's devices allow in one round (with 1 %
    slack): all PV and battery discharge out, or all load and charging in."""
    b, inv = prosumer.spec.battery, prosumer.spec.inverter
    out_kw = min(float(np.max(prosumer.pv_kw, initial=0.0)), inv.pv_kva) + b.discharge_kw_max
    in_kw = float(np.max(prosumer.load_kw, initial=0.0)) + b.charge_kw_max
    return 1.01 * max(out_kw, in_kw) * prosumer.dt_h + 1e-9
