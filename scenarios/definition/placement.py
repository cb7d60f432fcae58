"""Place agents on a feeder's load buses by a documented, seeded rule.

With a ``[placement]`` section instead of ``[[agents]]`` a scenario runs on any
feeder: one agent per load bus (or ``count`` of them on a seeded sample of load
buses), each standing for the load the feeder's own data put there:

* ``load_peak_kw`` = ``load_scale`` × the bus's base load (the feeder designer's
  peak), power factor from the base load's P and Q; ``load_scale = "design_peak"``
  scales every agent alike so that the community's coincident peak over every window
  the scenario uses (training, validation, test) equals the feeder's design load (the
  sum of its base loads): household profiles are normalised to their annual peak, so
  without it a summer community is a fraction of the load the feeder was built for,
  and calibrating on one window alone overloads the others;
* ``load_profile`` drawn uniformly from ``load_profiles``;
* a ``pv_share`` of the agents (seeded) get PV of ``pv_kwp_per_peak_kw`` × peak with a
  profile drawn from ``pv_profiles``; a ``battery_share`` of those PV agents get a
  battery of ``battery_kwh_per_peak_kw`` × peak kWh at ``battery_c_rate``.

All draws come from the scenario seed's "placement" stream.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from peergrid.grid.feeders import base_loads
from peergrid.scenarios.definition import profiles
from peergrid.scenarios.definition.schema import AgentConfig, PlacementConfig
from peergrid.agents.seeding import stream


Window = tuple[dt.date, int]
"""(first day, days)."""


def community_peak_kw(agents: list[AgentConfig], windows: list[Window], step_min: int
                      ) -> float:
    """The community's highest coincident round load over the windows."""
    peaks = []
    for start, days in windows:
        total = sum(a.load_peak_kw * profiles.window(
            profiles.load_factor(a.load_profile, step_min), start, days) for a in agents)
        peaks.append(float(np.max(total)))  # NaN propagates to the caller's check
    return max(peaks)


def design_peak_scale(agents: list[AgentConfig], design_kw: float, windows: list[Window],
                      step_min: int) -> float:
    """The factor on every agent's load that makes the community's coincident peak round
    load over the windows equal ``design_kw``."""
    peak = community_peak_kw(agents, windows, step_min)
    if not (math.isfinite(peak) and peak > 0):
        raise ValueError(f"load_scale = 'design_peak': the community's peak load over "
                         f"{windows} is {peak}; cannot scale it to {design_kw} kW")
    return design_kw / peak


def place_agents(feeder: str, rule: PlacementConfig, seed: int, windows: list[Window],
                 step_min: int) -> list[AgentConfig]:
    loads = base_loads(feeder)
    buses = [b for b, (p_kw, _) in loads.items() if p_kw > 0]
    n = len(buses) if rule.count is None else rule.count
    if n > len(buses):
        raise ValueError(f"count = {n}: feeder {feeder!r} has only {len(buses)} load buses")
    rng = stream(seed, "placement")
    if n < len(buses):
        keep = set(rng.choice(len(buses), size=n, replace=False).tolist())
        buses = [b for i, b in enumerate(buses) if i in keep]
    has_pv = rng.random(n) < rule.pv_share
    has_battery = has_pv & (rng.random(n) < rule.battery_share)
    load_pick = rng.integers(len(rule.load_profiles), size=n)
    pv_pick = rng.integers(len(rule.pv_profiles), size=n)
    width = max(2, len(str(n)))
    agents = []
    for i, bus in enumerate(buses):
        p_kw, q_kvar = loads[bus]
        peak_kw = (1.0 if rule.load_scale == "design_peak" else rule.load_scale) * p_kw
        battery_kwh = rule.battery_kwh_per_peak_kw * peak_kw if has_battery[i] else 0.0
        agents.append(AgentConfig(
            id=f"a{i + 1:0{width}d}", bus=bus,
            load_profile=rule.load_profiles[load_pick[i]],
            load_peak_kw=round(peak_kw, 6),
            power_factor=round(p_kw / math.hypot(p_kw, q_kvar), 6),
            pv_profile=rule.pv_profiles[pv_pick[i]] if has_pv[i] else None,
            pv_kwp=round(rule.pv_kwp_per_peak_kw * peak_kw, 6) if has_pv[i] else 0.0,
            battery_kwh=round(battery_kwh, 6),
            battery_kw=round(rule.battery_c_rate * battery_kwh, 6),
        ))
    if rule.load_scale != "design_peak":
        return agents
    scale = design_peak_scale(agents, sum(p for p, _ in loads.values()), windows, step_min)
    return [a.model_copy(update={
        k: round(getattr(a, k) * scale, 6) for k in
        ("load_peak_kw", "pv_kwp", "battery_kwh", "battery_kw", "pv_inverter_kva",
         "battery_inverter_kva")}) for a in agents]
