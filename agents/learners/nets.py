"""Small torch networks shared by the learners."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from peergrid.agents import spaces
# The action box of agents.spaces (battery, bid share, reactive power, curtailment).
ACTION_LOW = torch.as_tensor(spaces.ACTION_LOW)
ACTION_HIGH = torch.as_tensor(spaces.ACTION_HIGH)


def mlp(n_in: int, hidden: list[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def initial_action_bias(squashed: bool) -> torch.Tensor:
    """Output bias that starts an actor at ``spaces.ACTION_NEUTRAL``.

    A Gaussian actor (PPO) whose action is clipped to the box: the neutral action, except
    that a component neutral at its lower bound (curtailment) starts half a unit below
    it, so that exploration noise rarely curtails. A squashed actor (MADDPG): the
    pre-tanh value that maps to the neutral action, kept off tanh's flat ends.
    """
    neutral = torch.as_tensor(spaces.ACTION_NEUTRAL)
    if not squashed:
        return torch.where(neutral <= ACTION_LOW, ACTION_LOW - 0.5, neutral)
    unit = 2.0 * (neutral - ACTION_LOW) / (ACTION_HIGH - ACTION_LOW) - 1.0
    return torch.atanh(unit.clamp(-0.96, 0.96))


def squash_to_box(u: torch.Tensor) -> torch.Tensor:
    """Map R^d to the action box with tanh (MADDPG's deterministic actors)."""
    t = torch.tanh(u)
    return ACTION_LOW + (t + 1.0) * 0.5 * (ACTION_HIGH - ACTION_LOW)


def clip_to_box(a: np.ndarray) -> np.ndarray:
    return np.clip(a, ACTION_LOW.numpy(), ACTION_HIGH.numpy()).astype(np.float32)


def flat_parameters(module: nn.Module) -> np.ndarray:
    return torch.nn.utils.parameters_to_vector(module.parameters()).detach().numpy().copy()


def load_flat_parameters(module: nn.Module, vector: np.ndarray) -> None:
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(
            torch.as_tensor(vector, dtype=torch.float32), module.parameters())
