"""Consensus over a communication graph: neighbours average what they may share.

After Zhang et al. (ICML 2018), networked agents: each agent takes its local steps on
its own reward, then replaces the parameters it shares by the weighted average over
itself and its neighbours in the communication graph (doubly stochastic weights,
``agents.topology.metropolis_weights``). What is shared is a learner's
``consensus_parameters``: the critic and the team-reward estimator for the networked
actor-critic (``PPOGroup`` mode ``"networked"``, the paper's method), the critic alone
for the ``consensus-critic`` ablation. Rewards, actors and data never leave an agent.

``cooperative_update`` runs one update of a group of learners in process: every epoch
each learner takes its actor, critic (and estimator) minibatch steps, and every
``consensus_period`` epochs a consensus step averages what is shared. With
``weights=None`` there is no consensus step: independent learning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from peergrid.agents.topology import consensus_average


class SharedHolder(Protocol):
    def consensus_parameters(self, agent: str) -> np.ndarray: ...
    def set_consensus_parameters(self, agent: str, vector: np.ndarray) -> None: ...


def consensus_step(holder: SharedHolder, order: Sequence[str], weights: np.ndarray) -> None:
    """ω_i ← Σ_j c_ij ω_j for every agent at once (all read before any is written)."""
    stacked = getattr(holder, "average_shared", None)
    if stacked is not None:  # every agent in one stack: one product per parameter tensor
        stacked(order, weights)
        return
    values = {a: holder.consensus_parameters(a) for a in order}
    for i, a in enumerate(order):
        row = {b: weights[i, j] for j, b in enumerate(order) if weights[i, j] > 0}
        holder.set_consensus_parameters(a, consensus_average(a, values, row))


def cooperative_update(group, epochs: int, weights: np.ndarray | None = None,
                       consensus_period: int = 1) -> dict[str, float]:
    """One PPO update of a group; consensus on what it shares when ``weights`` given."""
    group.begin_update()
    totals: dict[str, float] = {}
    for e in range(epochs):
        for k, v in group.update_epoch().items():
            totals[k] = totals.get(k, 0.0) + v
        if weights is not None and (e + 1) % consensus_period == 0:
            consensus_step(group, group.ids, weights)
    group.end_update()
    return {k: v / max(epochs, 1) for k, v in totals.items() if k != "actor_loss"}


def disagreement(vectors: Sequence[np.ndarray]) -> float:
    """Largest distance of any agent's parameters from their mean."""
    stack = np.stack(vectors)
    return float(np.max(np.linalg.norm(stack - stack.mean(axis=0), axis=1)))


def critic_disagreement(holder, order: Sequence[str]) -> float:
    return disagreement([holder.critic_parameters(a) for a in order])


def estimator_disagreement(holder, order: Sequence[str]) -> float:
    return disagreement([holder.estimator_parameters(a) for a in order])
