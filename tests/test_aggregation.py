"""Robust aggregation of the neighbours' parameters: known answers and bounded influence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from peergrid.agents.aggregation import Aggregation
from peergrid.agents.poisoning import Attack, Liar
from peergrid.agents.topology import consensus_average

W = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}


def _v(*x: float) -> np.ndarray:
    return np.array(x, dtype=np.float64)


def test_known_answers():
    values = {"a": _v(0.0, 1.0), "b": _v(1.0, 2.0), "c": _v(100.0, -50.0)}
    np.testing.assert_array_equal(Aggregation("median").combine("a", values, W), [1.0, 1.0])
    np.testing.assert_array_equal(Aggregation("trimmed-mean").combine("a", values, W),
                                  [1.0, 1.0])  # three values, one dropped at each end
    np.testing.assert_array_equal(Aggregation("metropolis").combine("a", values, W),
                                  consensus_average("a", values, W))
    five = {k: _v(x) for k, x in zip("abcde", (0.0, 1.0, 2.0, 3.0, 1000.0), strict=True)}
    w5 = {k: 0.2 for k in five}
    assert Aggregation("trimmed-mean").combine("a", five, w5) == pytest.approx(2.0)
    assert Aggregation("trimmed-mean", trim=2).combine("a", five, w5) == pytest.approx(2.0)
    # clip: b's difference (100, 0) cut to the radius 0.1, then the Metropolis average
    got = Aggregation("clip", clip_radius=0.1).combine(
        "a", {"a": _v(1.0, 0.0), "b": _v(101.0, 0.0)}, {"a": 0.5, "b": 0.5})
    np.testing.assert_allclose(got, [1.05, 0.0])


@pytest.mark.parametrize("rule", ["trimmed-mean", "median"])
def test_too_few_values_keep_the_agents_own(rule):
    """One honest neighbour lost: what is left is the agent and the liar. The median of
    two would be their average, half the liar's."""
    got = Aggregation(rule).combine("a", {"a": _v(1.0, 1.0), "c": _v(1e6, -1e6)}, W)
    np.testing.assert_array_equal(got, [1.0, 1.0])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="choose from"):
        Aggregation("mean")
    with pytest.raises(ValueError, match="trim"):
        Aggregation("trimmed-mean", trim=0)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (3, 5), elements=finite), arrays(np.float64, 5, elements=finite),
       st.sampled_from(["median", "trimmed-mean"]))
def test_one_liar_among_three_stays_inside_the_honest_range(honest, lie, rule):
    """Own value, one honest neighbour... with two honest values and a liar, the trimmed
    mean and the median stay, coordinate by coordinate, between the honest values."""
    values = {"a": honest[0], "b": honest[1], "c": lie}
    got = Aggregation(rule).combine("a", values, W)
    lo, hi = np.minimum(honest[0], honest[1]), np.maximum(honest[0], honest[1])
    assert np.all(got >= lo - 1e-9) and np.all(got <= hi + 1e-9)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (3, 5), elements=finite), st.floats(0.01, 10.0))
def test_clipping_keeps_the_result_within_the_radius_of_ones_own(vs, radius):
    values = {"a": vs[0], "b": vs[1], "c": vs[2]}
    got = Aggregation("clip", clip_radius=radius).combine("a", values, W)
    assert np.linalg.norm(got - vs[0]) <= radius * (1 + 1e-9)


def test_the_liar_forges_as_told():
    v = _v(1.0, -2.0)
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(Liar(Attack("a", "scaled"), rng).forge(v), [100.0, -200.0])
    np.testing.assert_array_equal(Liar(Attack("a", "sign-flip"), rng).forge(v), [-1.0, 2.0])
    r1 = Liar(Attack("a", "random"), np.random.default_rng(3)).forge(v)
    r2 = Liar(Attack("a", "random"), np.random.default_rng(3)).forge(v)
    np.testing.assert_array_equal(r1, r2)  # from the seed alone
    with pytest.raises(ValueError, match="choose from"):
        Attack("a", "noise")
