"""One tensor operation for many agents' networks: a stack of same-shaped MLPs.

Agent i's layer k is the slice ``weights[k][i]`` (in × out) and ``biases[k][i]``; the
forward pass of all agents is one ``torch.baddbmm`` per layer on inputs shaped
(agents, batch, features). Agents never share parameters: a loss that sums per-agent
terms gives each slice exactly its own agent's gradient, and Adam is element-wise,
so a stack of n agents learns what n separate networks would. On 13 small networks
this removes most of the per-call overhead of torch on CPU (see bench/training.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


class StackedMLP(nn.Module):
    def __init__(self, modules: Sequence[nn.Sequential]) -> None:
        """Stack per-agent ``agents.learners.nets.mlp`` modules (copies their weights)."""
        super().__init__()
        per_agent = [[m for m in net if isinstance(m, nn.Linear)] for net in modules]
        n_layers = len(per_agent[0])
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([layers[k].weight.detach().T for layers in per_agent]))
            for k in range(n_layers))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([layers[k].bias.detach() for layers in per_agent])[:, None])
            for k in range(n_layers))

    @property
    def n_agents(self) -> int:
        return self.weights[0].shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(agents, batch, in) → (agents, batch, out)."""
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if k < last:
                x = torch.tanh(x)
        return x

    @property
    def agent_size(self) -> int:
        """Number of parameters of one agent's network (the length of ``agent_vector``)."""
        return sum(p[0].numel() for p in (*self.weights, *self.biases))

    def agent_vector(self, i: int) -> np.ndarray:
        """Agent i's parameters as one flat vector (layer by layer: weight, bias)."""
        parts = []
        for w, b in zip(self.weights, self.biases, strict=True):
            parts += [w[i].detach().reshape(-1), b[i].detach().reshape(-1)]
        return torch.cat(parts).numpy().copy()

    def set_agent_vector(self, i: int, vector: np.ndarray) -> None:
        v = torch.as_tensor(vector, dtype=torch.float32)
        pos = 0
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases, strict=True):
                for p in (w, b):
                    size = p[i].numel()
                    p[i].copy_(v[pos:pos + size].reshape(p[i].shape))
                    pos += size
        if pos != v.numel():
            raise ValueError(f"parameter vector has {v.numel()} values, the network {pos}")
