"""Voltage-limit violation and the penalty the paper adds to agents' rewards."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def violation_pu(vm_pu: np.ndarray | float, vm_min_pu: float, vm_max_pu: float) -> np.ndarray:
    """How far each voltage lies outside [vm_min, vm_max] (0 inside), pu."""
    vm = np.asarray(vm_pu, dtype=float)
    return np.maximum(vm - vm_max_pu, 0.0) + np.maximum(vm_min_pu - vm, 0.0)


def agent_penalties(
    vm_by_bus: Mapping[str, float],
    agent_bus: Mapping[str, str],
    vm_min_pu: float,
    vm_max_pu: float,
    penalty_per_pu: float,
    scope: str,
    converged: bool = True,
) -> dict[str, float]:
    """Penalty per agent for one round.

    scope "bus": each agent pays for the violation at its own bus (what its own meter
    sees). scope "feeder": the summed violation over all buses is shared equally.
    A power flow that did not converge costs every agent ``penalty_per_pu`` (as if
    one full pu out of limits): the grid could not carry the round's injections.
    """
    if not converged:
        return {a: penalty_per_pu for a in agent_bus}
    if scope == "bus":
        return {
            a: float(penalty_per_pu * violation_pu(vm_by_bus[b], vm_min_pu, vm_max_pu))
            for a, b in agent_bus.items()
        }
    if scope == "feeder":
        total = float(violation_pu(np.array(list(vm_by_bus.values())), vm_min_pu, vm_max_pu).sum())
        share = penalty_per_pu * total / max(len(agent_bus), 1)
        return {a: share for a in agent_bus}
    raise ValueError(f"penalty_scope = {scope!r}: must be 'bus' or 'feeder'")
