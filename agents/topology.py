"""Communication graphs for consensus and their doubly stochastic weights.

Graphs are networkx graphs whose nodes are agent ids. ``metropolis_weights`` gives the
Metropolis-Hastings matrix c_ij = 1 / (1 + max(d_i, d_j)) on edges, c_ii = 1 − Σ_j c_ij:
symmetric, so doubly stochastic, and zero between agents that are not neighbours;
repeated averaging with it drives every agent to the mean of the initial values on a
connected graph. ``consensus_average`` is one averaging step for one agent over the
values that actually arrived, renormalising the weights of what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import networkx as nx
import numpy as np

TOPOLOGIES = ("complete", "ring", "line", "star", "random_geometric", "feeder")


class TopologyError(ValueError):
    """A communication graph consensus cannot use."""


def _electrically_adjacent(agent_buses: set[str], feeder_edges: Sequence[tuple[str, str]]
                           ) -> set[frozenset[str]]:
    """Pairs of agent buses joined by a path of the feeder through buses with no agent
    (the feeder contracted onto the agents' buses)."""
    grid = nx.Graph(feeder_edges)
    pairs: set[frozenset[str]] = set()
    for start in agent_buses & set(grid.nodes):
        seen, frontier = {start}, [start]
        while frontier:
            nxt = []
            for bus in frontier:
                for other in grid.neighbors(bus):
                    if other in seen:
                        continue
                    seen.add(other)
                    if other in agent_buses:
                        pairs.add(frozenset((start, other)))
                    else:
                        nxt.append(other)
            frontier = nxt
    return pairs


def build_graph(
    kind: str,
    agents: Sequence[str],
    seed: int = 0,
    agent_bus: Mapping[str, str] | None = None,
    feeder_edges: Sequence[tuple[str, str]] = (),
    radius: float = 0.5,
    allow_disconnected: bool = False,
) -> nx.Graph:
    """Graph of ``kind`` over ``agents`` (in the given order).

    ``feeder``: agents are neighbours when they share a bus or their buses are joined by
    a path of the feeder (``feeder_edges``, bus-name pairs: lines, transformers, closed
    switches) through buses with no agent; ``random_geometric``
    places agents uniformly in the unit square (seeded) and joins those within
    ``radius``.
    """
    agents = list(agents)
    n = len(agents)
    if kind == "complete":
        g = nx.complete_graph(n)
    elif kind == "ring":
        g = nx.cycle_graph(n) if n > 2 else nx.path_graph(n)
    elif kind == "line":
        g = nx.path_graph(n)
    elif kind == "star":
        g = nx.star_graph(n - 1) if n > 1 else nx.empty_graph(n)
    elif kind == "random_geometric":
        g = nx.random_geometric_graph(n, radius, seed=seed)
    elif kind == "feeder":
        if agent_bus is None:
            raise TopologyError("topology = 'feeder' needs the agents' buses")
        g = nx.empty_graph(n)
        buses = [agent_bus[a] for a in agents]
        adjacent = _electrically_adjacent(set(buses), feeder_edges)
        for i in range(n):
            for j in range(i + 1, n):
                if buses[i] == buses[j] or frozenset((buses[i], buses[j])) in adjacent:
                    g.add_edge(i, j)
    else:
        raise TopologyError(f"topology = {kind!r}: unknown (choose from {', '.join(TOPOLOGIES)})")
    g = nx.relabel_nodes(nx.Graph(g), dict(enumerate(agents)))
    g.add_nodes_from(agents)
    if n > 1 and not nx.is_connected(g) and not allow_disconnected:
        parts = sorted((sorted(c) for c in nx.connected_components(g)), key=len)
        raise TopologyError(
            f"topology = {kind!r}: the communication graph has {len(parts)} components "
            f"(smallest: {parts[0]}); consensus needs a connected graph "
            "(set comms.allow_disconnected = true to accept it)"
        )
    return g


def metropolis_weights(g: nx.Graph, order: Sequence[str]) -> np.ndarray:
    """Metropolis-Hastings consensus weights, rows and columns in ``order``."""
    idx = {a: i for i, a in enumerate(order)}
    c = np.zeros((len(order), len(order)))
    for u, v in g.edges:
        if u == v:
            continue
        w = 1.0 / (1.0 + max(g.degree[u], g.degree[v]))
        c[idx[u], idx[v]] = c[idx[v], idx[u]] = w
    c[np.diag_indices_from(c)] = 1.0 - c.sum(axis=1)
    return c


def consensus_average(
    own: str, values: Mapping[str, np.ndarray], weights: Mapping[str, float]
) -> np.ndarray:
    """Σ_j c_ij v_j over the neighbours whose values arrived (``own`` always has).

    A missing neighbour's weight goes to ``own`` (c_ii += c_ij): the weights still sum
    to 1, and when a link is lost both ways the matrix stays doubly stochastic, so the
    agents' average is kept (renormalising the row instead drifts it towards the agents
    heard most).
    """
    if own not in values:
        raise ValueError(f"consensus for {own!r} needs its own value")
    present = [j for j in weights if j in values and weights[j] > 0 and j != own]
    total = sum(weights.values())
    own_weight = total - sum(weights[j] for j in present)
    # in float64 whatever the weights' type: both runtimes round the same way
    out = float(own_weight / total) * np.asarray(values[own], dtype=np.float64)
    for j in present:
        out = out + float(weights[j] / total) * np.asarray(values[j], dtype=np.float64)
    return out
