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


def observation_space() -> spaces.Box:
    return spaces.Box(-OBS_BOUND, OBS_BOUND, shape=(OBS_DIM,), dtype=np.float32)


def action_space() -> spaces.Box:
    return spaces.Box(low=ACTION_LOW, high=ACTION_HIGH, dtype=np.float32)


def squash_sdr(sdr: float) -> float:
    """Map SDR ∈ [0, inf] to [0, 1] (inf → 1)."""
    return 1.0 if sdr == float("inf") else sdr / (1.0 + sdr)
