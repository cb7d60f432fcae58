"""Per-agent settlement of a cleared SDR round.

Each agent arrives with its metered net position for the round (``surplus_kwh``:
> 0 energy to export, < 0 energy to import) and a bid of the same sign and no larger
magnitude. The bid is what it offers to the P2P market; the rest of its position
goes to the grid at the tariff.

Allocation (Liu et al. 2017):
- SDR < 1: sellers sell their whole offer P2P at P_sell; each buyer gets the share
  SDR of its request from peers at P_sell and the rest from the grid at λ_buy, which
  averages to P_buy over the request.
- SDR >= 1: buyers get their whole request from peers at P_sell = λ_sell; each seller
  sells the share 1/SDR of its offer P2P, the rest is exported at λ_sell.

Invariants (tested): community P2P sold = P2P bought; for every agent,
export − import = surplus; nobody pays more than trading its position with the grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from peergrid.market.errors import MarketInputError
from peergrid.market.sdr import Clearing, Tariff, check_bids, clear

# Relative slack allowed between a bid and the position it is drawn from (float noise).
_BID_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Settlement:
    """What one agent traded and paid in one round."""

    p2p_bought_kwh: float
    p2p_sold_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float
    buy_price_per_kwh: float
    sell_price_per_kwh: float
    sdr: float
    payment: float
    """Net payment for the round (currency; > 0 the agent pays, < 0 it earns)."""
    grid_only_payment: float
    """What the same position would have cost trading only with the grid."""


def grid_only_payment(surplus_kwh: float, tariff: Tariff) -> float:
    """Payment for a position traded entirely with the grid (the no-P2P baseline)."""
    if surplus_kwh >= 0:
        return -surplus_kwh * tariff.feed_in_price_per_kwh
    return -surplus_kwh * tariff.retail_price_per_kwh


def grid_only_settlement(surplus_kwh: float, tariff: Tariff, sdr: float) -> Settlement:
    """A position traded entirely with the grid (no bid reached the clearing)."""
    pay = grid_only_payment(surplus_kwh, tariff)
    return Settlement(
        p2p_bought_kwh=0.0, p2p_sold_kwh=0.0,
        grid_import_kwh=max(-surplus_kwh, 0.0), grid_export_kwh=max(surplus_kwh, 0.0),
        buy_price_per_kwh=tariff.retail_price_per_kwh,
        sell_price_per_kwh=tariff.feed_in_price_per_kwh,
        sdr=sdr, payment=pay, grid_only_payment=pay,
    )


def check_positions(bids_kwh: Mapping[str, float], surplus_kwh: Mapping[str, float]) -> None:
    """Every bid must come from a known position, with the same sign and no more energy."""
    check_bids(bids_kwh)
    for agent, s in surplus_kwh.items():
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise MarketInputError(f"positions[{agent}].surplus_kwh", s, "must be a finite number")
    unknown = sorted(set(bids_kwh) - set(surplus_kwh))
    if unknown:
        raise MarketInputError("bids.agent", unknown[0], "unknown agent: no metered position")
    for agent, q in bids_kwh.items():
        s = surplus_kwh[agent]
        limit = abs(s) * (1 + _BID_TOLERANCE) + 1e-12
        if q != 0 and (q * s < 0 or abs(q) > limit):
            raise MarketInputError(
                f"bids[{agent}].bid_kwh",
                q,
                f"must have the sign of surplus_kwh = {s!r} and no larger magnitude",
            )


def settle_agent(clearing: Clearing, bid_kwh: float, surplus_kwh: float) -> Settlement:
    """Settle one agent against a market-wide clearing."""
    tariff = clearing.tariff
    sdr = clearing.sdr
    bid = bid_kwh
    bought = sold = 0.0
    if bid > 0:
        sold = bid if sdr <= 1 else bid * clearing.tbp_kwh / clearing.tsp_kwh
    elif bid < 0:
        bought = -bid if sdr >= 1 else -bid * sdr
    grid_export = max(surplus_kwh, 0.0) - sold
    grid_import = max(-surplus_kwh, 0.0) - bought
    payment = (
        bought * clearing.sell_price_per_kwh
        + grid_import * tariff.retail_price_per_kwh
        - sold * clearing.sell_price_per_kwh
        - grid_export * tariff.feed_in_price_per_kwh
    )
    return Settlement(
        p2p_bought_kwh=bought,
        p2p_sold_kwh=sold,
        grid_import_kwh=max(grid_import, 0.0),
        grid_export_kwh=max(grid_export, 0.0),
        buy_price_per_kwh=clearing.buy_price_per_kwh,
        sell_price_per_kwh=clearing.sell_price_per_kwh,
        sdr=sdr,
        payment=payment,
        grid_only_payment=grid_only_payment(surplus_kwh, tariff),
    )


def clear_and_settle(
    bids_kwh: Mapping[str, float],
    surplus_kwh: Mapping[str, float],
    tariff: Tariff,
) -> tuple[Clearing, dict[str, Settlement]]:
    """Clear the round and settle every agent with a metered position.

    Agents with a position and no bid (a missed deadline, or a policy that does not
    trade) trade their whole position with the grid.
    """
    check_positions(bids_kwh, surplus_kwh)
    # Trim float noise (within tolerance) so no agent sells energy it does not have.
    bids = {a: math.copysign(min(abs(q), abs(surplus_kwh[a])), q) for a, q in bids_kwh.items()}
    clearing = clear(bids, tariff)
    settlements = {
        agent: settle_agent(clearing, bids.get(agent, 0.0), s)
        for agent, s in surplus_kwh.items()
    }
    return clearing, settlements
