"""SDR clearing: the paper's known answers, edge cases and the market invariants."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peergrid.market.errors import MarketInputError
from peergrid.market.sdr import Tariff, clear, p2p_prices
from peergrid.market.settlement import clear_and_settle, grid_only_payment

TARIFF = Tariff(retail_price_per_kwh=0.20, feed_in_price_per_kwh=0.05)
TOL = 1e-9


def test_half_supplied_market_prices_match_hand_computation():
    # SDR = 0.5: P_sell = 0.2*0.05 / (0.15*0.5 + 0.05) = 0.08; P_buy = 0.08*0.5 + 0.2*0.5
    c = clear({"a": 2.0, "b": -4.0}, TARIFF)
    assert c.sdr == pytest.approx(0.5)
    assert c.sell_price_per_kwh == pytest.approx(0.08)
    assert c.buy_price_per_kwh == pytest.approx(0.14)
    assert c.p2p_kwh == pytest.approx(2.0)


def test_buyer_pays_p_buy_on_whole_request_when_sdr_below_one():
    _, s = clear_and_settle({"a": 2.0, "b": -4.0}, {"a": 2.0, "b": -4.0}, TARIFF)
    assert s["a"].p2p_sold_kwh == pytest.approx(2.0)
    assert s["a"].payment == pytest.approx(-0.16)
    assert s["b"].p2p_bought_kwh == pytest.approx(2.0)
    assert s["b"].grid_import_kwh == pytest.approx(2.0)
    assert s["b"].payment == pytest.approx(4.0 * 0.14)


def test_sdr_at_least_one_means_buyers_pay_feed_in():
    c, s = clear_and_settle({"a": 6.0, "b": -2.0, "c": -1.0}, {"a": 6.0, "b": -2.0, "c": -1.0}, TARIFF)
    assert c.sdr == pytest.approx(2.0)
    assert c.sell_price_per_kwh == c.buy_price_per_kwh == TARIFF.feed_in_price_per_kwh
    assert s["b"].p2p_bought_kwh == pytest.approx(2.0) and s["b"].grid_import_kwh == 0
    assert s["a"].p2p_sold_kwh == pytest.approx(3.0)
    assert s["a"].grid_export_kwh == pytest.approx(3.0)
    assert s["a"].payment == pytest.approx(-6.0 * 0.05)


def test_no_sellers_means_grid_retail_for_everyone():
    c, s = clear_and_settle({"b": -3.0}, {"b": -3.0}, TARIFF)
    assert c.sdr == 0 and c.p2p_kwh == 0
    assert c.sell_price_per_kwh == c.buy_price_per_kwh == TARIFF.retail_price_per_kwh
    assert s["b"].grid_import_kwh == 3.0 and s["b"].payment == pytest.approx(0.6)


def test_no_buyers_means_everything_exported_at_feed_in():
    c, s = clear_and_settle({"a": 3.0}, {"a": 3.0}, TARIFF)
    assert math.isinf(c.sdr) and c.p2p_kwh == 0
    assert c.sell_price_per_kwh == c.buy_price_per_kwh == TARIFF.feed_in_price_per_kwh
    assert s["a"].grid_export_kwh == 3.0 and s["a"].p2p_sold_kwh == 0


def test_nobody_trading_is_balanced_at_feed_in():
    c, s = clear_and_settle({}, {"a": 0.0, "b": 1.0}, TARIFF)
    assert c.sdr == 1.0 and c.p2p_kwh == 0
    assert c.sell_price_per_kwh == c.buy_price_per_kwh == TARIFF.feed_in_price_per_kwh
    assert s["b"].grid_export_kwh == 1.0 and s["a"].payment == 0


def test_missing_bid_trades_only_with_grid():
    _, s = clear_and_settle({"a": 2.0}, {"a": 2.0, "b": -4.0}, TARIFF)
    assert s["b"].p2p_bought_kwh == 0 and s["b"].grid_import_kwh == 4.0
    assert s["b"].payment == pytest.approx(grid_only_payment(-4.0, TARIFF))


def test_prices_are_continuous_at_sdr_one():
    below = p2p_prices(1 - 1e-12, TARIFF)
    assert below == pytest.approx(p2p_prices(1.0, TARIFF), abs=1e-9)


@pytest.mark.parametrize(
    ("bids", "positions", "field"),
    [
        ({"a": float("nan")}, {"a": 1.0}, "bids[a].bid_kwh"),
        ({"a": float("inf")}, {"a": 1.0}, "bids[a].bid_kwh"),
        ({"ghost": 1.0}, {"a": 1.0}, "bids.agent"),
        ({"a": 2.0}, {"a": 1.0}, "bids[a].bid_kwh"),
        ({"a": -1.0}, {"a": 1.0}, "bids[a].bid_kwh"),
        ({"a": 1.0}, {"a": float("nan")}, "positions[a].surplus_kwh"),
    ],
)
def test_bad_bids_name_the_field(bids, positions, field):
    with pytest.raises(MarketInputError) as err:
        clear_and_settle(bids, positions, TARIFF)
    assert err.value.field == field
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("retail", "feed_in", "field"),
    [
        (0.2, -0.01, "tariff.feed_in_price_per_kwh"),
        (-0.2, 0.01, "tariff.retail_price_per_kwh"),
        (0.1, 0.2, "tariff.feed_in_price_per_kwh"),
        (float("nan"), 0.01, "tariff.retail_price_per_kwh"),
    ],
)
def test_bad_tariff_names_the_field(retail, feed_in, field):
    with pytest.raises(MarketInputError) as err:
        Tariff(retail_price_per_kwh=retail, feed_in_price_per_kwh=feed_in)
    assert err.value.field == field


# ---- properties ---------------------------------------------------------------------

energy = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False, allow_infinity=False)
share = st.floats(min_value=0.0, max_value=1.0)


@st.composite
def markets(draw):
    """A tariff, metered positions and feasible bids (a share of each position)."""
    feed_in = draw(st.floats(min_value=0.0, max_value=0.5))
    retail = feed_in + draw(st.floats(min_value=1e-3, max_value=0.5))
    n = draw(st.integers(min_value=0, max_value=12))
    positions = {f"a{i}": draw(energy) for i in range(n)}
    bids = {a: s * draw(share) for a, s in positions.items() if draw(st.booleans())}
    return Tariff(retail, feed_in), bids, positions


@settings(max_examples=1000)
@given(markets())
def test_p2p_energy_sold_equals_bought(market):
    tariff, bids, positions = market
    _, s = clear_and_settle(bids, positions, tariff)
    sold = math.fsum(x.p2p_sold_kwh for x in s.values())
    bought = math.fsum(x.p2p_bought_kwh for x in s.values())
    assert sold == pytest.approx(bought, rel=TOL, abs=TOL)


@settings(max_examples=1000)
@given(markets())
def test_every_agent_balances_its_position(market):
    tariff, bids, positions = market
    _, s = clear_and_settle(bids, positions, tariff)
    for a, x in s.items():
        out = x.p2p_sold_kwh + x.grid_export_kwh - x.p2p_bought_kwh - x.grid_import_kwh
        assert out == pytest.approx(positions[a], rel=TOL, abs=TOL)
        assert min(x.p2p_sold_kwh, x.p2p_bought_kwh, x.grid_import_kwh, x.grid_export_kwh) >= 0


@settings(max_examples=1000)
@given(markets())
def test_prices_stay_between_feed_in_and_retail(market):
    tariff, bids, _ = market
    c = clear(bids, tariff)
    lo, hi = tariff.feed_in_price_per_kwh, tariff.retail_price_per_kwh
    assert lo <= c.sell_price_per_kwh <= hi
    assert lo <= c.buy_price_per_kwh <= hi
    assert c.sell_price_per_kwh <= c.buy_price_per_kwh + TOL


@settings(max_examples=1000)
@given(markets())
def test_nobody_pays_more_than_without_p2p(market):
    tariff, bids, positions = market
    _, s = clear_and_settle(bids, positions, tariff)
    for x in s.values():
        assert x.payment <= x.grid_only_payment + TOL


@settings(max_examples=1000)
@given(markets(), st.randoms(use_true_random=False))
def test_result_does_not_depend_on_agent_order(market, rnd: random.Random):
    tariff, bids, positions = market
    order = list(positions)
    rnd.shuffle(order)
    shuffled_pos = {a: positions[a] for a in order}
    shuffled_bids = {a: bids[a] for a in order if a in bids}
    c1, s1 = clear_and_settle(bids, positions, tariff)
    c2, s2 = clear_and_settle(shuffled_bids, shuffled_pos, tariff)
    assert c1 == c2
    assert s1 == s2
