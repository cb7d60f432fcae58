"""The market operator's rounds as a state machine: the round clock of a deployment.

Per round ``k``:

1. mark down every node not heard for ``down_after_s`` (or crashed on purpose), and up
   again once it is heard;
2. ``round_start`` to every live prosumer (addressed to the incarnation the market
   knows, so a start queued for a dead process is stale to its successor);
3. collect bids until every live prosumer has bid (or been refused) or the bid deadline
   passes; halfway, the round start goes once more to whoever has not bid (a lost start,
   or a lost bid: the agent sends the same bid again); a bid the market cannot clear
   (``market.operator.bid_problem``) is refused with its reason and that agent trades
   with the grid only;
4. clear, enter the round in the ledger (comms.protocol.ledger), send each bidder its settlement
   and the grid the positions, write the market row, checkpoint;
5. wait up to half of ``signal_timeout_s`` for the bidders' and the grid's
   ``round_done``, sending the settlement (or the positions) once more halfway to
   whoever has not confirmed; then the next round. A round takes at most bid deadline +
   half a signal timeout (+ the learners' update allowance at a day's end), whatever is
   lost; a bidder that has not confirmed still books the round from the ledger.

A ``resend`` is answered from the ledger at any time. An injected crash (``kills``) is
sent as its round begins; before a round at which the crashed prosumer is to be back,
the market waits (bounded) for its ``hello``. At the end: ``stop`` to every node and the
ledger's unconfirmed entries as the ``ledger`` effect row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from peergrid.comms.protocol.ledger import MarketLedger
from peergrid.comms.messages import (BidMessage, Crash, Heartbeat, Hello, Message, Positions,
                                     Resend, RoundDone, RoundStart, Stop)
from peergrid.comms.protocol.effects import Effects
from peergrid.market.bid import Bid
from peergrid.market.operator import MarketOperator, bid_problem, market_row


@dataclass(frozen=True)
class Window:
    """The rounds of a deployment: global round k -> (day, round of the day), hour, time."""

    steps_per_day: int
    hours: Sequence[int]
    times: Sequence[str]

    @property
    def n_rounds(self) -> int:
        return len(self.times)

    def episode_round(self, k: int) -> tuple[int, int]:
        return k // self.steps_per_day, k % self.steps_per_day

    def key(self, k: int) -> dict[str, Any]:
        episode, rnd = self.episode_round(k)
        return {"episode": episode, "round": rnd, "time": self.times[k]}


@dataclass(frozen=True)
class MarketTiming:
    bid_deadline_s: float
    signal_timeout_s: float
    down_after_s: float
    day_end_allowance_s: float = 0.0
    """Extra wait for round_done at a day's end, while learners update."""
    hello_wait_s: float = 120.0
    restart_wait_s: float = 60.0


@dataclass
class MarketState:
    """Everything a restarted market needs (its checkpoint)."""

    next_k: int = 0
    ledger: MarketLedger | None = None
    incarnation: dict[str, int] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    down_rounds: dict[str, list[int]] = field(default_factory=dict)
    rows: int = 0
    """Rows of market.jsonl written (a restart truncates to this)."""


