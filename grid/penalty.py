"""Voltage- and line-limit penalties: what the grid charges, and who pays which share.

The paper adds a (fictitious) penalty to the agents' rewards when the feeder leaves its
limits. Each violation is charged once per round and split among the agents that can
be held to account for it:

* **voltage**: at each electrical node (a bus, or buses fused by a closed switch,
  ``FeederTopology.bus_groups``), the worst phase's excursion above ``vm_max_pu``
  (over) and below ``vm_min_pu`` (under), times ``voltage_penalty_per_pu``, charged to
  the node's payers (``FeederTopology.voltage_payers``): the agents at it; at a node
  without agents, the agents downstream of it; at a dead end without agents, those
  downstream of its nearest upstream node. Over-voltage is shared among them in
  proportion to their export, under-voltage in proportion to their import (the
  injections that push the voltage that way); if none of them injects in that
  direction, equally among them.
* **line**: on each line, the worst conductor's loading above 100 % (in pu of the
  rating) times ``line_penalty_per_pu``, shared among the agents downstream of the line
  (whose power flows through it on a radial feeder) in proportion to their export if
  the flow is towards the source, to their import otherwise; equally if none does.

``scope = "feeder"`` instead splits the feeder's total voltage and line penalty equally
among all agents. A power flow that did not converge (the injections are more than the
feeder can carry: voltage collapse) is charged as one full pu out of limits, once,
split equally among all agents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def violation_pu(vm_pu: np.ndarray | float, vm_min_pu: float, vm_max_pu: float) -> np.ndarray:
    """How far each voltage lies outside [vm_min, vm_max] (0 inside), pu."""
    vm = np.asarray(vm_pu, dtype=float)
    return np.maximum(vm - vm_max_pu, 0.0) + np.maximum(vm_min_pu - vm, 0.0)


def observed_voltage(vm_by_node: Mapping[str, float], nodes: Sequence[str],
                     vm_min_pu: float, vm_max_pu: float) -> float:
    """The voltage an agent sees at its connection: of its phases, the one farthest
    from the middle of the band (the phase closest to, or furthest beyond, a limit)."""
    mid = 0.5 * (vm_min_pu + vm_max_pu)
    values = [vm_by_node[n] for n in nodes]
    if not all(np.isfinite(values)):
        return float("nan")
    return float(max(values, key=lambda v: abs(v - mid)))


@dataclass(frozen=True)
class PenaltyRule:
    vm_min_pu: float
    vm_max_pu: float
    voltage_penalty_per_pu: float
    line_penalty_per_pu: float
    scope: str = "bus"

    def __post_init__(self) -> None:
        if self.scope not in ("bus", "feeder"):
            raise ValueError(f"penalty_scope = {self.scope!r}: must be 'bus' or 'feeder'")


@dataclass(frozen=True)
class Penalties:
    """One round's charges per agent (currency) and what could not be allocated."""

    voltage: dict[str, float]
    line: dict[str, float]
    voltage_unallocated: float = 0.0
    line_unallocated: float = 0.0


def share(amount: float, weights: Mapping[str, float]) -> dict[str, float]:
    """``amount`` split in proportion to non-negative ``weights``; equally if all are 0."""
    total = sum(weights.values())
    if total > 0:
        return {a: amount * (w / total) for a, w in weights.items()}  # subnormal-safe
    return {a: amount / len(weights) for a in weights}


def bus_violations(vm_by_node: Mapping[str, float], node_bus: Mapping[str, str],
                   vm_min_pu: float, vm_max_pu: float) -> dict[str, tuple[float, float]]:
    """(over, under) in pu per bus: its worst phase above the upper and below the lower
    limit."""
    out: dict[str, tuple[float, float]] = {}
    for node, vm in vm_by_node.items():
        bus = node_bus[node]
        over, under = out.get(bus, (0.0, 0.0))
        out[bus] = (max(over, vm - vm_max_pu, 0.0), max(under, vm_min_pu - vm, 0.0))
    return out


def allocate(rule: PenaltyRule, vm_by_node: Mapping[str, float], node_bus: Mapping[str, str],
             loading_pct: Mapping[str, float], downstream: Mapping[str, frozenset[str]],
             agent_bus: Mapping[str, str], export_kw: Mapping[str, float],
             converged: bool = True,
             payers: Mapping[str, Sequence[str]] | None = None) -> Penalties:
    """Each agent's voltage and line penalty for one round.

    ``node_bus`` maps each node to its electrical node (bus or fused buses), ``payers``
    each electrical node to the agents charged for its violations (default: the agents
    whose bus it is; a node without payers is reported as unallocated).
    ``loading_pct`` and ``downstream`` are keyed by line name; ``export_kw`` is each
    agent's net injection at its meter (> 0 export, < 0 import).
    """
    agents = list(agent_bus)
    zero = {a: 0.0 for a in agents}
    if not converged:  # a collapsed feeder: one full pu, once, shared by everyone
        return Penalties({a: rule.voltage_penalty_per_pu / len(agents) for a in agents},
                         dict(zero))
    exports = {a: max(export_kw[a], 0.0) for a in agents}
    imports = {a: max(-export_kw[a], 0.0) for a in agents}
    if payers is None:
        at_bus: dict[str, list[str]] = {}
        for a, b in agent_bus.items():
            at_bus.setdefault(b, []).append(a)
        payers = at_bus

    voltage, v_lost = dict(zero), 0.0
    for bus, (over, under) in bus_violations(vm_by_node, node_bus, rule.vm_min_pu,
                                             rule.vm_max_pu).items():
        for amount, weights in ((over, exports), (under, imports)):
            charge = rule.voltage_penalty_per_pu * amount
            if charge <= 0:
                continue
            members = payers.get(bus, [])
            if rule.scope == "feeder" or not members:
                v_lost += charge
                continue
            for a, x in share(charge, {a: weights[a] for a in members}).items():
                voltage[a] += x

    line, l_lost = dict(zero), 0.0
    for name, pct in loading_pct.items():
        charge = rule.line_penalty_per_pu * max(pct / 100.0 - 1.0, 0.0)
        if not charge > 0:
            continue
        members = [a for a in agents if agent_bus[a] in downstream[name]]
        if rule.scope == "feeder" or not members:
            l_lost += charge
            continue
        reverse = sum(export_kw[a] for a in members) > 0
        weights = exports if reverse else imports
        for a, x in share(charge, {a: weights[a] for a in members}).items():
            line[a] += x

    if rule.scope == "feeder":  # the feeder's total, equally
        return Penalties({a: v_lost / len(agents) for a in agents},
                         {a: l_lost / len(agents) for a in agents})
    return Penalties(voltage, line, v_lost, l_lost)
