"""The grid-operator actor: cleared positions in, voltages and penalties out."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from peergrid.comms.messages import Bid, GridSignal
from peergrid.grid.penalty import agent_penalties
from peergrid.grid.powerflow import PowerFlowResult, Solver


class GridOperator:
    """Runs the power flow of each round and prices voltage violations."""

    def __init__(
        self,
        solver: Solver,
        agent_bus: Mapping[str, str],
        dt_h: float,
        vm_min_pu: float,
        vm_max_pu: float,
        penalty_per_pu: float,
        penalty_scope: str,
    ) -> None:
        self.solver = solver
        self.agent_bus = dict(agent_bus)
        self.dt_h = dt_h
        self.vm_min_pu, self.vm_max_pu = vm_min_pu, vm_max_pu
        self.penalty_per_pu, self.penalty_scope = penalty_per_pu, penalty_scope
        self._bus_pos = {b: i for i, b in enumerate(solver.bus_names)}
        self.last_result: PowerFlowResult | None = None

    def injections(self, bids: Mapping[str, Bid]) -> tuple[np.ndarray, np.ndarray]:
        """Bus loads (kW, kvar; > 0 consumption) from the agents' metered positions."""
        p_kw = np.zeros(len(self._bus_pos))
        q_kvar = np.zeros(len(self._bus_pos))
        for bid in bids.values():
            i = self._bus_pos[bid.bus]
            p_kw[i] -= bid.surplus_kwh / self.dt_h
            q_kvar[i] += bid.q_kvar
        return p_kw, q_kvar

    def solve(self, round_index: int, bids: Mapping[str, Bid]) -> GridSignal:
        p_kw, q_kvar = self.injections(bids)
        result = self.solver.solve(p_kw, q_kvar)
        self.last_result = result
        vm = {b: float(result.vm_pu[i]) for b, i in self._bus_pos.items()}
        penalties = agent_penalties(
            vm, self.agent_bus, self.vm_min_pu, self.vm_max_pu,
            self.penalty_per_pu, self.penalty_scope, result.converged,
        )
        loading = result.line_loading_pct
        return GridSignal(
            round_index=round_index, vm_pu=vm, converged=result.converged,
            voltage_penalty=penalties,
            max_line_loading_pct=float(np.nanmax(loading)) if np.isfinite(loading).any() else float("nan"),
        )