class MarketProtocol:
    def __init__(self, agents: Sequence[str], window: Window, operator: MarketOperator,
                 max_kwh: Mapping[str, float], timing: MarketTiming,
                 kills: Mapping[int, str] = {}, restarts: Mapping[int, str] = {},
                 state: MarketState | None = None) -> None:
        self.agents = list(agents)
        self.peers = [*self.agents, "grid"]
        self.window, self.operator, self.max_kwh, self.t = window, operator, max_kwh, timing
        self.kills, self.restarts = dict(kills), dict(restarts)
        self.resumed = state is not None
        self.s = state or MarketState(ledger=MarketLedger(self.agents),
                                      down_rounds={p: [] for p in self.peers})
        self.fx = Effects()
        self.phase = "hello"
        self.deadline = 0.0
        self.last_heard: dict[str, float] = {}
        self.started = 0.0
        self.finished = False
        self.k = self.s.next_k
        self._round: dict[str, Any] = {}

    # --- events -------------------------------------------------------------------
    def start(self, now: float) -> Effects:
        self.started = now
        if self.resumed:  # the nodes are running: no hellos to wait for
            self.last_heard = {p: now for p in self.peers}
            self.fx.log("resumed", from_round=self.s.next_k)
            if self.k < self.window.n_rounds:
                self._begin_round(now)
            else:
                self.phase, self.deadline = "drain", now + self.t.signal_timeout_s
        else:
            self.phase, self.deadline = "hello", now + self.t.hello_wait_s
        return self._advance(now)

    def on_message(self, now: float, sender: str, episode: int, rnd: int,
                   msg: Message) -> Effects:
        self.last_heard[sender] = now
        if isinstance(msg, Heartbeat):
            pass
        elif isinstance(msg, Hello):
            if msg.incarnation >= self.s.incarnation.get(sender, -1):
                self.s.incarnation[sender] = msg.incarnation
                self.s.killed.discard(sender)
            self.fx.log("hello", peer=sender, incarnation=msg.incarnation, pid=msg.pid,
                        next_k=msg.next_k)
        elif isinstance(msg, Resend) and sender in self.agents:
            self._answer(sender, msg, episode, rnd)
        elif isinstance(msg, BidMessage) and sender in self.agents:
            self._bid(sender, msg, episode, rnd)
        elif isinstance(msg, RoundDone) and sender in self.peers:
            if sender in self.agents:
                self.s.ledger.confirm(sender, msg.k)
            if self.phase == "confirm" and msg.k >= self.k:
                self._round["done"].add(sender)
        else:
            self.fx.log("late", peer=sender, kind=msg.kind, episode=episode, round=rnd)
        return self._advance(now)

    def on_tick(self, now: float) -> Effects:
        return self._advance(now)

    def next_due(self) -> float:
        if self.phase == "collect":
            return min(self.deadline, self._round["retry_at"])
        return self.deadline

    @property
    def current_round(self) -> int:
        return min(self.k, self.window.n_rounds - 1)

    def silent_for(self, peer: str, now: float) -> float:
        return now - self.last_heard.get(peer, self.started)

    # --- a round --------------------------------------------------------------------
    def _answer(self, sender: str, msg: Resend, episode: int, rnd: int) -> None:
        answer = self.s.ledger.answer(sender, msg.k, msg.surplus_kwh)
        if answer is None:  # not cleared yet: the settlement will follow the clearing
            self.fx.log("resend_early", peer=sender, k=msg.k, attempt=msg.attempt)
            return
        self.fx.log("resend", peer=sender, k=msg.k, attempt=msg.attempt, traded=answer.traded)
        self.fx.send(sender, answer, episode, rnd)

    def _bid(self, sender: str, msg: BidMessage, episode: int, rnd: int) -> None:
        r = self._round
        if self.phase != "collect" or msg.k != self.k:
            self.fx.log("late", peer=sender, kind=msg.kind, episode=episode, round=rnd)
            return
        if sender in r["bids"] or sender in r["refused"]:
            return  # the same bid again (a retry after the market restarted)
        bid = msg.to_bid(sender, self.window.episode_round(self.k)[1])
        problem = bid_problem(bid, self.max_kwh.get(sender, float("inf")))
        if problem is None:
            r["bids"][sender] = bid
        else:
            r["refused"][sender] = problem
            self.fx.log("bid_refused", peer=sender, k=self.k, reason=problem)

    def _mark_liveness(self, now: float) -> None:
        s = self.s
        for p in self.peers:
            silent = p in s.killed or self.silent_for(p, now) > self.t.down_after_s
            if silent and p not in s.down:
                s.down.add(p)
                self.fx.log("down", peer=p, k=self.k, silent_s=round(self.silent_for(p, now), 3))
            elif not silent and p in s.down:
                s.down.discard(p)
                self.fx.log("up", peer=p, k=self.k)
        for p in s.down:
            ks = s.down_rounds.setdefault(p, [])
            if not ks or ks[-1] != self.k:  # a round re-run after a restart counts once
                ks.append(self.k)

    def _begin_round(self, now: float) -> None:
        k = self.k
        episode, rnd = self.window.episode_round(k)
        self._round = {"t0": now, "bids": {}, "refused": {}, "done": set()}
        if k in self.kills and self.kills[k] not in self.s.killed:
            # the injected crash, as a control message no network fault can lose
            self.fx.send(self.kills[k], Crash(k), episode, rnd)
            self.s.killed.add(self.kills[k])
        agent = self.restarts.get(k)
        if agent is not None and agent in self.s.killed:
            self.phase, self.deadline = "restart_wait", now + self.t.restart_wait_s
            return
        self._open_bids(now)

    def _open_bids(self, now: float) -> None:
        k = self.k
        episode, rnd = self.window.episode_round(k)
        self._mark_liveness(now)
        live = [a for a in self.agents if a not in self.s.down]
        self._round["live"], self._round["t0"] = live, now  # the round's own time from here
        for a in live:
            self.fx.send(a, RoundStart(k, self.t.bid_deadline_s, self.s.incarnation.get(a, 0)),
                         episode, rnd)
        self.phase, self.deadline = "collect", now + self.t.bid_deadline_s
        self._round["retry_at"] = now + self.t.bid_deadline_s / 2

    def _clear(self, now: float) -> None:
        k, r, s = self.k, self._round, self.s
        episode, rnd = self.window.episode_round(k)
        bids: dict[str, Bid] = r["bids"]
        result = self.operator.close_round(rnd, int(self.window.hours[k]), bids)
        r["settlements"] = s.ledger.book(k, result)
        for a, msg in r["settlements"].items():
            self.fx.send(a, msg, episode, rnd)
        r["positions"] = Positions(
            k, {a: b.surplus_kwh for a, b in bids.items()},
            {a: b.q_kvar for a, b in bids.items()},
            {a: b.volt_var_kva for a, b in bids.items()},
            {a: b.q_max_kvar for a, b in bids.items()}, {a: b.bus for a, b in bids.items()})
        self.fx.send("grid", r["positions"], episode, rnd)
        missing = sorted(set(self.agents) - set(bids))
        self.fx.write("market.jsonl", {**market_row(self.window.key(k), result),
                                       "bids_missing": missing, "bids_refused": r["refused"],
                                       "down": sorted(s.down)})
        s.rows += 1
        s.next_k = k + 1
        self.fx.checkpoint = s  # a market restarted from here answers for round k
        # a bidder books the round from its settlement (asking again if it is lost); the
        # wait below only keeps the rounds in step, and has one bound whatever is lost
        r["waiting"] = {*bids, *(["grid"] if "grid" not in s.down else [])}
        day_end = rnd == self.window.steps_per_day - 1
        # half a signal timeout: time enough for the answers of a healthy round; a
        # bidder that has not confirmed by then still gets its settlement when it asks
        wait = self.t.signal_timeout_s / 2 + (self.t.day_end_allowance_s if day_end else 0.0)
        r["t_clear"], r["retried"] = now, False
        self.phase, self.deadline = "confirm", now + wait / 2
        r["wait"] = wait

    def _end_round(self, now: float) -> None:
        k, r = self.k, self._round
        episode, rnd = self.window.episode_round(k)
        self.fx.log("round", k=k, episode=episode, round=rnd, bids=len(r["bids"]),
                    bids_missing=sorted(set(self.agents) - set(r["bids"])),
                    refused=sorted(r["refused"]), down=sorted(self.s.down),
                    round_done_missing=sorted(r["waiting"] - r["done"]),
                    duration_s=round(now - r["t0"], 4))
        self.k += 1
        if self.k < self.window.n_rounds:
            self._begin_round(now)
            return
        # before stopping, a last chance for whoever still asks for a settlement
        self.phase, self.deadline = "drain", now + self.t.signal_timeout_s

    def _owed(self) -> list[str]:
        """Live agents that have not confirmed the last round (one whose bid was lost
        is still asking for its grid-only answer)."""
        last = self.window.n_rounds - 1
        return [a for a in self.agents
                if a not in self.s.down and self.s.ledger.confirmed.get(a, -1) < last]

    def _finish(self) -> None:
        for p in self.peers:
            self.fx.send(p, Stop())
        ledger = self.s.ledger
        self.fx.write("ledger", {a: {str(j): ledger.open[a][j].fields()
                                     for j in ledger.unconfirmed(a)} for a in self.agents})
        self.fx.log("end", down_rounds={p: ks for p, ks in self.s.down_rounds.items() if ks})
        self.phase, self.finished, self.deadline = "finished", True, float("inf")

    def _advance(self, now: float) -> Effects:
        """Move through every phase whose condition (or deadline) is met."""
        while not self.finished:
            r = self._round
            if self.phase == "hello":
                if all(p in self.s.incarnation for p in self.peers) or now >= self.deadline:
                    missing = [p for p in self.peers if p not in self.s.incarnation]
                    if missing:
                        self.fx.log("start_without", peers=missing)
                    self._begin_round(now)
                    continue
            elif self.phase == "restart_wait":
                agent = self.restarts[self.k]
                if agent not in self.s.killed or now >= self.deadline:
                    self.fx.log("restart_wait", agent=agent, arrived=agent not in self.s.killed,
                                waited_s=round(now - r["t0"], 4))
                    self._open_bids(now)
                    continue
            elif self.phase == "collect":
                answered = set(r["bids"]) | set(r["refused"])
                if set(r["live"]) <= answered or now >= self.deadline:
                    self._clear(now)
                    continue
                if now >= r["retry_at"]:  # once, halfway: the round start (or the bid) lost?
                    episode, rnd = self.window.episode_round(self.k)
                    for a in r["live"]:
                        if a not in answered:
                            self.fx.send(a, RoundStart(self.k, self.deadline - now,
                                                       self.s.incarnation.get(a, 0)),
                                         episode, rnd)
                    r["retry_at"] = float("inf")
                    continue
            elif self.phase == "drain":
                if not self._owed() or now >= self.deadline:
                    self._finish()
                    continue
            elif self.phase == "confirm":
                if r["waiting"] <= r["done"]:
                    self._end_round(now)
                    continue
                if now >= self.deadline and not r["retried"]:
                    episode, rnd = self.window.episode_round(self.k)
                    for a in sorted(r["waiting"] - r["done"]):  # once more, to the silent
                        msg = r["positions"] if a == "grid" else r["settlements"][a]
                        self.fx.send(a, msg, episode, rnd)
                    r["retried"] = True
                    self.deadline = r["t_clear"] + r["wait"]
                    continue
                if now >= self.deadline:
                    self._end_round(now)
                    continue
            break
        return self.fx.take()
