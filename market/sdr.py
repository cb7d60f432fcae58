"""Supply-demand-ratio (SDR) clearing of a quantity-only P2P market.

Liu et al. (2017), used by Feng & Liu (arXiv 2401.13947): with total supply TSP and
total demand TBP offered into the market in one round,

    SDR = TSP / TBP
    P_sell = λ_buy·λ_sell / ((λ_buy − λ_sell)·SDR + λ_sell)   if 0 ≤ SDR < 1, else λ_sell
    P_buy  = P_sell·SDR + λ_buy·(1 − SDR)                       if 0 ≤ SDR < 1, else λ_sell

λ_buy is the retail price, λ_sell the feed-in tariff. Both prices are continuous at
SDR = 1 (they meet at λ_sell) and stay inside [λ_sell, λ_buy].

Edge cases, made explicit (the limits of the formulas):
- no buyers, some sellers: SDR = +inf, both prices λ_sell, no P2P energy;
- no sellers, some buyers: SDR = 0, both prices λ_buy, no P2P energy;
- nobody offers anything: SDR is reported as 1.0 (balanced: nothing to trade) and
  both prices as λ_sell, the common value of the two branches at SDR = 1.

Bids are *signed quantities* (kWh for the round): positive = energy offered for sale,
negative = energy requested. Sums use ``math.fsum`` so the result is exactly
independent of the order in which agents are listed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from peergrid.market.errors import MarketInputError


@dataclass(frozen=True)
class Tariff:
    """Grid prices for one round, currency per kWh."""

    retail_price_per_kwh: float
    """λ_buy: what the grid charges for imported energy."""
    feed_in_price_per_kwh: float
    """λ_sell: what the grid pays for exported energy; must be below retail."""

    def __post_init__(self) -> None:
        for name in ("retail_price_per_kwh", "feed_in_price_per_kwh"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise MarketInputError(f"tariff.{name}", value, "must be a finite number")
            if value < 0:
                raise MarketInputError(f"tariff.{name}", value, "must be >= 0")
        if self.feed_in_price_per_kwh >= self.retail_price_per_kwh:
            raise MarketInputError(
                "tariff.feed_in_price_per_kwh",
                self.feed_in_price_per_kwh,
                f"must be below tariff.retail_price_per_kwh = {self.retail_price_per_kwh!r}",
            )


@dataclass(frozen=True)
class Clearing:
    """Market-wide result of one round."""

    tsp_kwh: float
    """Total sell offers (TSP)."""
    tbp_kwh: float
    """Total buy requests (TBP)."""
    sdr: float
    """Supply-demand ratio TSP/TBP (+inf with sellers and no buyers; 1.0 with nobody)."""
    sell_price_per_kwh: float
    """P_sell: price sellers receive for P2P energy."""
    buy_price_per_kwh: float
    """P_buy: average price buyers pay for their requested energy (P2P + grid share)."""
    p2p_kwh: float
    """Energy traded peer to peer: min(TSP, TBP)."""
    tariff: Tariff


def supply_demand_ratio(tsp_kwh: float, tbp_kwh: float) -> float:
    """SDR with the no-buyer / no-trader conventions of this module."""
    if tbp_kwh > 0:
        return tsp_kwh / tbp_kwh
    return math.inf if tsp_kwh > 0 else 1.0


def p2p_prices(sdr: float, tariff: Tariff) -> tuple[float, float]:
    """(P_sell, P_buy) for a given SDR, the paper's piecewise formulas."""
    if math.isnan(sdr) or sdr < 0:
        raise MarketInputError("sdr", sdr, "must be >= 0")
    lam_buy = tariff.retail_price_per_kwh
    lam_sell = tariff.feed_in_price_per_kwh
    if sdr >= 1:
        return lam_sell, lam_sell
    p_sell = lam_buy * lam_sell / ((lam_buy - lam_sell) * sdr + lam_sell) if lam_sell > 0 else (
        lam_buy if sdr == 0 else 0.0
    )
    p_buy = p_sell * sdr + lam_buy * (1 - sdr)
    # Rounding can leave a price one ulp outside the band; the band is the contract.
    return min(max(p_sell, lam_sell), lam_buy), min(max(p_buy, lam_sell), lam_buy)


def check_bids(bids_kwh: Mapping[str, float]) -> None:
    """Reject NaN/inf bids and non-string agent ids, naming the agent."""
    for agent, q in bids_kwh.items():
        if not isinstance(agent, str) or not agent:
            raise MarketInputError("bids.agent", agent, "agent id must be a non-empty string")
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not math.isfinite(q):
            raise MarketInputError(f"bids[{agent}].bid_kwh", q, "must be a finite number")


def clear(bids_kwh: Mapping[str, float], tariff: Tariff) -> Clearing:
    """Clear one round from signed bids (kWh; > 0 sell, < 0 buy)."""
    check_bids(bids_kwh)
    tsp = math.fsum(q for q in bids_kwh.values() if q > 0)
    tbp = math.fsum(-q for q in bids_kwh.values() if q < 0)
    sdr = supply_demand_ratio(tsp, tbp)
    p_sell, p_buy = p2p_prices(sdr, tariff)
    return Clearing(
        tsp_kwh=tsp,
        tbp_kwh=tbp,
        sdr=sdr,
        sell_price_per_kwh=p_sell,
        buy_price_per_kwh=p_buy,
        p2p_kwh=min(tsp, tbp),
        tariff=tariff,
    )
