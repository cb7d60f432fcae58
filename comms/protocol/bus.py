"""Every node's protocol object in one process, on a virtual clock: the deployment's
behaviour without processes or sockets.

Messages are delivered in the order sent, ``latency_s`` after sending (per link FIFO, as
over TCP); heartbeats flow every ``heartbeat_s`` between the market and each live node.
Faults are injected by the caller: ``drop(sender, send)`` loses a message (not the
deployment's control messages, which bypass link faults as in comms.node), ``kill``
stops a node (what it had not checkpointed is lost, messages to it vanish), ``restart``
builds it again from its last checkpoint, as the launcher does, and each node can run on
its own clock (``skew_s``: a constant offset, which nothing may depend on). Rows are kept
per table; a restarted node's rows after its checkpoint are cut, as on disk.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from peergrid.agents import statefile
from peergrid.comms.messages import Heartbeat
from peergrid.comms.node import DuplicateWindow
from peergrid.comms.protocol.effects import Effects, Send

Drop = Callable[[str, Send], bool]


class LocalBus:
    def __init__(self, nodes: dict[str, Any], latency_s: float = 0.001,
                 heartbeat_s: float = 0.5, drop: Drop | None = None,
                 skew_s: dict[str, float] | None = None) -> None:
        self.nodes = dict(nodes)
        self.latency_s, self.heartbeat_s = latency_s, heartbeat_s
        self.drop = drop or (lambda sender, send: False)
        self.skew_s = skew_s or {}
        self.now = 0.0
        self.queue: list[tuple[float, int, str, str, Send]] = []
        self._seq = itertools.count()
        self.rows: dict[str, list[dict]] = {}
        self.events: dict[str, list[tuple[float, str, dict]]] = {n: [] for n in nodes}
        self.checkpoints: dict[str, tuple[bytes, dict[str, int]]] = {}
        self.owned: dict[str, set[str]] = {n: set() for n in nodes}
        self.sent: list[tuple[float, str, Send]] = []
        self.dead: set[str] = set()
        self._next_beat = 0.0
        # what a node's socket shell drops before its protocol sees it (comms.node)
        self.duplicates = {n: DuplicateWindow() for n in nodes}
        self.dropped_duplicates = 0

    def clock(self, name: str) -> float:
        return self.now + self.skew_s.get(name, 0.0)

    # --- faults -------------------------------------------------------------------
    def kill(self, name: str) -> None:
        self.dead.add(name)
        self.events[name].append((self.now, "killed_by_test", {}))

    def _duplicate(self, to: str, sender: str, s: Send) -> bool:
        node = self.nodes[to]
        key = (s.msg.kind, s.episode, s.round, sender)
        return not s.msg.repeatable and self.duplicates[to].seen(
            sender, getattr(node, "current_round", 0), key)

    def restart(self, name: str, build: Callable[[Any], Any]) -> Any:
        """``build(state)`` -> the node's new protocol object, from its last checkpoint
        (None if it never wrote one); started at once."""
        state = None
        if name in self.checkpoints:
            blob, counts = self.checkpoints[name]
            state = statefile.loads(blob)
            for table, n in counts.items():
                del self.rows.setdefault(table, [])[n:]
        proto = build(state)
        self.nodes[name] = proto
        self.duplicates[name] = DuplicateWindow()  # a new process, a new socket shell
        self.dead.discard(name)
        self._apply(name, proto.start(self.clock(name)))
        return proto

    # --- running ------------------------------------------------------------------
    def _apply(self, name: str, fx: Effects) -> None:
        for table, row in fx.rows:
            self.rows.setdefault(table, []).append(row)
            self.owned[name].add(table)
        if fx.checkpoint is not None:
            counts = {t: len(self.rows.get(t, [])) for t in self.owned[name]}
            self.checkpoints[name] = (statefile.dumps(fx.checkpoint), counts)
        for event, fields in fx.events:
            self.events[name].append((self.now, event, fields))
        for s in fx.sends:
            self.sent.append((self.now, name, s))
            if s.msg.control or not self.drop(name, s):  # tooling bypasses link faults
                heapq.heappush(self.queue, (self.now + self.latency_s, next(self._seq), name,
                                            s.to, s))
        if fx.die:
            self.kill(name)

    def _live(self) -> list[str]:
        return [n for n in self.nodes if n not in self.dead and not self.nodes[n].finished]

    def start(self) -> None:
        for name in ["grid", *(n for n in self.nodes if n not in ("grid", "market")), "market"]:
            if name in self.nodes:
                self._apply(name, self.nodes[name].start(self.clock(name)))

    def run(self, until_s: float = 1e6, stop: Callable[[], bool] | None = None) -> None:
        """Deliver and tick until the market has finished (or ``stop()``, or ``until_s``)."""
        while self.now < until_s and not (stop and stop()):
            market = self.nodes.get("market")
            if market is not None and market.finished and not self.queue:
                break
            dues = [(self.nodes[n].next_due() - self.skew_s.get(n, 0.0), n) for n in self._live()]
            t_due, who = min(dues) if dues else (float("inf"), "")
            t_msg = self.queue[0][0] if self.queue else float("inf")
            t_beat = self._next_beat
            t = min(t_due, t_msg, t_beat, until_s)
            self.now = max(self.now, t)
            if t == t_msg:
                _, _, sender, to, s = heapq.heappop(self.queue)
                if to in self.dead or to not in self.nodes or self.nodes[to].finished:
                    continue
                if self._duplicate(to, sender, s):
                    self.dropped_duplicates += 1
                    continue
                self._apply(to, self.nodes[to].on_message(self.clock(to), sender, s.episode,
                                                          s.round, s.msg))
            elif t == t_beat:
                self._next_beat = self.now + self.heartbeat_s
                live = self._live()
                if "market" in live:
                    for n in live:
                        if n != "market":
                            for a, b in (("market", n), (n, "market")):
                                heapq.heappush(self.queue, (
                                    self.now + self.latency_s, next(self._seq), a, b,
                                    Send(b, Heartbeat(0, 0.0))))
            elif t == t_due:
                self._apply(who, self.nodes[who].on_tick(self.clock(who)))
                if self.nodes[who].next_due() - self.skew_s.get(who, 0.0) <= t_due \
                        and not self.nodes[who].finished and who not in self.dead:
                    raise RuntimeError(f"{who} does not advance past t = {t_due}")

    def table(self, name: str) -> list[dict]:
        return self.rows.get(name, [])

    def log(self, node: str, event: str) -> list[dict]:
        return [f for _, e, f in self.events[node] if e == event]
