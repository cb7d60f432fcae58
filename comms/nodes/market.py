"""The market-operator process: comms.protocol.market behind a socket."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from peergrid.comms.deployment import Deployment
from peergrid.comms.nodes.loop import Checkpoints, serve
from peergrid.comms.protocol.market import MarketProtocol, MarketTiming, Window
from peergrid.comms.runlog import RunWriter
from peergrid.comms.runtime import open_node
from peergrid.market.operator import MarketOperator


def run_market(dep: Deployment, incarnation: int = 0) -> None:
    from peergrid.scenarios.community import Clock, build_prosumer

    scenario, node = open_node(dep, "market")
    d = scenario.deploy
    clock = Clock(scenario, dep.days)
    window = Window(clock.steps_per_day, [int(h) for h in clock.hours[:clock.n_rounds]],
                    [t.isoformat() for t in clock.times])
    retail, feed_in = scenario.tariff.hourly()
    writer = RunWriter(Path(dep.out))
    checkpoints = Checkpoints(Path(dep.out) / "checkpoints" / "market.pkl", writer,
                              ["market.jsonl"])
    state = checkpoints.load() if incarnation > 0 else None
    timing = MarketTiming(d.bid_deadline_ms / 1e3, d.signal_timeout_ms / 1e3,
                          d.down_after_ms / 1e3, _update_allowance(scenario, dep))
    proto = MarketProtocol(
        dep.agents, window, MarketOperator(retail, feed_in),
        {a.id: max_position_kwh(build_prosumer(scenario, a, clock)) for a in scenario.agents},
        timing, kills={k.at_round: k.agent for k in d.kills},
        restarts={k.restart_round: k.agent for k in d.kills if k.restart_round is not None},
        state=state)
    serve(node, proto, writer, checkpoints)


def max_position_kwh(prosumer) -> float:
    """The largest metered position the agent's devices allow in one round (with 1 %
    slack): all PV and battery discharge out, or all load and charging in."""
    b, inv = prosumer.spec.battery, prosumer.spec.inverter
    out_kw = min(float(np.max(prosumer.pv_kw, initial=0.0)), inv.pv_kva) + b.discharge_kw_max
    in_kw = float(np.max(prosumer.load_kw, initial=0.0)) + b.charge_kw_max
    return 1.01 * max(out_kw, in_kw) * prosumer.dt_h + 1e-9


def _update_allowance(scenario, dep: Deployment) -> float:
    """Extra wait at a day's end while learners update (and exchange critics)."""
    if not dep.learners:
        return 0.0
    return 5.0 + scenario.algo.epochs * scenario.deploy.consensus_timeout_ms / 1e3
