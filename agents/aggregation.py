"""How an agent combines its neighbours' shared parameters at a consensus step.

``metropolis`` is Zhang et al.'s step: Σ_j c_ij ω_j with the graph's doubly stochastic
weights (``agents.topology.consensus_average``). It trusts every neighbour: one agent
that sends scaled, random or sign-flipped vectors moves every honest agent's critic
as far as its weight allows, every step, and the error spreads over the graph.

The robust rules bound what one neighbour can do, after the resilient consensus
literature (Figura et al., "Resilient consensus-based multi-agent reinforcement
learning"; the coordinate-wise trimmed mean and median of Byzantine-robust learning,
Yin et al. 2018; centred clipping, Karimireddy et al. 2021). The trimming here is
symmetric over the values heard, not relative to the agent's own value as in W-MSR:

- ``trimmed-mean``: per coordinate, drop the ``trim`` largest and ``trim`` smallest of
  the values (own included), average the rest. With fewer than 2·trim + 1 values the
  agent keeps its own.
- ``median``: the coordinate-wise median of the values (own included); with fewer
  than three values (a neighbour lost, a leaf of a line or star) the agent keeps its
  own, since the median of two is their average and one liar would pull it at will.
- ``clip``: each neighbour's difference from the agent's own vector is clipped to a
  norm of ``clip_radius`` (in parameter units), then the Metropolis average. The radius
  is absolute on purpose: relative to the own vector's norm, a liar that keeps pulling
  outwards grows every honest norm geometrically (measured: critic disagreement 1e6 in
  200 episodes), since each step widens the next step's radius.

The robust rules give up the exact average (the team objective's fixed point) for a
bounded influence; the poisoning experiment measures what that costs and buys.
All arithmetic in float64, so both runtimes round the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from peergrid.agents.topology import consensus_average

AGGREGATIONS = ("metropolis", "trimmed-mean", "median", "clip")


@dataclass(frozen=True)
class Aggregation:
    rule: str = "metropolis"
    trim: int = 1
    """trimmed-mean: values dropped at each end, per coordinate."""
    clip_radius: float = 1.0
    """clip: the largest distance a neighbour's vector may pull from the agent's own (the
    critics of honest neighbours on ieee13 are ~0.4 apart after an update)."""

    def __post_init__(self) -> None:
        if self.rule not in AGGREGATIONS:
            raise ValueError(f"aggregation = {self.rule!r}: choose from {', '.join(AGGREGATIONS)}")
        if self.trim < 1:
            raise ValueError(f"trim = {self.trim}: must be at least 1")
        if not self.clip_radius > 0:
            raise ValueError(f"clip_radius = {self.clip_radius}: must be positive")

    def combine(self, own: str, values: Mapping[str, np.ndarray],
                weights: Mapping[str, float]) -> np.ndarray:
        """``own``'s new vector from the values that arrived (``own``'s among them) and
        its row of the consensus weights."""
        if own not in values:
            raise ValueError(f"consensus for {own!r} needs its own value")
        if self.rule == "metropolis":
            return consensus_average(own, values, weights)
        mine = np.asarray(values[own], dtype=np.float64)
        heard = [j for j in weights if j != own and j in values and weights[j] > 0]
        if self.rule == "clip":
            radius = self.clip_radius
            clipped = {own: mine}
            for j in heard:
                diff = np.asarray(values[j], dtype=np.float64) - mine
                norm = float(np.linalg.norm(diff))
                clipped[j] = mine + diff * (min(1.0, radius / norm) if norm > 0 else 1.0)
            return consensus_average(own, clipped, weights)
        stack = np.stack([mine, *(np.asarray(values[j], dtype=np.float64) for j in heard)])
        if self.rule == "median":
            return np.median(stack, axis=0) if len(stack) >= 3 else mine.copy()
        if len(stack) < 2 * self.trim + 1:
            return mine.copy()
        ordered = np.sort(stack, axis=0)
        return ordered[self.trim:len(stack) - self.trim].mean(axis=0)
