"""Household devices: a battery with limits and efficiencies, and the inverters that
connect PV and battery to the grid (pure dynamics).

Sign convention for battery power: ``battery_kw > 0`` charges (the battery draws
from the household bus), ``battery_kw < 0`` discharges. State of charge ``soc`` is a
fraction of usable capacity. An infeasible request is clipped to the feasible range
and the clipped amount is returned, so it can be logged and penalised.

Inverters: the PV inverter and the battery inverter each have an apparent-power rating
S; next to its active power P each can supply reactive power up to sqrt(S² − P²),
injected (raises the local voltage) or absorbed (lowers it); the PV inverter only while
the sun is up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BatterySpec:
    """Physical limits of one battery. capacity_kwh = 0 means no battery."""

    capacity_kwh: float = 0.0
    charge_kw_max: float = 0.0
    discharge_kw_max: float = 0.0
    eta_charge: float = 0.95
    """Fraction of charging energy that reaches storage."""
    eta_discharge: float = 0.95
    """Fraction of stored energy that reaches the bus when discharging."""
    soc_min: float = 0.1
    soc_max: float = 0.9
    soc_init: float = 0.5

    @property
    def present(self) -> bool:
        return self.capacity_kwh > 0 and (self.charge_kw_max > 0 or self.discharge_kw_max > 0)


@dataclass(frozen=True)
class BatteryStep:
    """Outcome of one round of battery operation."""

    battery_kw: float
    """Power actually applied (after clipping)."""
    clip_kw: float
    """requested − applied: how far the request was infeasible."""
    soc: float
    """State of charge at the end of the round."""


def feasible_range_kw(spec: BatterySpec, soc: float, dt_h: float) -> tuple[float, float]:
    """(most negative, most positive) battery power feasible for one round."""
    if not spec.present:
        return 0.0, 0.0
    headroom_kwh = max(spec.soc_max - soc, 0.0) * spec.capacity_kwh
    stored_kwh = max(soc - spec.soc_min, 0.0) * spec.capacity_kwh
    charge_max = min(spec.charge_kw_max, headroom_kwh / (spec.eta_charge * dt_h))
    discharge_max = min(spec.discharge_kw_max, stored_kwh * spec.eta_discharge / dt_h)
    return -discharge_max, charge_max


def step_battery(spec: BatterySpec, soc: float, requested_kw: float, dt_h: float) -> BatteryStep:
    """Apply a power request for ``dt_h`` hours; clip it to what the battery can do."""
    low, high = feasible_range_kw(spec, soc, dt_h)
    applied = min(max(requested_kw, low), high)
    if not spec.present:
        return BatteryStep(battery_kw=0.0, clip_kw=requested_kw, soc=soc)
    if applied >= 0:
        stored_delta_kwh = applied * dt_h * spec.eta_charge
    else:
        stored_delta_kwh = applied * dt_h / spec.eta_discharge
    new_soc = soc + stored_delta_kwh / spec.capacity_kwh
    # Clamp float noise at the bounds (the range above already keeps it inside); a
    # battery that starts outside its band is never pushed further out.
    new_soc = min(max(new_soc, min(spec.soc_min, soc)), max(spec.soc_max, soc))
    return BatteryStep(battery_kw=applied, clip_kw=requested_kw - applied, soc=new_soc)


@dataclass(frozen=True)
class InverterSpec:
    """Apparent-power ratings of the PV inverter and the battery inverter (0: none)."""

    pv_kva: float = 0.0
    battery_kva: float = 0.0


PV_INVERTER_ONLINE_PU = 0.05
"""A PV inverter supplies reactive power only while the sun gives it at least this share
of its rating (IEEE 1547-2018 asks for reactive capability from 5 % of rated active
power for category B); at night it is off, a battery inverter is not."""


def reactive_capability_kvar(inverter: InverterSpec, pv_available_kw: float, pv_out_kw: float,
                             battery_kw: float) -> float:
    """Largest |Q| the inverters can supply next to their active power: sqrt(S² − P²)
    each, the PV inverter only while it is online (``PV_INVERTER_ONLINE_PU``)."""
    def headroom(s_kva: float, p_kw: float) -> float:
        return math.sqrt(max(s_kva * s_kva - p_kw * p_kw, 0.0))

    pv_online = inverter.pv_kva > 0 and pv_available_kw >= PV_INVERTER_ONLINE_PU * inverter.pv_kva
    return ((headroom(inverter.pv_kva, pv_out_kw) if pv_online else 0.0)
            + headroom(inverter.battery_kva, battery_kw))
