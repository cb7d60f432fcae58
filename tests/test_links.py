"""The link fault model: reproducible from the seed, the configured statistics, partitions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peergrid.comms.links import LinkModel, Outbox, Partition
from peergrid.agents.seeding import stream


def link(sender: str = "a01", seed: int = 7, **faults) -> LinkModel:
    return LinkModel(sender, lambda u, v: stream(seed, f"link:{u}->{v}"), **faults)


def fates(model: LinkModel, receiver: str, n: int, global_round: int = 0) -> list:
    return [model.fate(receiver, global_round) for _ in range(n)]


@given(seed=st.integers(0, 2**32 - 1), drop=st.floats(0, 1), latency=st.floats(0, 500),
       jitter=st.floats(0, 200))
def test_the_same_seed_gives_the_same_fates(seed, drop, latency, jitter):
    faults = {"drop": drop, "latency_ms": latency, "jitter_ms": jitter}
    first = fates(link(seed=seed, **faults), "market", 20)
    assert first == fates(link(seed=seed, **faults), "market", 20)
    assert all(f is None or f >= 0.0 for f in first)  # jitter never makes a negative delay


def test_a_links_draws_do_not_depend_on_traffic_on_other_links():
    quiet = link(drop=0.3, latency_ms=50, jitter_ms=20)
    busy = link(drop=0.3, latency_ms=50, jitter_ms=20)
    fates(busy, "a02", 137)  # another receiver, another generator
    assert fates(quiet, "market", 50) == fates(busy, "market", 50)


def test_other_seeds_and_directions_draw_differently():
    base = fates(link(drop=0.5), "market", 64)
    assert base != fates(link(seed=8, drop=0.5), "market", 64)
    assert base != fates(link("market", drop=0.5), "a01", 64)


def test_drop_rate_and_latency_distribution_match_the_configuration():
    n = 20_000
    got = fates(link(drop=0.1, latency_ms=50, jitter_ms=20), "market", n)
    lost = sum(f is None for f in got)
    assert abs(lost - 0.1 * n) < 4 * np.sqrt(n * 0.1 * 0.9)  # 4 sigma of a binomial
    delays_ms = np.array([f for f in got if f is not None]) * 1e3
    assert delays_ms.mean() == pytest.approx(50, abs=1.0)
    assert delays_ms.std() == pytest.approx(20, abs=1.0)  # clipping at 0 is 2.5 sigma away


def test_no_faults_means_immediate_delivery():
    assert fates(link(), "market", 5) == [0.0] * 5


def test_a_partition_cuts_both_directions_only_between_its_ends_and_only_in_its_window():
    cut = [Partition("a01", "market", 3, 5)]
    forward, backward, other = (link("a01", partitions=cut), link("market", partitions=cut),
                                link("a02", partitions=cut))
    for k in range(10):
        inside = 3 <= k <= 5
        assert (forward.fate("market", k) is None) == inside, k
        assert (backward.fate("a01", k) is None) == inside, k
        assert forward.fate("grid", k) == 0.0
        assert other.fate("market", k) == 0.0


def test_a_partition_does_not_shift_the_draws_after_it():
    """Inside the window the draw is still made, so the fates after it are the same
    as in a run without the partition."""
    faults = {"drop": 0.2, "latency_ms": 30, "jitter_ms": 10}
    plain = link(**faults)
    cut = link(partitions=[Partition("a01", "market", 2, 4)], **faults)
    before = [(plain.fate("market", k), cut.fate("market", k)) for k in range(8)]
    assert all(p == c for k, (p, c) in enumerate(before) if not 2 <= k <= 4)
    assert all(c is None for k, (_, c) in enumerate(before) if 2 <= k <= 4)


def test_the_outbox_counts_and_delays_what_it_sends():
    sent: list[bytes] = []
    box = Outbox(link(drop=0.5, latency_ms=5))
    results = [box.send("market", bytes([i]), 0, sent.append) for i in range(40)]
    st_ = box.stats["market"]
    assert st_.sent == sum(results) and st_.dropped == 40 - sum(results)
    assert st_.sent_bytes == st_.sent and sent == []  # all delayed by 5 ms
    import time

    time.sleep(0.01)
    assert box.flush() is None
    assert sent == [bytes([i]) for i, ok in enumerate(results) if ok]  # in order
