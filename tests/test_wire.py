"""The wire format: round trips, and garbage is refused with a reason, never a crash."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peergrid.comms.wire import KINDS, Header, WireError, decode, encode

H = Header("ieee13_v1", 0, 5, "a01", "bid")
BID = {"bus": "634", "bid_kwh": 1.5, "surplus_kwh": 2.0, "q_kvar": 0.3, "volt_var_kva": 0.0,
       "q_max_kvar": 12.0}


def test_round_trip_keeps_header_and_body():
    header, body = decode(encode(H, BID), "ieee13_v1")
    assert header == H and body == BID


def test_arrays_round_trip_exactly():
    params = np.random.default_rng(0).standard_normal(4417).astype(np.float32)
    h = Header("s", 2, -1, "a03", "critic")
    _, body = decode(encode(h, {"update": 3, "step": 1, "params": params}))
    assert body["params"].dtype == np.float32 and np.array_equal(body["params"], params)


def test_foreign_scenario_and_wrong_version_are_refused():
    with pytest.raises(WireError, match="foreign"):
        decode(encode(H, BID), "other")
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
    data = msgpack.packb([1, "s", 0, 0, "a01", "critic", {"update": 0, "step": 0, "params": bad}])
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
    assert header.kind in KINDS and set(checked) == set(KINDS[header.kind])
