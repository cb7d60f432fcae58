"""Reference policies without learning: the numbers learning must beat.

Each policy is built per agent from its spec and acts on the agent's observation
only (the same interface learners have), returning an action in ``agents.spaces``.

- ``nop2p``: battery idle, no P2P bids: today's grid-only household.
- ``selfconsume``: battery follows the household's own surplus/deficit, no P2P bids.
- ``rule``: the same battery rule, and the whole remaining position bid into the P2P
  market (charge on surplus, discharge on deficit, offer the rest).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from peergrid.agents.devices import feasible_range_kw
from peergrid.agents.prosumer import ProsumerSpec

Policy = Callable[[np.ndarray], np.ndarray]


def _battery_follows_surplus(spec: ProsumerSpec, dt_h: float, obs: np.ndarray) -> float:
    """Battery fraction that absorbs surplus / covers deficit within what is feasible."""
    b = spec.battery
    if not b.present:
        return 0.0
    surplus_kw = float(obs[3] - obs[2]) * spec.p_ref_kw
    low, high = feasible_range_kw(b, float(obs[4]), dt_h)
    want_kw = min(max(surplus_kw, low), high)
    limit = b.charge_kw_max if want_kw >= 0 else b.discharge_kw_max
    return want_kw / limit if limit > 0 else 0.0


def make_policy(name: str, spec: ProsumerSpec, dt_h: float) -> Policy:
    """A reference policy by name for one agent."""
    if name == "nop2p":
        return lambda obs: np.zeros(2, dtype=np.float32)
    if name == "selfconsume":
        return lambda obs: np.array([_battery_follows_surplus(spec, dt_h, obs), 0.0], np.float32)
    if name == "rule":
        return lambda obs: np.array([_battery_follows_surplus(spec, dt_h, obs), 1.0], np.float32)
    raise ValueError(f"policy = {name!r}: unknown (choose from {', '.join(REFERENCE_POLICIES)})")


REFERENCE_POLICIES = ("nop2p", "selfconsume", "rule")
