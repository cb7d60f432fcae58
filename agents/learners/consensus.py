"""The paper's consensus actor-critic: PPO learners whose critics agree by averaging.

After Zhang et al. (ICML 2018), networked agents: each agent takes critic steps on its
own reward, then replaces its critic parameters by the weighted average over itself
and its neighbours in the communication graph (doubly stochastic weights,
``comms.topology.metropolis_weights``), then takes its actor step with the advantage
from its own (now averaged) critic. Only critic parameters are exchanged.

``cooperative_update`` runs one update of a group of learners in process: every epoch
each learner takes its actor and critic minibatch steps, and every
``consensus_period`` epochs a consensus step averages the critics. With
``weights=None`` there is no consensus step: independent PPO.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from peergrid.comms.topology import consensus_average


class CriticHolder(Protocol):
    def critic_parameters(self, agent: str) -> np.ndarray: ...
    def set_critic_parameters(self, agent: str, vector: np.ndarray) -> None: ...


def consensus_step(holder: CriticHolder, order: Sequence[str], weights: np.ndarray) -> None:
    """ω_i ← Σ_j c_ij ω_j for every agent at once (all read before any is written)."""
    values = {a: holder.critic_parameters(a) for a in order}
    for i, a in enumerate(order):
        row = {b: weights[i, j] for j, b in enumerate(order) if weights[i, j] > 0}
        holder.set_critic_parameters(a, consensus_average(a, values, row))


def cooperative_update(group, epochs: int, weights: np.ndarray | None = None,
                       consensus_period: int = 1) -> dict[str, float]:
    """One PPO update of a ``PPOGroup``; consensus on the critics when ``weights`` given."""
    group.begin_update()
    critic_loss = 0.0
    for e in range(epochs):
        critic_loss += group.update_epoch()["critic_loss"]
        if weights is not None and (e + 1) % consensus_period == 0:
            consensus_step(group, group.ids, weights)
    group.end_update()
    return {"critic_loss": critic_loss / max(epochs, 1)}


def critic_disagreement(holder: CriticHolder, order: Sequence[str]) -> float:
    """Largest distance of any agent's critic parameters from their mean."""
    stack = np.stack([holder.critic_parameters(a) for a in order])
    return float(np.max(np.linalg.norm(stack - stack.mean(axis=0), axis=1)))
