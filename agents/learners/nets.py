"""Small torch networks shared by the learners."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Action box of agents.spaces: battery fraction in [-1, 1], bid share in [0, 1].
ACTION_LOW = torch.tensor([-1.0, 0.0])
ACTION_HIGH = torch.tensor([1.0, 1.0])


def mlp(n_in: int, hidden: list[int], n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def squash_to_box(u: torch.Tensor) -> torch.Tensor:
    """Map R^2 to the action box with tanh (MADDPG's deterministic actors)."""
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
