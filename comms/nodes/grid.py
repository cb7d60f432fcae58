"""The grid-operator process: power flow on the cleared positions, voltages out.

On ``positions`` from the market it runs the power flow (the scenario's solver) and
sends every prosumer the ``grid_signal`` (bus voltages, its penalty) and the market a
``round_done``. An agent whose position did not reach the market (no bid) still draws
power: its last known position is used and the grid log names it as estimated.
"""

from __future__ import annotations

from pathlib import Path

from peergrid.comms.deployment import Deployment
from peergrid.market.bid import Bid
from peergrid.comms.runtime import open_node


def run_grid(dep: Deployment) -> None:
    from peergrid.scenarios.community import Clock, grid_row, make_grid_operator
    from peergrid.scenarios.logs import RunWriter

    scenario, node = open_node(dep, "grid")
    clock = Clock(scenario, dep.days)
    grid = make_grid_operator(scenario, clock.dt_h)
    bus = {a.id: a.bus for a in scenario.agents}
    last: dict[str, tuple[float, ...]] = {a: (0.0, 0.0, 0.0, 0.0) for a in dep.agents}
    writer = RunWriter(Path(dep.out))
    node.send("market", "hello", 0, -1, {"pid": _pid()}, control=True)
    running = True
    while running:
        for h, body in node.receive(1.0):
            if h.kind == "stop":
                running = False
                break
            if h.kind != "positions":
                node.log.event("unexpected", peer=h.sender, kind=h.kind)
                continue
            k = body["k"]
            node.global_round = k
            episode, rnd = clock.episode_round(k)
            estimated = [a for a in dep.agents if a not in body["surplus_kwh"]]
            for a in dep.agents:
                if a in body["surplus_kwh"]:
                    last[a] = tuple(body[f][a] for f in
                                    ("surplus_kwh", "q_kvar", "volt_var_kva", "q_max_kvar"))
            bids = {a: Bid(a, bus[a], rnd, 0.0, *last[a]) for a in dep.agents}
            signal = grid.solve(rnd, bids)
            for a in dep.agents:
                node.send(a, "grid_signal", episode, rnd, {
                    "vm_pu": signal.vm_pu, "converged": signal.converged,
                    "voltage_penalty": {a: signal.voltage_penalty[a]},
                    "line_penalty": {a: signal.line_penalty[a]},
                    "volt_var_q_kvar": {x: q for x, q in signal.volt_var_q_kvar.items() if x == a},
                    "max_line_loading_pct": signal.max_line_loading_pct,
                })
            node.send("market", "round_done", episode, rnd, {"k": k})
            key = {"episode": episode, "round": rnd, "time": clock.times[k].isoformat()}
            writer.write_row("grid.jsonl", {**grid_row(key, signal, grid), "estimated": estimated})
            node.log.event("round", k=k, estimated=estimated, converged=signal.converged)
    node.log.event("links", counters=node.link_counters())
    writer.close()
    node.close()


def _pid() -> int:
    import os

    return os.getpid()
