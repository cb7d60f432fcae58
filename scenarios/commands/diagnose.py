"""`peergrid scenario diagnose`: is the feeder's trouble caused by the agents?

Before a penalty or an optimum is trusted, three power flows of every round of each
window the scenario uses (training, validation, test) answer what a power-systems
reviewer asks first:

* **community**: the agents' own injections with the ``nop2p`` policy (battery idle,
  inverters at unity power factor): load minus PV, the load's reactive power;
* **zero injections**: no load and no PV at all; the feeder must be within its limits,
  or its violations come from the feeder itself (capacitors, source voltage);
* **PV alone**: every PV system at full output, no load: the worst case of export.

For each: rounds and bus-rounds above and below the voltage limits (with the hours and
buses), the voltage range, and every line's highest loading. The calibration lines say
how large the community is against the feeder's design load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from peergrid.grid.feeders import base_loads
from peergrid.scenarios.runtime.community import Community
from peergrid.scenarios.definition.loader import in_window
from peergrid.scenarios.commands.report import bus_violations
from peergrid.scenarios.definition.schema import Scenario


@dataclass(frozen=True)
class CaseResult:
    name: str
    overvoltage_rounds: int
    undervoltage_rounds: int
    overvoltage_bus_rounds: int
    undervoltage_bus_rounds: int
    overvoltage_hours: list[int]
    undervoltage_hours: list[int]
    overvoltage_buses: list[str]
    undervoltage_buses: list[str]
    vm_min_pu: float
    vm_max_pu: float
    max_line_loading_pct: dict[str, float]
    nonconverged_rounds: int


def _solve_all(solver: Any, p_kw: np.ndarray, q_kvar: np.ndarray) -> tuple[np.ndarray, ...]:
    if hasattr(solver, "solve_batch"):
        r = solver.solve_batch(p_kw, q_kvar)
        return r.vm_pu, r.line_loading_pct, r.converged
    results = [solver.solve(p, q) for p, q in zip(p_kw, q_kvar, strict=True)]
    return (np.array([r.vm_pu for r in results]), np.array([r.line_loading_pct for r in results]),
            np.array([r.converged for r in results]))


def _case(name: str, community: Community, p_kw: np.ndarray, q_kvar: np.ndarray,
          vm_min: float, vm_max: float) -> CaseResult:
    solver = community.grid.solver
    vm, loading, converged = _solve_all(solver, p_kw, q_kvar)
    table = pd.DataFrame(vm, columns=[f"vm_pu.{n}" for n in solver.node_names])
    buses, over_bus, under_bus = bus_violations(table, vm_min, vm_max,
                                                community.grid.bus_groups)
    hours = community.hours[:len(vm)]
    return CaseResult(
        name=name,
        overvoltage_rounds=int(over_bus.any(1).sum()),
        undervoltage_rounds=int(under_bus.any(1).sum()),
        overvoltage_bus_rounds=int(over_bus.sum()),
        undervoltage_bus_rounds=int(under_bus.sum()),
        overvoltage_hours=sorted({int(h) for h in hours[over_bus.any(1)]}),
        undervoltage_hours=sorted({int(h) for h in hours[under_bus.any(1)]}),
        overvoltage_buses=[b for b, x in zip(buses, over_bus.any(0), strict=True) if x],
        undervoltage_buses=[b for b, x in zip(buses, under_bus.any(0), strict=True) if x],
        vm_min_pu=float(np.nanmin(vm)), vm_max_pu=float(np.nanmax(vm)),
        max_line_loading_pct={n: round(float(x), 1) for n, x in
                              zip(solver.line_names, np.nanmax(loading, axis=0), strict=True)},
        nonconverged_rounds=int((~converged).sum()),
    )


def diagnose(scenario: Scenario, days: int | None = None, window: str = "test"
             ) -> dict[str, Any]:
    """The three cases over one of the scenario's windows (``loader.WINDOWS``), and the
    community's size."""
    community = Community(in_window(scenario, window), days=days)
    n = community.n_rounds
    agents = community.agent_ids
    shares = community.grid.node_shares(agents)  # (nodes, agents)
    load = np.array([p.load_kw[:n] for p in community.prosumers])  # (agents, rounds)
    pv = np.array([p.pv_kw[:n] for p in community.prosumers])
    q_load = np.array([p.load_kw[:n] * p.spec.q_per_p for p in community.prosumers])
    f = scenario.feeder
    zero = np.zeros((n, shares.shape[0]))
    cases = [
        _case("community (nop2p)", community, (shares @ (load - pv)).T, (shares @ q_load).T,
              f.vm_min_pu, f.vm_max_pu),
        _case("zero injections", community, zero, zero, f.vm_min_pu, f.vm_max_pu),
        _case("PV alone", community, (shares @ -pv).T, zero, f.vm_min_pu, f.vm_max_pu),
    ]
    design_kw = sum(p for p, _ in base_loads(f.name).values())
    return {
        "scenario": scenario.scenario.id, "feeder": f.name, "model": f.model,
        "window": window, "start": community.start.isoformat(), "days": community.days,
        "design_load_kw": design_kw,
        "community_peak_kw": float(load.sum(0).max()),
        "community_peak_over_design": float(load.sum(0).max() / design_kw),
        "pv_kwp": float(sum(p.spec.pv_kwp for p in community.prosumers)),
        "pv_peak_kw": float(pv.sum(0).max()),
        "cases": [asdict(c) for c in cases],
    }


def format_diagnosis(d: dict[str, Any]) -> str:
    lines = [
        f"{d['scenario']} on {d['feeder']} ({d['model']}), {d['window']} window: "
        f"{d['days']} days from {d['start']}",
        f"  community peak load {d['community_peak_kw']:,.0f} kW = "
        f"{d['community_peak_over_design']:.2f} x the feeder's design load "
        f"({d['design_load_kw']:,.0f} kW); PV {d['pv_kwp']:,.0f} kWp, peak output "
        f"{d['pv_peak_kw']:,.0f} kW",
        "",
    ]
    for c in d["cases"]:
        top = sorted(c["max_line_loading_pct"].items(), key=lambda kv: -kv[1])
        lines += [
            f"{c['name']}:",
            f"  over-voltage   {c['overvoltage_rounds']:3d} rounds, "
            f"{c['overvoltage_bus_rounds']:4d} bus-rounds; hours {c['overvoltage_hours']}; "
            f"buses {c['overvoltage_buses']}",
            f"  under-voltage  {c['undervoltage_rounds']:3d} rounds, "
            f"{c['undervoltage_bus_rounds']:4d} bus-rounds; hours {c['undervoltage_hours']}; "
            f"buses {c['undervoltage_buses']}",
            f"  voltage range  {c['vm_min_pu']:.4f} - {c['vm_max_pu']:.4f} pu",
            "  line loading   " + ", ".join(f"{n} {x:.0f} %" for n, x in top[:6])
            + (f" (highest 6 of {len(top)}; all with --json)" if len(top) > 6 else ""),
        ]
        if c["nonconverged_rounds"]:
            lines.append(f"  NON-CONVERGED  {c['nonconverged_rounds']} rounds")
    return "\n".join(lines)
