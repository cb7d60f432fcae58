"""Power flow behind one small interface, so a faster solver can replace pandapower.

A solver is built once from a pandapower network and then solves rounds from the
vector of bus loads (kW, kvar; positive = consumption, negative = injection), in the
order of ``bus_names``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import networkx as nx
import numpy as np

if TYPE_CHECKING:  # imported where used: importing pandapower takes seconds
    import pandapower as pp

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PowerFlowResult:
    converged: bool
    vm_pu: np.ndarray
    """Voltage magnitude per bus (NaN when not converged)."""
    va_degree: np.ndarray
    line_loading_pct: np.ndarray


@dataclass(frozen=True)
class FeederTopology:
    """Which bus feeds which: enough to tell, per line, whose power flows through it."""

    slack_bus: str
    edges: tuple[tuple[str, str], ...]
    """Every closed branch between two buses: lines, transformers, bus-bus switches."""
    line_ends: tuple[tuple[str, str], ...]
    """(from bus, to bus) of each line, in ``line_names`` order."""
    fused: tuple[tuple[str, str], ...] = ()
    """Closed bus-bus switches: the buses they join are one electrical node."""

    def bus_groups(self, agent_buses: Collection[str] | None = None) -> dict[str, str]:
        """Each bus's electrical node, named by its buses in feeder order joined with "/".

        Buses joined by closed switches are one node (IEEE 13: 671 and 692). Given the
        buses agents sit at, a dead-end branch without agents also joins the node it
        hangs from: no current flows in it, so its voltage is that node's (IEEE 13's
        680 reads 671's to 1e-7 pu) and its violation is the same violation, counted
        and charged once ("671/680/692")."""
        buses = self._buses()
        graph = nx.Graph()
        graph.add_nodes_from(buses)
        graph.add_edges_from(self.fused)
        if agent_buses is not None:
            tree = self._tree()
            occupied = set(agent_buses)
            for b in buses:
                if b != self.slack_bus and not occupied & {b, *nx.descendants(tree, b)}:
                    graph.add_edge(b, next(iter(tree.predecessors(b))))
        order = {b: i for i, b in enumerate(buses)}
        out = {}
        for members in nx.connected_components(graph):
            name = "/".join(sorted(members, key=order.__getitem__))
            out.update({b: name for b in members})
        return {b: out[b] for b in buses}

    def _buses(self) -> list[str]:
        return list(dict.fromkeys([self.slack_bus, *(b for e in self.edges for b in e)]))

    def _tree(self) -> nx.DiGraph:
        return nx.bfs_tree(nx.Graph(self.edges), self.slack_bus)

    def voltage_payers(self, agent_bus: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
        """Per electrical node (``bus_groups`` of the agents' buses), the agents a
        voltage violation there is charged to: the agents at it; at a node without
        agents, the agents downstream of it (their power flows through it: on a radial
        feeder its voltage is theirs to move). Dead ends without agents are part of the
        node they hang from, so every node has payers if the feeder has agents."""
        groups = self.bus_groups(agent_bus.values())
        tree = self._tree()
        out: dict[str, tuple[str, ...]] = {}
        for group in dict.fromkeys(groups.values()):
            members = {b for b, g in groups.items() if g == group}
            payers = tuple(a for a, b in agent_bus.items() if groups[b] == group)
            if not payers:
                below = members.union(*(nx.descendants(tree, b) for b in members))
                payers = tuple(a for a, b in agent_bus.items() if b in below)
            out[group] = payers
        return out

    def downstream_buses(self) -> list[frozenset[str]]:
        """Per line, the buses it separates from the slack: on a radial feeder, every
        bus whose load or export flows through it."""
        graph = nx.Graph(self.edges)
        out = []
        for u, v in self.line_ends:
            if not graph.has_edge(u, v):
                out.append(frozenset())
                continue
            cut = graph.copy()
            cut.remove_edge(u, v)
            reach = nx.node_connected_component(cut, self.slack_bus)
            out.append(frozenset(b for b in graph.nodes if b not in reach))
        return out


class Solver(Protocol):
    node_names: list[str]
    """Where injections go and voltages come back: a bus, or a bus's phase ("671.a")."""
    node_bus: list[str]
    """The bus of each node."""
    line_names: list[str]
    topology: FeederTopology

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult: ...


def line_names(net: pp.pandapowerNet) -> list[str]:
    """Line names for logs: the network's own, else "line<index>"."""
    return [str(n) if isinstance(n, str) and n else f"line{i}"
            for i, n in zip(net.line.index, net.line.name, strict=True)]


def topology_of(net: pp.pandapowerNet, with_trafos: bool = False) -> FeederTopology:
    """The bus graph of a pandapower feeder (in-service lines and transformers, closed
    bus-bus switches) and its slack bus; the rated branches are its lines, and with
    ``with_trafos`` its transformers after them."""
    name = net.bus.name.astype(str)
    edges = [(name.at[r.from_bus], name.at[r.to_bus]) for r in net.line.itertuples()
             if r.in_service]
    edges += [(name.at[r.hv_bus], name.at[r.lv_bus]) for r in net.trafo.itertuples()
              if r.in_service]
    fused = [(name.at[r.bus], name.at[r.element]) for r in net.switch.itertuples()
             if r.et == "b" and r.closed]
    edges += fused
    ends = [(name.at[r.from_bus], name.at[r.to_bus]) for r in net.line.itertuples()]
    if with_trafos:
        ends += [(name.at[r.hv_bus], name.at[r.lv_bus]) for r in net.trafo.itertuples()]
    return FeederTopology(str(name.at[int(net.ext_grid.bus.iloc[0])]), tuple(edges),
                          tuple(ends), tuple(fused))


class PandapowerSolver:
    """Reference solver: ``pandapower.runpp`` (Newton-Raphson) on a private copy."""

    def __init__(self, net: pp.pandapowerNet) -> None:
        import pandapower as pp

        self.net = copy.deepcopy(net)
        self.bus_names = [str(n) for n in self.net.bus.name]
        self.node_names = list(self.bus_names)
        self.node_bus = list(self.bus_names)
        self.line_names = line_names(self.net)
        self.topology = topology_of(self.net)
        self._load_idx = np.array(
            [pp.create_load(self.net, bus, p_mw=0.0, q_mvar=0.0, name=f"agents@{name}")
             for bus, name in zip(self.net.bus.index, self.bus_names, strict=True)]
        )

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult:
        import pandapower as pp

        n = len(self.bus_names)
        if p_kw.shape != (n,) or q_kvar.shape != (n,):
            raise ValueError(f"injections must have shape ({n},), got {p_kw.shape}, {q_kvar.shape}")
        self.net.load.loc[self._load_idx, "p_mw"] = p_kw / 1000.0
        self.net.load.loc[self._load_idx, "q_mvar"] = q_kvar / 1000.0
        try:
            pp.runpp(self.net, numba=False, max_iteration=30)
        except pp.LoadflowNotConverged:
            logger.warning("power flow did not converge (total load %.1f kW)", p_kw.sum())
            nan = np.full(n, np.nan)
            return PowerFlowResult(False, nan, nan.copy(), np.full(len(self.net.line), np.nan))
        return PowerFlowResult(
            True,
            self.net.res_bus.vm_pu.to_numpy(copy=True),
            self.net.res_bus.va_degree.to_numpy(copy=True),
            self.net.res_line.loading_percent.to_numpy(copy=True),
        )


class PandapowerPhaseSolver:
    """Reference per-phase solver: ``pandapower.runpp_3ph`` on a private copy, one wye
    asymmetric load per bus; nodes are every bus's phases a, b, c."""

    def __init__(self, net: pp.pandapowerNet) -> None:
        import pandapower as pp

        self.net = copy.deepcopy(net)
        self.bus_names = [str(n) for n in self.net.bus.name]
        self.node_names = [f"{b}.{p}" for b in self.bus_names for p in "abc"]
        self.node_bus = [n.split(".")[0] for n in self.node_names]
        # lines, then transformers: the rated branches, as in ThreePhaseSolver
        self.line_names = line_names(self.net) + [str(n) for n in self.net.trafo.name]
        self.topology = topology_of(self.net, with_trafos=True)
        self._load_idx = np.array(
            [pp.create_asymmetric_load(self.net, bus, name=f"agents@{name}")
             for bus, name in zip(self.net.bus.index, self.bus_names, strict=True)])

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult:
        import pandapower as pp
        from pandapower.pf.runpp_3ph import runpp_3ph

        n = len(self.node_names)
        if p_kw.shape != (n,) or q_kvar.shape != (n,):
            raise ValueError(f"injections must have shape ({n},), got {p_kw.shape}, {q_kvar.shape}")
        p = np.asarray(p_kw).reshape(-1, 3) / 1000.0
        q = np.asarray(q_kvar).reshape(-1, 3) / 1000.0
        for k, ph in enumerate("abc"):
            self.net.asymmetric_load.loc[self._load_idx, f"p_{ph}_mw"] = p[:, k]
            self.net.asymmetric_load.loc[self._load_idx, f"q_{ph}_mvar"] = q[:, k]
        try:
            runpp_3ph(self.net, numba=False, max_iteration=100, tolerance_mva=1e-12)
        except pp.LoadflowNotConverged:
            logger.warning("three-phase power flow did not converge")
            nan = np.full(n, np.nan)
            return PowerFlowResult(False, nan, nan.copy(), np.full(len(self.line_names), np.nan))
        res = self.net.res_bus_3ph
        vm = np.column_stack([res[f"vm_{ph}_pu"] for ph in "abc"]).reshape(-1)
        va = np.column_stack([res[f"va_{ph}_degree"] for ph in "abc"]).reshape(-1)
        loading = np.concatenate([self.net.res_line_3ph.loading_percent.to_numpy(),
                                  self.net.res_trafo_3ph.loading_percent.to_numpy()])
        return PowerFlowResult(True, vm, va, loading)
