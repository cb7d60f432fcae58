"""The grid-operator actor: cleared positions in, voltages and penalties out."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from peergrid.grid.signal import GridSignal
from peergrid.market.bid import Bid
from peergrid.grid.inverters import settle_volt_var
from peergrid.grid.penalty import Penalties, PenaltyRule, allocate
from peergrid.grid.powerflow import PowerFlowResult, Solver

logger = logging.getLogger(__name__)


def connection_nodes(bus: str, phases: str | None,
                     bus_phases: Mapping[str, str] | None) -> list[str]:
    """The power-flow nodes an agent is connected to: its bus on a balanced feeder; on a
    per-phase one (``bus_phases`` given), the phases it uses, by default all of its
    bus's."""
    if bus_phases is None:
        return [bus]
    return [f"{bus}.{p}" for p in (phases or bus_phases[bus])]


class GridOperator:
    """Runs the power flow of each round and prices limit violations."""

    def __init__(
        self,
        solver: Solver,
        agent_bus: Mapping[str, str],
        dt_h: float,
        rule: PenaltyRule,
        agent_nodes: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.solver = solver
        self.agent_bus = dict(agent_bus)
        self.dt_h = dt_h
        self.rule = rule
        self.agent_nodes = dict(agent_nodes or {a: [b] for a, b in agent_bus.items()})
        self._node_pos = {n: i for i, n in enumerate(solver.node_names)}
        unknown = {a: n for a, ns in self.agent_nodes.items() for n in ns
                   if n not in self._node_pos}
        if unknown:
            raise ValueError(f"agents connected to nodes the feeder does not have: {unknown}")
        self.bus_groups = solver.topology.bus_groups(self.agent_bus.values())
        groups = self.bus_groups
        self._node_group = {n: groups[b] for n, b in zip(solver.node_names, solver.node_bus,
                                                        strict=True)}
        self._payers = solver.topology.voltage_payers(self.agent_bus)
        self._downstream = dict(zip(solver.line_names, solver.topology.downstream_buses(),
                                    strict=True))
        self.last_result: PowerFlowResult | None = None
        self.last_penalties: Penalties | None = None
        self._shares_key: tuple[str, ...] = ()
        self._shares = np.zeros((len(self._node_pos), 0))

    def node_shares(self, agents: list[str]) -> np.ndarray:
        """(nodes x agents) matrix: the share of each agent's power at each node (an
        agent's power is split equally over its phases); kept per agent list, since
        the same agents come every round."""
        key = tuple(agents)
        if key != self._shares_key:
            self._shares_key, self._shares = key, self._build_shares(agents)
        return self._shares

    def _build_shares(self, agents: list[str]) -> np.ndarray:
        shares = np.zeros((len(self._node_pos), len(agents)))
        for j, a in enumerate(agents):
            for n in self.agent_nodes[a]:
                shares[self._node_pos[n], j] = 1.0 / len(self.agent_nodes[a])
        return shares

    def injections(self, bids: Mapping[str, Bid],
                   volt_var_q: Mapping[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Node loads (kW, kvar; > 0 consumption) from the agents' metered positions (and
        the reactive power of inverters in volt-var mode, > 0 injected)."""
        agents = list(bids)
        shares = self.node_shares(agents)
        q_droop = volt_var_q or {}
        p_kw = shares @ np.array([-bids[a].surplus_kwh / self.dt_h for a in agents])
        q_kvar = shares @ np.array([bids[a].q_kvar - q_droop.get(a, 0.0) for a in agents])
        return p_kw, q_kvar

    def solve(self, round_index: int, bids: Mapping[str, Bid]) -> GridSignal:
        droop = [a for a, b in bids.items() if b.volt_var_kva > 0]
        settled_q: dict[str, float] = {}
        if droop:
            settled_q, result = self._settle_volt_var(bids, droop)
        else:
            result = self.solver.solve(*self.injections(bids))
        self.last_result = result
        vm = {n: float(result.vm_pu[i]) for n, i in self._node_pos.items()}
        loading = dict(zip(self.solver.line_names, map(float, result.line_loading_pct),
                           strict=True))
        export_kw = {a: 0.0 for a in self.agent_bus}
        export_kw.update({a: b.surplus_kwh / self.dt_h for a, b in bids.items()})
        penalties = allocate(self.rule, vm, self._node_group, loading, self._downstream,
                             self.agent_bus, export_kw, result.converged, self._payers)
        self.last_penalties = penalties
        lp = result.line_loading_pct
        return GridSignal(
            round_index=round_index, vm_pu=vm, converged=result.converged,
            voltage_penalty=penalties.voltage, line_penalty=penalties.line,
            volt_var_q_kvar=settled_q,
            max_line_loading_pct=float(np.nanmax(lp)) if np.isfinite(lp).any() else float("nan"),
        )

    def _settle_volt_var(self, bids: Mapping[str, Bid], droop: list[str]
                         ) -> tuple[dict[str, float], PowerFlowResult]:
        """The power flow with the volt-var inverters at their steady state."""
        at = [[self._node_pos[n] for n in self.agent_nodes[a]] for a in droop]
        last: list[PowerFlowResult] = []

        def voltages(q: np.ndarray) -> np.ndarray:
            result = self.solver.solve(*self.injections(bids, dict(zip(droop, q, strict=True))))
            last[:] = [result]
            return np.array([np.mean(result.vm_pu[nodes]) for nodes in at])

        q, _, settled = settle_volt_var(
            voltages, np.array([bids[a].volt_var_kva for a in droop]),
            np.array([bids[a].q_max_kvar for a in droop]))
        if not settled:
            logger.warning("volt-var inverters did not settle (%d agents)", len(droop))
        return {a: float(x) for a, x in zip(droop, q, strict=True)}, last[0]


def grid_row(key: dict[str, Any], signal: GridSignal, grid: GridOperator) -> dict[str, Any]:
    """The grid.jsonl row of one round: every node's voltage, every line's loading, the
    penalties charged and what could not be charged to anyone."""
    result, charged = grid.last_result, grid.last_penalties
    loading = result.line_loading_pct if result is not None else np.array([])
    names = grid.solver.line_names if result is not None else []
    return {
        **key, "converged": signal.converged,
        "max_line_loading_pct": signal.max_line_loading_pct,
        "lines_overloaded": int(np.sum(np.asarray(loading) > 100.0)),
        "voltage_penalty": float(sum(signal.voltage_penalty.values())),
        "line_penalty": float(sum(signal.line_penalty.values())),
        "voltage_penalty_unallocated": charged.voltage_unallocated if charged else 0.0,
        "line_penalty_unallocated": charged.line_unallocated if charged else 0.0,
        **{f"vm_pu.{b}": v for b, v in signal.vm_pu.items()},
        **{f"loading_pct.{n}": float(x) for n, x in zip(names, loading, strict=True)},
    }
