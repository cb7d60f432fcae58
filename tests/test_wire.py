"""The wire format: round trips, and garbage is refused with a reason, never a crash."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peergrid.comms.messages import KINDS, BidMessage, Critic, SettlementMessage
from peergrid.comms.wire import Header, WireError, decode, encode

H = Header("ieee13_v1", 0, 5, "a01", "bid")
BID_MSG = BidMessage(5, "634", 1.5, 2.0, 0.3, 0.0, 12.0)
BID = BID_MSG.fields()


def test_round_trip_keeps_header_and_body():
    header, msg = decode(encode(H, BID_MSG), "ieee13_v1")
    assert header == H and msg == BID_MSG


def test_arrays_round_trip_exactly():
    params = np.random.default_rng(0).standard_normal(4417).astype(np.float32)
    h = Header("s", 2, -1, "a03", "critic")
    _, msg = decode(encode(h, Critic(3, 1, "abc", params)))
    assert msg.params.dtype == np.float32 and np.array_equal(msg.params, params)


def test_every_kind_round_trips_and_its_checks_come_from_its_class():
    import dataclasses
    import typing

    samples = {int: 3, float: 1.25, str: "634", bool: True, np.ndarray: np.arange(3.0),
               dict[str, float]: {"a01": 0.5}, dict[str, str]: {"a01": "634"}}
    for kind, cls in KINDS.items():
        hints = typing.get_type_hints(cls)
        msg = cls(**{f.name: samples[hints[f.name]] for f in dataclasses.fields(cls)})
        header, back = decode(encode(Header("s", 0, 1, "a01", kind), msg))
        assert header.kind == kind and type(back) is cls
        assert all(np.array_equal(getattr(back, f.name), getattr(msg, f.name))
                   for f in dataclasses.fields(cls))


def test_non_finite_numbers_are_refused_except_where_the_class_allows_them():
    nan, inf = float("nan"), float("inf")
    with pytest.raises(WireError, match="bid.bid_kwh = nan: not finite"):
        decode(msgpack.packb([1, "s", 0, 0, "a01", "bid", {**BID, "bid_kwh": nan}]))
    with pytest.raises(WireError, match="not finite"):
        decode(msgpack.packb([1, "s", 0, 0, "a01", "bid", {**BID, "surplus_kwh": -inf}]))
    with pytest.raises(WireError, match="beyond any quantity"):
        decode(msgpack.packb([1, "s", 0, 0, "a01", "bid", {**BID, "q_kvar": 1e300}]))
    grid_only = {f.name: 0.0 for f in dataclasses.fields(SettlementMessage)}
    grid_only.update(k=1, traded=False, sdr=nan, tsp_kwh=nan, tbp_kwh=nan, net_import_kwh=nan)
    _, msg = decode(msgpack.packb([1, "s", 0, 1, "market", "settlement", grid_only]))
    assert np.isnan(msg.sdr) and msg.traded is False


def test_foreign_scenario_and_wrong_version_are_refused():
    with pytest.raises(WireError, match="foreign"):
        decode(encode(H, BID_MSG), "other")
    data = msgpack.packb([99, "ieee13_v1", 0, 0, "x", "bid", BID])
    with pytest.raises(WireError, match="version"):
        decode(data)


@pytest.mark.parametrize("body, reason", [
    ({**BID, "bid_kwh": "1"}, "bid.bid_kwh"),
    ({**BID, "extra": 1}, "unexpected"),
    ({k: v for k, v in BID.items() if k != "bus"}, "missing"),
    ({**BID, "q_kvar": True}, "not a number"),
])
def test_bad_bodies_name_the_field(body, reason):
    data = msgpack.packb([1, "s", 0, 0, "a01", "bid", body])
    with pytest.raises(WireError, match=reason):
        decode(data)


def test_arrays_that_lie_about_their_size_are_refused():
    bad = {"dtype": "<f4", "shape": [10], "data": b"\x00" * 8}
    empty = {"dtype": "<f4", "shape": [0], "data": b""}
    data = msgpack.packb([1, "s", 0, 0, "a01", "critic",
                          {"update": 0, "step": 0, "layout": "x", "params": bad,
                           "codec": "float32", "scales": empty, "index": empty,
                           "keyframe": -1}])
    with pytest.raises(WireError, match="do not fill"):
        decode(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        decode(data)
    except WireError:
        pass


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=8),
                  st.binary(max_size=16))
_value = st.recursive(_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                 st.dictionaries(st.text(max_size=6), c, max_size=4)),
                      max_leaves=12)


@settings(max_examples=500, deadline=None)
@given(version=st.sampled_from([1, 1, 2, "1"]), kind=st.sampled_from([*KINDS, "nope", 3]),
       episode=st.one_of(st.integers(-3, 5), st.text(max_size=3)), body=_value)
def test_well_formed_msgpack_with_wrong_content_is_refused_with_a_reason(version, kind, episode,
                                                                         body):
    data = msgpack.packb([version, "s", episode, 0, "a01", kind, body], use_bin_type=True)
    try:
        header, checked = decode(data)
    except WireError as err:
        assert str(err)
        return
    assert header.kind in KINDS and type(checked) is KINDS[header.kind]


@settings(max_examples=200, deadline=None)
@given(n=st.sampled_from([0, 1, 100, 255, 256, 16383, 16384, 70000]),
       dtype=st.sampled_from([np.float32, np.float16, np.int8]),
       update=st.integers(0, 2**40), step=st.integers(0, 300),
       scales=st.integers(0, 300), keyframe=st.integers(-1, 2**20))
def test_the_size_accounted_for_a_critic_is_its_encoding_length(n, dtype, update, step,
                                                                 scales, keyframe):
    from peergrid.comms.wire import encoded_size

    msg = Critic(update, step, "layout", np.ones(n, dtype), "int8",
                 np.ones(scales, np.float32), np.arange(n % 300, dtype=np.int32), keyframe)
    header = Header("ieee13_v3", update, step, "a01", "critic")
    assert encoded_size(header, msg) == len(encode(header, msg))
