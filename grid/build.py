"""A grid operator from plain values: the feeder chosen, the agents' connections.

What both runtimes build the grid from (the in-process community from the scenario, a
deployed grid node from its spec in deploy.json), so there is one way to do it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from peergrid.grid.feeders import FEEDERS, build_feeder
from peergrid.grid.operator import GridOperator
from peergrid.grid.penalty import PenaltyRule
from peergrid.grid.powerflow import PandapowerSolver, Solver
from peergrid.grid.threephase import ThreePhaseSolver
from peergrid.grid.zbus import ZBusSolver


@dataclass(frozen=True)
class FeederChoice:
    name: str
    model: str
    """per_phase or balanced."""
    capacitors: bool
    slack_vm_pu: float
    solver: str
    """Balanced model: fast (Z-bus) or pandapower."""


def make_solver(f: FeederChoice) -> Solver:
    """The feeder, per phase or balanced, behind its chosen power-flow solver."""
    if f.model == "per_phase":
        return ThreePhaseSolver(FEEDERS[f.name].phases(with_capacitors=f.capacitors),
                                f.slack_vm_pu)
    net = build_feeder(f.name, slack_vm_pu=f.slack_vm_pu, with_capacitors=f.capacitors)
    return ZBusSolver(net) if f.solver == "fast" else PandapowerSolver(net)


def make_grid_operator(f: FeederChoice, buses: Mapping[str, str], dt_h: float,
                       rule: PenaltyRule, connections: Mapping[str, Sequence[str]]
                       ) -> GridOperator:
    return GridOperator(make_solver(f), dict(buses), dt_h, rule,
                        {a: list(n) for a, n in connections.items()})
