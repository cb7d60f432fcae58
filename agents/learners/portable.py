"""A learner's state in a form that pickles fast: what a checkpoint saves.

A deployed learner checkpoints after every bid and every booked round. Pickling its
torch tensors went through torch's serialiser storage by storage, and its rollout (a
list of one small dict of arrays per round) array by array; together they cost more
than the round itself. Here tensors become numpy arrays and a list of same-shaped dicts
of arrays becomes one stacked array per key (a column), restored exactly. The arrays are
copies: a state taken now does not change when the learner trains on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class _Tensor:
    array: np.ndarray
    dtype: str


@dataclass(frozen=True)
class _Columns:
    kind: type
    columns: dict[str, np.ndarray]


def _columnar(items: list | tuple) -> bool:
    """A non-empty list of dicts with the same keys whose values are arrays of one
    shape and dtype per key."""
    if not items or not all(isinstance(x, dict) for x in items):
        return False
    first = items[0]
    if not all(isinstance(v, np.ndarray) for v in first.values()):
        return False
    return all(x.keys() == first.keys() and all(
        isinstance(x[k], np.ndarray) and x[k].shape == v.shape and x[k].dtype == v.dtype
        for k, v in first.items()) for x in items)


def to_portable(state: Any) -> Any:
    if isinstance(state, (list, tuple)) and _columnar(state):
        return _Columns(type(state), {k: np.stack([x[k] for x in state])
                                      for k in state[0]})
    if isinstance(state, torch.Tensor):
        t = state.detach().cpu()
        return _Tensor(t.numpy().copy(), str(t.dtype).removeprefix("torch."))
    if isinstance(state, dict):
        return {k: to_portable(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(to_portable(v) for v in state)
    return state


def from_portable(state: Any) -> Any:
    if isinstance(state, _Columns):
        keys = list(state.columns)
        n = len(state.columns[keys[0]])
        return state.kind({k: state.columns[k][i].copy() for k in keys} for i in range(n))
    if isinstance(state, _Tensor):
        return torch.from_numpy(state.array.copy()).to(getattr(torch, state.dtype))
    if isinstance(state, dict):
        return {k: from_portable(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(from_portable(v) for v in state)
    return state
