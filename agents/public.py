"""The public state: what every agent knows of a round, in one layout for all.

Zhang et al.'s critics and team-reward estimators read the global state and the joint
action. No peergrid agent sees the others' loads, batteries or actions; what they all
see alike is public: the time and the tariff, the market's clearing (SDR, P2P prices,
total offers and requests, the community's net import) and the grid's broadcast (every
node's voltage, the highest line loading, whether the power flow converged). The
networked learner's critic reads the public state before a round, its team-reward
estimator that state and the round's public outcome (the joint action's footprint).
Every agent builds these vectors from the same messages with the functions below, so at
a given round they are the same vector for every agent, and averaging the parameters of
functions of them averages across agents (docs/learning.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from peergrid.agents.spaces import OBS_BOUND, squash_sdr


@dataclass(frozen=True)
class MarketOutcome:
    """The market's public result of a round."""

    sdr: float
    sell_price_per_kwh: float
    buy_price_per_kwh: float
    tsp_kwh: float
    """Total offered."""
    tbp_kwh: float
    """Total requested."""
    net_import_kwh: float
    """The community's net grid import (> 0 import) over the agents that traded."""


@dataclass(frozen=True)
class GridOutcome:
    """The grid operator's public broadcast of a round."""

    vm_pu: tuple[float, ...]
    """Every node's voltage, in the feeder's node order (NaN if not converged)."""
    max_line_loading_pct: float
    converged: bool


@dataclass(frozen=True)
class PublicOutcome:
    market: MarketOutcome
    grid: GridOutcome

    def as_dict(self) -> dict:
        return {"market": asdict(self.market), "grid": {**asdict(self.grid),
                                                         "vm_pu": list(self.grid.vm_pu)}}

    @staticmethod
    def from_dict(d: dict) -> PublicOutcome:
        grid = {**d["grid"], "vm_pu": tuple(d["grid"]["vm_pu"])}
        return PublicOutcome(MarketOutcome(**d["market"]), GridOutcome(**grid))

    def updated(self, market: MarketOutcome | None = None,
                grid: GridOutcome | None = None) -> PublicOutcome:
        """This outcome with the parts that were heard replaced (an agent that missed a
        message keeps the last part it knew)."""
        return PublicOutcome(market or self.market, grid or self.grid)


@dataclass(frozen=True)
class PublicScale:
    """Units every agent normalises the public signals by (from the scenario alone)."""

    price_ref: float
    """Highest retail price, currency/kWh."""
    energy_ref_kwh: float
    """The community's size: the sum of the agents' ratings x the round length."""


def initial_outcome(n_nodes: int, retail: float, feed_in: float, slack_vm_pu: float
                    ) -> PublicOutcome:
    """What is known before the first round: nothing traded, every node at the slack."""
    return PublicOutcome(MarketOutcome(1.0, feed_in, retail, 0.0, 0.0, 0.0),
                         GridOutcome((slack_vm_pu,) * n_nodes, 0.0, True))


def outcome_features(o: PublicOutcome, scale: PublicScale) -> np.ndarray:
    """The outcome as numbers: SDR squashed to [0, 1], P2P prices / price_ref, offers,
    requests and net import / energy_ref, converged (0/1), highest loading / 100, and
    (vm - 1) x 10 per node (0 for a failed power flow)."""
    m, g = o.market, o.grid
    loading = g.max_line_loading_pct if math.isfinite(g.max_line_loading_pct) else 0.0
    vm = np.nan_to_num((np.asarray(g.vm_pu, dtype=float) - 1.0) * 10.0, nan=0.0)
    head = [squash_sdr(m.sdr), m.sell_price_per_kwh / scale.price_ref,
            m.buy_price_per_kwh / scale.price_ref, m.tsp_kwh / scale.energy_ref_kwh,
            m.tbp_kwh / scale.energy_ref_kwh, m.net_import_kwh / scale.energy_ref_kwh,
            float(g.converged), loading / 100.0]
    out = np.concatenate([np.nan_to_num(np.array(head, dtype=float)), vm])
    return np.clip(out, -OBS_BOUND, OBS_BOUND).astype(np.float32)


def public_state(hour: float, retail: float, feed_in: float, last: PublicOutcome,
                 scale: PublicScale) -> np.ndarray:
    """The public state before a round: hour of day (sin, cos), the round's tariff, and
    the previous round's outcome."""
    clock = np.array([math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
                      retail / scale.price_ref, feed_in / scale.price_ref], dtype=np.float32)
    return np.concatenate([clock, outcome_features(last, scale)])


def public_state_dim(n_nodes: int) -> int:
    return 4 + 8 + n_nodes


def estimator_input(state: np.ndarray, outcome: PublicOutcome, scale: PublicScale
                    ) -> np.ndarray:
    """What the team-reward estimator reads: the public state and the round's outcome."""
    return np.concatenate([state, outcome_features(outcome, scale)])
