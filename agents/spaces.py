"""Observation and action layout shared by the env, policies and learners.

Observation (float32, local to one agent; powers in per unit of ``p_ref_kw`` =
max(load peak, PV kWp, battery kW) so agents of different sizes share one layout):

    0 sin(2π·hour/24)   1 cos(2π·hour/24)
    2 load_kw/p_ref     3 pv_kw/p_ref          4 soc (0 when no battery)
    5 retail price now / price_ref             6 feed-in price now / price_ref
    7 last P2P sell price / price_ref          8 last P2P buy price / price_ref
    9 last SDR squashed to sdr/(1+sdr) ∈ [0,1] 10 (last own-bus vm_pu − 1)·10

``price_ref`` is the highest retail price of the tariff. Prices and voltage are the
public signals of the previous round (the market and grid answer after acting).
``OBS_LOW``/``OBS_HIGH`` give each feature the range it can take (see there), so that a
library that scales observations by the space's bounds scales them by real ones.

Action (float32, every component clipped to the box):

    0 battery power as a fraction of its power limit, [-1, 1] (> 0 charges)
    1 share of the resulting net position bid into the P2P market, [0, 1]
    2 inverter reactive power as a fraction of what the inverters can supply next to
      their active power (sqrt(S² − P²) each), [-1, 1] (> 0 injects: raises voltage)
    3 share of the available PV output curtailed, [0, 1]

An agent without a battery, PV or inverter has actions that do nothing physically;
its box is the same, so every agent shares one layout.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

OBS_FEATURES = (
    "hour_sin", "hour_cos", "load", "pv", "soc", "retail_price", "feed_in_price",
    "last_sell_price", "last_buy_price", "last_sdr", "last_dv",
)
OBS_DIM = len(OBS_FEATURES)
OBS = {name: i for i, name in enumerate(OBS_FEATURES)}
"""Index of each observation feature, for code that reads one (reference policies)."""
ACTION_FEATURES = ("battery", "bid_share", "reactive", "curtail")
ACTION_DIM = len(ACTION_FEATURES)
ACTION_LOW = np.array([-1.0, 0.0, -1.0, 0.0], dtype=np.float32)
ACTION_HIGH = np.array([1.0, 1.0, 1.0, 1.0], dtype=np.float32)
ACTION_NEUTRAL = np.array([0.0, 0.5, 0.0, 0.0], dtype=np.float32)
"""Where learners start: battery idle, half the position bid, no reactive power, no
curtailment (not the middle of the box, which would curtail half of all PV)."""
OBS_BOUND = 10.0
"""Every observation and public-state feature is clipped to ±this (agents.prosumer,
agents.public): a last guard against a diverged power flow, not a feature's range."""

LOAD_FACTOR_MIN = -1.0
"""Lowest load / annual peak: a load profile is scaled to an annual maximum of 1
(scenarios.definition.profiles); SimBench's net-load profiles (hv_mixed*) dip below 0,
to -0.48 at worst, so the bound is -1 (the peak mirrored), not 0 (tested on every
shipped profile)."""

_OBS_RANGE = {
    "hour_sin": (-1.0, 1.0), "hour_cos": (-1.0, 1.0),
    # load_kw <= load_peak_kw <= p_ref_kw; pv_kw <= pv_kwp <= p_ref_kw (output per kWp
    # <= 1 in every SimBench PV profile, 0.63 at most)
    "load": (LOAD_FACTOR_MIN, 1.0), "pv": (0.0, 1.0),
    "soc": (0.0, 1.0),
    # tariff prices are >= 0 and price_ref is the highest retail price; P2P prices lie
    # between the hour's feed-in and retail prices (market.sdr.p2p_prices)
    "retail_price": (0.0, 1.0), "feed_in_price": (0.0, 1.0),
    "last_sell_price": (0.0, 1.0), "last_buy_price": (0.0, 1.0),
    "last_sdr": (0.0, 1.0),
    # vm_pu >= 0 gives -10; above, only the OBS_BOUND guard (a voltage of 2 pu is no
    # operating point, but a diverged solver must not leave the space). ±1 (±0.1 pu)
    # would be a typical range, not a bound: case33bw's far end is at 0.90 pu at its
    # nominal load, lower above it.
    "last_dv": (-OBS_BOUND, OBS_BOUND),
}
OBS_LOW = np.array([_OBS_RANGE[f][0] for f in OBS_FEATURES], dtype=np.float32)
OBS_HIGH = np.array([_OBS_RANGE[f][1] for f in OBS_FEATURES], dtype=np.float32)
"""Per-feature bounds of the observation: what each feature can take, derived from its
definition above (a hypothesis test drives random actions and checks them)."""


def observation_space() -> spaces.Box:
    return spaces.Box(low=OBS_LOW, high=OBS_HIGH, dtype=np.float32)


def public_state_space(n_nodes: int) -> spaces.Box:
    """Bounds of the public state (layout: ``agents.public.public_state``) of a feeder
    with ``n_nodes`` power-flow nodes.

    Offers, requests and net import are per ``energy_ref`` (the sum of the agents'
    ``p_ref_kw`` x the round length): an agent offers at most PV + a negative load +
    battery discharge, each <= its p_ref (3 in all), and asks at most load + battery
    charge (2). Line loading / 100 has no physical ceiling short of the ``OBS_BOUND``
    guard; node voltages are as the observation's ``last_dv``.
    """
    clock = [(-1.0, 1.0), (-1.0, 1.0), (0.0, 1.0), (0.0, 1.0)]  # hour sin, cos; tariff
    outcome = [(0.0, 1.0), (0.0, 1.0), (0.0, 1.0),  # SDR squashed, P2P sell, buy price
               (0.0, 3.0), (0.0, 2.0), (-3.0, 2.0),  # offered, requested, net import
               (0.0, 1.0), (0.0, OBS_BOUND)]  # converged, highest line loading / 100
    ranges = clock + outcome + [_OBS_RANGE["last_dv"]] * n_nodes
    low, high = (np.array(r, dtype=np.float32) for r in zip(*ranges, strict=True))
    return spaces.Box(low=low, high=high, dtype=np.float32)


def action_space() -> spaces.Box:
    return spaces.Box(low=ACTION_LOW, high=ACTION_HIGH, dtype=np.float32)


def squash_sdr(sdr: float) -> float:
    """Map SDR ∈ [0, inf] to [0, 1] (inf → 1)."""
    return 1.0 if sdr == float("inf") else sdr / (1.0 + sdr)
