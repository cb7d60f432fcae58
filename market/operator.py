"""The market-operator actor: one round's bids in, clearing and settlements out.

Timing is an input: the operator is told which bids arrived. An agent whose bid is
missing trades its metered position with the grid only (its settlement says so).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peergrid.market.bid import Bid
from peergrid.market.errors import MarketInputError
from peergrid.market.sdr import Clearing, Tariff
from peergrid.market.settlement import Settlement, check_positions, clear_and_settle


@dataclass(frozen=True)
class MarketResult:
    round_index: int
    clearing: Clearing
    settlements: dict[str, Settlement]

    @property
    def net_import_kwh(self) -> float:
        """The community's net grid import over the agents that traded (> 0 import)."""
        return math.fsum(s.grid_import_kwh - s.grid_export_kwh for s in self.settlements.values())


class MarketOperator:
    """Clears rounds against an hourly tariff (24 retail and feed-in prices)."""

    def __init__(self, retail_by_hour: Sequence[float], feed_in_by_hour: Sequence[float]) -> None:
        if len(retail_by_hour) != 24 or len(feed_in_by_hour) != 24:
            raise MarketInputError("tariff", (len(retail_by_hour), len(feed_in_by_hour)),
                                   "needs 24 hourly prices each")
        self.tariffs = [Tariff(r, f) for r, f in zip(retail_by_hour, feed_in_by_hour, strict=True)]

    def tariff(self, hour: int) -> Tariff:
        return self.tariffs[hour % 24]

    def close_round(self, round_index: int, hour: int, bids: Mapping[str, Bid]) -> MarketResult:
        """Clear the bids that arrived for ``round_index``."""
        for agent, bid in bids.items():
            if bid.agent != agent:
                raise MarketInputError(f"bids[{agent}].agent", bid.agent, "does not match its key")
            if bid.round_index != round_index:
                raise MarketInputError(f"bids[{agent}].round_index", bid.round_index,
                                       f"expected {round_index}")
        clearing, settlements = clear_and_settle(
            {a: b.bid_kwh for a, b in bids.items()},
            {a: b.surplus_kwh for a, b in bids.items()},
            self.tariff(hour),
        )
        return MarketResult(round_index=round_index, clearing=clearing, settlements=settlements)


def bid_problem(bid: Bid, max_kwh: float = math.inf) -> str | None:
    """Why the market cannot clear ``bid`` (None: it can): the same rules the clearing
    enforces, for one agent at a time, so one bad bid is refused and the round goes on;
    ``max_kwh`` bounds the metered position by what the agent's devices can deliver."""
    try:
        check_positions({bid.agent: bid.bid_kwh}, {bid.agent: bid.surplus_kwh})
    except MarketInputError as err:
        return str(err)
    for name in ("q_kvar", "volt_var_kva", "q_max_kvar"):
        v = getattr(bid, name)
        if not math.isfinite(v):
            return f"bids[{bid.agent}].{name} = {v!r}: must be a finite number"
    if abs(bid.surplus_kwh) > max_kwh:
        return (f"bids[{bid.agent}].surplus_kwh = {bid.surplus_kwh!r}: more than its devices "
                f"can deliver ({max_kwh:.6g} kWh)")
    return None


def market_row(key: dict[str, Any], market: MarketResult) -> dict[str, Any]:
    """The market.jsonl row of one round."""
    c = market.clearing
    return {
        **key, "tsp_kwh": c.tsp_kwh, "tbp_kwh": c.tbp_kwh, "sdr": c.sdr,
        "p2p_kwh": c.p2p_kwh, "sell_price": c.sell_price_per_kwh,
        "buy_price": c.buy_price_per_kwh,
        "retail_price": c.tariff.retail_price_per_kwh,
        "feed_in_price": c.tariff.feed_in_price_per_kwh,
    }
