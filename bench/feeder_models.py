"""The IEEE 13 feeder per phase vs its balanced equivalent, side by side over a week.

Run: ``python bench/feeder_models.py [--policy nop2p]``. The default scenario's agents
inject the same power (``nop2p``: load minus PV, the load's reactive power; every round
of the test week) into the per-phase model (each agent on its phases) and into the
balanced positive-sequence equivalent (each agent three-phase at its bus). Printed per
bus: the largest difference between the balanced voltage and the per-phase voltage of
the bus's worst phase, and the violations each model reports (rounds and bus-rounds,
over and under separately). Also: the per-phase model against the published IEEE 13
per-phase voltages. The last line is machine-readable:

    feeder_models max_dv_pu=<x> over_bus_rounds=<per-phase>/<balanced> under_bus_rounds=<..>/<..> published_max_err_pu=<y>
"""

from __future__ import annotations

import argparse

import numpy as np

from peergrid.grid.feeders.ieee13 import (PUBLISHED_REGULATOR_VM_PU, PUBLISHED_VM_PU,
                                          phase_feeder, published_spot_loads)
from peergrid.grid.threephase import ThreePhaseSolver
from peergrid.scenarios.runtime.community import Community
from peergrid.scenarios.definition.loader import load_scenario


def injections(community: Community) -> tuple[np.ndarray, np.ndarray]:
    """(agents' load - PV, load reactive power), (rounds, agents)."""
    n = community.n_rounds
    p = np.array([pr.load_kw[:n] - pr.pv_kw[:n] for pr in community.prosumers]).T
    q = np.array([pr.load_kw[:n] * pr.spec.q_per_p for pr in community.prosumers]).T
    return p, q


def bus_extremes(vm: np.ndarray, node_bus: list[str], buses: list[str]):
    """(max over phases, min over phases) per bus: (rounds, buses) each."""
    hi = np.stack([vm[:, [j for j, b in enumerate(node_bus) if b == bus]].max(1) for bus in buses], 1)
    lo = np.stack([vm[:, [j for j, b in enumerate(node_bus) if b == bus]].min(1) for bus in buses], 1)
    return hi, lo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    scenario = load_scenario("ieee13")
    balanced_scenario = scenario.model_copy(update={
        "feeder": scenario.feeder.model_copy(update={"model": "balanced"})})
    per_phase = Community(scenario)
    balanced = Community(balanced_scenario)
    p, q = injections(per_phase)
    f = scenario.feeder
    results = {}
    for name, c in (("per phase", per_phase), ("balanced", balanced)):
        shares = c.grid.node_shares(c.agent_ids)
        r = c.grid.solver.solve_batch(p @ shares.T, q @ shares.T)
        buses = [b for b in dict.fromkeys(c.grid.solver.node_bus)]
        results[name] = (buses, *bus_extremes(r.vm_pu, c.grid.solver.node_bus, buses))
    buses, ph_hi, ph_lo = results["per phase"]
    bbuses, bal, _ = results["balanced"]
    bal = bal[:, [bbuses.index(b) for b in buses]]
    # the balanced voltage against the per-phase voltage farther from 1 pu at each round
    worst = np.where(np.abs(ph_hi - 1.0) >= np.abs(ph_lo - 1.0), ph_hi, ph_lo)
    diff = bal - worst
    print(f"{'bus':<6}{'max |dV| pu':>12}{'bal - worst':>13}{'over ph/bal':>14}{'under ph/bal':>14}")
    tot = {"over": [0, 0], "under": [0, 0]}
    groups, counted = per_phase.grid.bus_groups, set()
    for j, bus in enumerate(buses):
        over = (int((ph_hi[:, j] > f.vm_max_pu).sum()), int((bal[:, j] > f.vm_max_pu).sum()))
        under = (int((ph_lo[:, j] < f.vm_min_pu).sum()), int((bal[:, j] < f.vm_min_pu).sum()))
        if groups[bus] not in counted:  # one electrical node counts once (671/680/692)
            counted.add(groups[bus])
            for k in (0, 1):
                tot["over"][k] += over[k]
                tot["under"][k] += under[k]
        print(f"{bus:<6}{np.abs(diff[:, j]).max():>12.4f}{diff[np.abs(diff[:, j]).argmax(), j]:>+13.4f}"
              f"{f'{over[0]}/{over[1]}':>14}{f'{under[0]}/{under[1]}':>14}")
    rounds = {k: (int((ph_hi > f.vm_max_pu).any(1).sum()) if k == "over" else
                  int((ph_lo < f.vm_min_pu).any(1).sum()),
                  int((bal > f.vm_max_pu).any(1).sum()) if k == "over" else
                  int((bal < f.vm_min_pu).any(1).sum())) for k in ("over", "under")}
    print(f"violating rounds (per phase / balanced): over {rounds['over'][0]}/{rounds['over'][1]}, "
          f"under {rounds['under'][0]}/{rounds['under'][1]}; bus-rounds: over "
          f"{tot['over'][0]}/{tot['over'][1]}, under {tot['under'][0]}/{tot['under'][1]}")

    feeder = phase_feeder("kersting", with_capacitors=True)
    solver = ThreePhaseSolver(feeder, PUBLISHED_REGULATOR_VM_PU)
    vm = dict(zip(solver.node_names, solver.solve_spot_loads(published_spot_loads()).vm_pu,
                  strict=True))
    err = max(abs(vm[f"{b}.{ph}"] - v) for b, vals in PUBLISHED_VM_PU.items()
              for ph, v in zip(feeder.bus_phases[b], vals, strict=True))
    print(f"published IEEE 13 case (regulator taps 10/8/11, capacitors in, published load "
          f"models): per-phase model within {err:.4f} pu of the 29 published phase voltages")
    print(f"feeder_models max_dv_pu={np.abs(diff).max():.4f} "
          f"over_bus_rounds={tot['over'][0]}/{tot['over'][1]} "
          f"under_bus_rounds={tot['under'][0]}/{tot['under'][1]} published_max_err_pu={err:.4f}")


if __name__ == "__main__":
    main()
