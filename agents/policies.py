"""Reference policies without learning: the numbers learning must beat.

Each policy is built per agent from its spec and acts on the agent's observation
only (the same interface learners have), returning an action in ``agents.spaces``.

- ``nop2p``: battery idle, no P2P bids, inverters at unity power factor: today's
  grid-only household.
- ``selfconsume``: battery follows the household's own surplus/deficit, no P2P bids.
- ``rule``: the same battery rule, and the whole remaining position bid into the P2P
  market (charge on surplus, discharge on deficit, offer the rest).
- ``voltvar``: ``rule`` plus what utilities ask of inverters today (IEEE 1547-2018,
  category B defaults): the volt-var curve, settled by the grid operator with the power
  flow (``grid.inverters``; the scenario's agents get ``inverter_control = volt_var``,
  see ``INVERTER_CONTROL``), and the volt-watt curve, which limits active power above
  1.06 pu; volt-watt changes the metered energy, so it acts on the voltage broadcast
  after the previous round (the market clears before the grid solves).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from peergrid.agents.devices import feasible_range_kw
from peergrid.agents.names import REFERENCE_POLICIES  # noqa: F401  (re-exported)
from peergrid.agents.prosumer import ProsumerSpec
from peergrid.agents.spaces import ACTION_DIM, OBS
from peergrid.grid.inverters import volt_watt_pu

Policy = Callable[[np.ndarray], np.ndarray]


def _battery_kw(spec: ProsumerSpec, dt_h: float, obs: np.ndarray, curtail: float = 0.0
                ) -> float:
    """Battery power that absorbs surplus / covers deficit within what is feasible."""
    b = spec.battery
    if not b.present:
        return 0.0
    surplus_kw = float(obs[OBS["pv"]] * (1.0 - curtail) - obs[OBS["load"]]) * spec.p_ref_kw
    low, high = feasible_range_kw(b, float(obs[OBS["soc"]]), dt_h)
    return min(max(surplus_kw, low), high)


def _battery_fraction(spec: ProsumerSpec, battery_kw: float) -> float:
    b = spec.battery
    limit = b.charge_kw_max if battery_kw >= 0 else b.discharge_kw_max
    return battery_kw / limit if limit > 0 else 0.0


def _action(battery: float = 0.0, bid: float = 0.0, reactive: float = 0.0,
            curtail: float = 0.0) -> np.ndarray:
    return np.array([battery, bid, reactive, curtail], dtype=np.float32)


def volt_watt_curtail(spec: ProsumerSpec, obs: np.ndarray) -> float:
    """Share of the PV output the volt-watt curve curtails at the last observed voltage
    (the curve's limit is in pu of the PV system's active power rating, its kWp)."""
    pv_kw = float(obs[OBS["pv"]]) * spec.p_ref_kw
    vm = 1.0 + float(obs[OBS["last_dv"]]) / 10.0  # agents.spaces: (vm - 1) x 10
    p_max = float(volt_watt_pu(vm)) * spec.pv_kwp
    return max(pv_kw - p_max, 0.0) / pv_kw if pv_kw > 0 else 0.0


def make_policy(name: str, spec: ProsumerSpec, dt_h: float) -> Policy:
    """A reference policy by name for one agent."""
    if name == "nop2p":
        return lambda obs: np.zeros(ACTION_DIM, dtype=np.float32)
    if name in ("selfconsume", "rule"):
        bid = 1.0 if name == "rule" else 0.0
        return lambda obs: _action(_battery_fraction(spec, _battery_kw(spec, dt_h, obs)), bid)
    if name == "voltvar":
        def policy(obs: np.ndarray) -> np.ndarray:
            curtail = volt_watt_curtail(spec, obs)
            battery_kw = _battery_kw(spec, dt_h, obs, curtail)
            return _action(_battery_fraction(spec, battery_kw), 1.0, 0.0, curtail)
        return policy
    raise ValueError(f"policy = {name!r}: unknown (choose from {', '.join(REFERENCE_POLICIES)})")


INVERTER_CONTROL = {"voltvar": "volt_var"}
"""The inverter control a reference policy needs (the others keep the scenario's)."""
