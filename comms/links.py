"""Link models: what the network does to each message (delay, jitter, loss, partitions).

Every directed link (sender → receiver) draws from its own random generator, seeded
from the scenario seed and the two names, so a faulty run is reproducible and adding a
link never shifts another link's draws. For each message the link draws once: lost
with probability ``drop``, else delayed by max(0, latency + jitter · N(0, 1)); a link
inside a partition window loses everything (the draw is still made).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Partition:
    a: str
    b: str
    start_round: int
    end_round: int

    def cuts(self, u: str, v: str, global_round: int) -> bool:
        return {u, v} == {self.a, self.b} and self.start_round <= global_round <= self.end_round


@dataclass
class LinkStats:
    sent: int = 0
    sent_bytes: int = 0
    dropped: int = 0
    received: int = 0
    received_bytes: int = 0
    rejected: int = 0
    duplicates: int = 0
    latency_s: list[float] = field(default_factory=list)


class LinkModel:
    def __init__(self, sender: str, rng_for: Callable[[str, str], np.random.Generator],
                 latency_ms: float = 0.0, jitter_ms: float = 0.0, drop: float = 0.0,
                 partitions: Sequence[Partition] = ()) -> None:
        self.sender = sender
        self.latency_s, self.jitter_s, self.drop = latency_ms / 1e3, jitter_ms / 1e3, drop
        self.partitions = list(partitions)
        self._rng_for = rng_for
        self._rngs: dict[str, np.random.Generator] = {}

    @property
    def faulty(self) -> bool:
        return bool(self.latency_s or self.jitter_s or self.drop or self.partitions)

    def fate(self, receiver: str, global_round: int) -> float | None:
        """Delay in seconds for the next message to ``receiver``, or None if it is lost."""
        if not self.faulty:
            return 0.0
        rng = self._rngs.get(receiver)
        if rng is None:
            rng = self._rngs[receiver] = self._rng_for(self.sender, receiver)
        lost = rng.random() < self.drop
        delay = max(0.0, self.latency_s + self.jitter_s * rng.standard_normal())
        if lost or any(p.cuts(self.sender, receiver, global_round) for p in self.partitions):
            return None
        return delay


class Outbox:
    """Sends now or when a message's delay has passed; counts what each link carried."""

    def __init__(self, links: LinkModel) -> None:
        self.links = links
        self.stats: dict[str, LinkStats] = defaultdict(LinkStats)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def send(self, receiver: str, data: bytes, global_round: int,
             transmit: Callable[[bytes], object]) -> bool:
        """Queue ``data`` for ``receiver``; False when the link lost it."""
        st = self.stats[receiver]
        delay = self.links.fate(receiver, global_round)
        if delay is None:
            st.dropped += 1
            return False
        st.sent += 1
        st.sent_bytes += len(data)
        if delay == 0.0:
            transmit(data)
        else:
            heapq.heappush(self._queue, (time.monotonic() + delay, next(self._seq),
                                         lambda: transmit(data)))
        return True

    def flush(self) -> float | None:
        """Send what is due; seconds until the next queued message (None: nothing queued)."""
        now = time.monotonic()
        while self._queue and self._queue[0][0] <= now:
            heapq.heappop(self._queue)[2]()
        return max(self._queue[0][0] - now, 0.0) if self._queue else None
