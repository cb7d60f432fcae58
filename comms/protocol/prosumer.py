"""One prosumer's side of the rounds: act on a round start, book on the answers.

Per round: on ``round_start`` observe, act, checkpoint, send the bid; on the settlement
and the grid signal, conclude the round (its record), and at a day's end update the
learner. Defined behaviour under faults (docs/deploy.md has the whole table):

* the settlement is the market's word (its ledger): a lost one is asked for again
  (``resend``, every ``resend_s``, for up to ``idle_exit_s``: the ledger survives a market
  restart); a bid that missed the clearing comes back as a grid-only settlement
  (``grid_only``) that carries the round's SDR. Only the budget spent makes the agent
  book the round without it (``no_settlement``, SDR unknown);
* no grid signal within ``signal_timeout_s`` of the settlement: the voltage is unknown
  (NaN, ``voltage_unknown``) and no penalty is charged (the grid's row has the round);
  the next observation keeps the last voltage heard;
* a ``round_start`` arriving while a round is open waits until that round is booked and
  is then acted on if its bid can still be in time (judged on this node's clock from
  when it arrived), else the round is booked grid-only (``missed_round_start``); a start
  for the open round itself (a restarted market re-running it) re-sends the bid;
* a ``round_start`` addressed to an earlier incarnation of this process (queued while it
  was down) or to a booked round is stale: logged, ignored;
* a round whose start never arrived (or that passed while the process was down) is
  booked with the battery idle, trading with the grid only (``no_round_start`` /
  ``down``): the records hold every round exactly once;
* a critic of another layout or length is refused with its reason and left out of the
  average, like one that never came.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from peergrid.agents.exchange import (Exchange, Receiver, Sender, Undecodable, consensus_index,
                                      segments_of)
from peergrid.agents.learners.consensus import update_steps
from peergrid.agents.learners.portable import from_portable, to_portable
from peergrid.agents.prosumer import Prosumer
from peergrid.agents.public import GridOutcome, MarketOutcome, PublicScale, estimator_input
from peergrid.agents.spaces import ACTION_DIM
from peergrid.agents.aggregation import Aggregation
from peergrid.comms.messages import (BidMessage, Crash, Critic, Heartbeat, Hello, Message,
                                     Resend, RoundDone, RoundStart, SettlementMessage, Stop,
                                     VoltageReport)
from peergrid.comms.protocol.effects import Effects
from peergrid.comms.protocol.market import Window
from peergrid.grid.penalty import observed_voltage
from peergrid.market.sdr import Tariff
from peergrid.market.settlement import grid_only_settlement


MIN_RESENDS = 50
"""The budget of asking for one settlement: as many requests as fit in ``idle_exit_s``
(the time after which a node gives up on its market), and at least this many. The
ledger answers every request that arrives and survives a market restart, so only a
market gone for good (or unreachable for that long) exhausts it, and the round is then
booked without it (``no_settlement``)."""


@dataclass(frozen=True)
class ProsumerTiming:
    signal_timeout_s: float
    consensus_timeout_s: float
    down_after_s: float
    idle_exit_s: float

    @property
    def resend_s(self) -> float:
        return self.signal_timeout_s / 4


@dataclass(frozen=True)
class Learning:
    """How a learning agent updates online (absent: a fixed policy)."""

    rollout_days: int
    epochs: int
    consensus_period: int
    neighbours: tuple[str, ...] = ()
    """Graph neighbours (consensus algorithms); empty: independent learning."""
    weights: dict[str, float] = field(default_factory=dict)
    """This agent's row of the consensus matrix, itself included."""
    layout: str = ""
    aggregation: Aggregation = field(default_factory=Aggregation)
    """How the neighbours' vectors are combined ([comms] aggregation)."""
    exchange: Exchange = field(default_factory=Exchange)
    """The exchange's fault schedule and encoding ([comms] codec, [comms.faults]): the
    in-process trainer's, message for message."""

    def step_of(self, update: int, epoch: int) -> int:
        """The run-wide consensus step after ``epoch`` of ``update``."""
        return consensus_index(update * self.epochs + epoch + 1, self.consensus_period)


@dataclass(frozen=True)
class Market:
    """What the agent knows of the market and the feeder before any round."""

    retail: Sequence[float]
    feed_in: Sequence[float]
    hour_frac: Sequence[float]
    scale: PublicScale
    nodes: Sequence[str]
    """The agent's own power-flow nodes."""
    all_nodes: Sequence[str]
    vm_min_pu: float
    vm_max_pu: float

    @property
    def price_ref(self) -> float:
        return max(self.retail)


@dataclass
class ProsumerState:
    """Everything a restarted process needs (its checkpoint)."""

    prosumer: Prosumer
    learner: Any = None
    """The learner's state_dict."""
    next_k: int = 0
    episodes: int = 0
    updates: int = 0
    open_round: dict[str, Any] | None = None
    rows: int = 0
    sender: Sender | None = None
    """The exchange's outgoing side (stale vectors, the last keyframe sent)."""
    receiver: Receiver | None = None
    """The exchange's incoming side (the keyframes heard)."""


class ProsumerProtocol:
    def __init__(self, agent_id: str, prosumer: Prosumer, act: Callable[[np.ndarray], np.ndarray],
                 window: Window, market: Market, timing: ProsumerTiming,
                 learner=None, learning: Learning | None = None, incarnation: int = 0,
                 state: ProsumerState | None = None, finish: bool = False, pid: int = 0) -> None:
        self.id, self.act, self.w, self.m, self.t = agent_id, act, window, market, timing
        self.pid = pid
        self.max_resends = max(MIN_RESENDS, int(timing.idle_exit_s / timing.resend_s))
        self.learner, self.learning = learner, learning
        self.incarnation, self.finish = incarnation, finish
        self.s = state or ProsumerState(prosumer)
        if state is not None and learner is not None and state.learner is not None:
            learner.load_state_dict(from_portable(state.learner))
        self.pending: dict[str, Any] | None = self.s.open_round
        self.resuming = state is not None
        self.fx = Effects()
        self.deferred: list[tuple[RoundStart, float]] = []
        self.critics: dict[tuple[int, int, str], Critic] = {}
        if learner is not None and learning is not None and learning.neighbours \
                and self.s.sender is None:
            segments = segments_of(learner.consensus_layout())
            self.s.sender = Sender(learning.exchange, segments)
            self.s.receiver = Receiver(segments, learning.exchange.codec)
        self.update: Any = None  # the running update (a generator), or None
        self.exchange: dict[str, Any] | None = None  # the consensus step being waited for
        self.after_update: Callable[[], None] | None = None
        self.heard_market = 0.0
        self.latest_start = -1
        self._snapshot: dict[str, Any] | None = None  # the learner at its last full save
        self.finished = False
        self.stopping = False  # told to stop: book what is left, learn no more
        self.exit_reason = ""

    @property
    def prosumer(self) -> Prosumer:
        return self.s.prosumer

    # --- events -------------------------------------------------------------------
    def start(self, now: float) -> Effects:
        self.heard_market = now
        if self.pending is not None:  # it had bid before dying: its settlement is owed
            self.pending["due"] = now
        self.fx.log("resumed" if self.resuming else "started", incarnation=self.incarnation,
                    from_round=self.s.next_k, finish=self.finish,
                    open_round=self.pending["k"] if self.pending else None)
        if self.finish:
            return self.fx.take()
        self.fx.send("market", Hello(self.pid, self.incarnation, self.s.next_k))
        return self._advance(now)

    def finish_from_ledger(self, owed: SettlementMessage | None, now: float) -> Effects:
        """The run is over and this agent was down at its end: book the open round from
        the market's ledger, the rest as down."""
        if self.pending is not None:
            if owed is not None:
                self.pending["settlement"] = owed
            self._conclude(now)
        while self.s.next_k < self.w.n_rounds:
            self._book_skipped(self.s.next_k, "down", now)
        self.finished, self.exit_reason = True, "finished"
        return self.fx.take()

    def on_message(self, now: float, sender: str, episode: int, rnd: int,
                   msg: Message) -> Effects:
        if sender == "market":
            self.heard_market = now
        if isinstance(msg, Heartbeat):
            pass
        elif isinstance(msg, Critic):
            self._on_critic(sender, msg)
        elif isinstance(msg, VoltageReport) and sender == "grid":
            missing = [n for n in self.m.all_nodes if n not in msg.vm_pu]
            if missing:  # not this feeder's: as if it never came
                self.fx.log("rejected", peer=sender, kind=msg.kind,
                            reason=f"vm_pu lacks {len(missing)} node(s), e.g. {missing[0]!r}")
            elif self.pending is not None and msg.k == self.pending["k"]:
                self.pending.setdefault("signal", msg)
        elif sender != "market":
            self.fx.log("unexpected", peer=sender, kind=msg.kind)
        elif isinstance(msg, SettlementMessage):
            self._on_settlement(msg, now, episode, rnd)
        elif isinstance(msg, RoundStart):
            self._on_round_start(msg, now)
        elif isinstance(msg, Crash):
            self.fx.log("killed", k=msg.k)
            self.fx.die = True
        elif isinstance(msg, Stop):
            self.stopping = True  # acted on once a running update has ended
        else:
            self.fx.log("unexpected", peer=sender, kind=msg.kind)
        return self._advance(now)

    def on_tick(self, now: float) -> Effects:
        return self._advance(now)

    @property
    def current_round(self) -> int:
        """The round the deployment is in as far as this agent knows (link faults that
        are scheduled by round use it): a start it has heard of counts even while it is
        still booking an earlier round."""
        if self.pending is not None:
            own = self.pending["k"]
        else:  # an update belongs to the day's last round, just booked
            own = self.s.next_k - (1 if self.update is not None else 0)
        return max(own, self.latest_start)

    def next_due(self) -> float:
        due = [self.heard_market + self.t.idle_exit_s]
        if self.exchange is not None:
            due.append(self.exchange["deadline"])
        elif self.pending is not None:
            due.append(self.pending["due"])
        elif self.deferred and self.update is None:
            due.append(self.heard_market)  # acted on at once
        return min(due)

    # --- messages -------------------------------------------------------------------
    def _on_critic(self, sender: str, msg: Critic) -> None:
        lg = self.learning
        if lg is None or sender not in lg.neighbours:
            self.fx.log("unexpected", peer=sender, kind=msg.kind)
        elif msg.layout != lg.layout:
            self.fx.log("rejected_critic", peer=sender, update=msg.update, step=msg.step,
                        reason=f"layout {msg.layout!r}, expected {lg.layout!r}")
        elif (0 <= msg.step < lg.epochs and 0 <= msg.update
              and not lg.exchange.arrives(sender, self.id, lg.step_of(msg.update, msg.step))):
            # the fault schedule loses it (the in-process trainer loses the same one): the
            # agent did not wait for it, so it may come after the step is done
            self.fx.log("lost_critic", peer=sender, update=msg.update, step=msg.step)
        elif msg.update != self.s.updates or not 0 <= msg.step < lg.epochs:
            # only the update this agent is in (or about to begin) can use it: anything
            # else would sit in the store and crowd out the critics that count
            self.fx.log("rejected_critic", peer=sender, update=msg.update, step=msg.step,
                        reason=f"not a step of update {self.s.updates}")
        elif len(self.critics) < lg.epochs * len(lg.neighbours):  # bounded: one per step
            self.critics[(msg.update, msg.step, sender)] = msg

    def _on_settlement(self, msg: SettlementMessage, now: float, episode: int, rnd: int) -> None:
        p = self.pending
        if p is not None and msg.k == p["k"]:
            if "settlement" not in p:
                p["settlement"] = msg
                p["latency_s"] = now - p["t0"]
                # the market has cleared: the grid's voltages follow within the timeout
                p["due"] = now + self.t.signal_timeout_s
        elif msg.k < self.s.next_k:  # our round_done was lost: confirm again
            self.fx.send("market", RoundDone(self.s.next_k - 1), episode, rnd)

    def _on_round_start(self, msg: RoundStart, now: float) -> None:
        p = self.pending
        self.latest_start = max(self.latest_start, msg.k)
        if msg.incarnation < self.incarnation:
            self.fx.log("stale_round_start", k=msg.k,
                        reason=f"sent to incarnation {msg.incarnation}")
        elif p is not None and msg.k == p["k"] and "settlement" not in p:
            # the market has not got the bid (it asks again, or a restarted market re-runs
            # the round): the same bid again
            self.fx.send("market", BidMessage.of(msg.k, p["bid"]), p["episode"], p["round"])
            self.fx.log("bid_again", k=msg.k)
        elif msg.k < self.s.next_k or (p is not None and msg.k <= p["k"]):
            self.fx.log("stale_round_start", k=msg.k, reason="round already begun")
        elif all(msg.k != d.k for d, _ in self.deferred):
            self.deferred.append((msg, now))  # acted on in _advance, in order

    def _stop(self, now: float) -> None:
        self.deferred.clear()
        if self.pending is not None:
            self._conclude(now)
        while self.s.next_k < self.w.n_rounds:  # the last round starts were lost
            self._book_skipped(self.s.next_k, "down" if self.resuming else "no_round_start",
                               now)
        self.finished, self.exit_reason = True, "stop"

    # --- a round --------------------------------------------------------------------
    def _observe(self, k: int) -> np.ndarray:
        h = int(self.w.hours[k])
        return self.prosumer.observation(k, float(self.m.hour_frac[k]), self.m.retail[h],
                                         self.m.feed_in[h], self.m.price_ref)

    def _public_state(self, k: int) -> np.ndarray:
        h = int(self.w.hours[k])
        return self.prosumer.public_state(float(self.m.hour_frac[k]), self.m.retail[h],
                                          self.m.feed_in[h], self.m.scale)

    def _start_round(self, msg: RoundStart, arrived: float, now: float) -> None:
        k, deadline = msg.k, arrived + msg.deadline_s
        while self.s.next_k < k:  # rounds whose start never arrived, or while down
            self._book_skipped(self.s.next_k, "down" if self.resuming else "no_round_start", now)
            if self.update is not None:  # a day ended inside the gap: go on after it
                self.deferred.insert(0, (msg, arrived))
                return
        self.resuming = False
        if now >= deadline:  # its bid could only come after the clearing
            self._book_skipped(k, "missed_round_start", now)
            return
        episode, rnd = self.w.episode_round(k)
        obs = self._observe(k)
        public_now = self._public_state(k)
        bid = self.prosumer.act(k, rnd, self.act(obs))
        self.pending = {"k": k, "episode": episode, "round": rnd, "bid": bid,
                        "public_state": public_now, "t0": now,
                        "due": deadline + self.t.resend_s, "attempt": 0}
        self._checkpoint(acted=True)  # a crash from here on is booked from the ledger
        self.fx.send("market", BidMessage.of(k, bid), episode, rnd)

    def _book_skipped(self, k: int, flag: str, now: float) -> None:
        """A round this agent could not act in: battery idle, grid only, flagged."""
        episode, rnd = self.w.episode_round(k)
        bid = self.prosumer.act(k, rnd, np.zeros(ACTION_DIM))
        self.pending = {"k": k, "episode": episode, "round": rnd, "bid": bid, "t0": now,
                        "flags": [flag], "learned": False}
        self._conclude(now)

    def _conclude(self, now: float) -> None:
        p, self.pending = self.pending, None
        k, episode, rnd = p["k"], p["episode"], p["round"]
        flags = list(p.get("flags", []))
        h = int(self.w.hours[k])
        retail, feed_in = self.m.retail[h], self.m.feed_in[h]
        s: SettlementMessage | None = p.get("settlement")
        if s is None:
            if not flags:
                flags.append("no_settlement")
            settlement = grid_only_settlement(p["bid"].surplus_kwh, Tariff(retail, feed_in),
                                              float("nan"))
        else:
            if not s.traded:
                flags.append("grid_only")
            settlement = s.settlement()
        g: VoltageReport | None = p.get("signal")
        if g is None:
            if not flags or flags == ["grid_only"] or flags == ["no_settlement"]:
                flags.append("voltage_unknown")
            vm, penalty, line_penalty, droop_q = float("nan"), 0.0, 0.0, 0.0
        else:
            vm = observed_voltage(g.vm_pu, self.m.nodes, self.m.vm_min_pu, self.m.vm_max_pu)
            penalty = g.voltage_penalty.get(self.id, 0.0)
            line_penalty = g.line_penalty.get(self.id, 0.0)
            droop_q = g.volt_var_q_kvar.get(self.id, 0.0)
        # the round's public outcome as this agent heard it (a part it missed: the last)
        heard_market = (MarketOutcome(s.sdr, s.sell_price_per_kwh, s.buy_price_per_kwh,
                                      s.tsp_kwh, s.tbp_kwh, s.net_import_kwh)
                        if s is not None and s.traded else None)
        heard_grid = (GridOutcome(tuple(float(g.vm_pu[n]) for n in self.m.all_nodes),
                                  float(g.max_line_loading_pct), bool(g.converged))
                      if g is not None else None)
        public = self.prosumer.public.updated(heard_market, heard_grid)
        record = self.prosumer.conclude(episode, rnd, self.w.times[k], settlement, retail,
                                        feed_in, vm, penalty, line_penalty, droop_q, public)
        self.fx.write(f"agents/{self.id}.jsonl", record.as_dict())
        self.s.rows += 1
        day_end = rnd == self.w.steps_per_day - 1
        learning = self.learner is not None and not self.finish and not self.stopping
        if learning and p.get("learned", True):
            # the state after the window's last round is real too (data of the next day)
            x_next = self._public_state(k + 1)
            self.learner.observe(record.reward, self._observe(k + 1), terminated=False,
                                 truncated=day_end, public={
                                     "state": p["public_state"], "next_state": x_next,
                                     "estimator_input": estimator_input(
                                         p["public_state"], public, self.m.scale)})
        self.s.next_k = k + 1

        def booked() -> None:
            self.fx.log("round", k=k, episode=episode, round=rnd, flags=flags,
                        bid_to_settlement_s=p.get("latency_s"))
            if not self.finish:
                self.fx.send("market", RoundDone(k), episode, rnd)
            self._checkpoint()

        if day_end:  # the battery keeps its charge over midnight
            self.s.episodes += 1
            lg = self.learning
            if learning and self.s.episodes % lg.rollout_days == 0:
                period = lg.consensus_period if lg.neighbours else None
                self.update = update_steps(self.learner, lg.epochs, period,
                                           self.s.updates * lg.epochs)
                self.after_update = booked
                self._run_update(now)
                return
        booked()

    # --- learning ---------------------------------------------------------------------
    def _run_update(self, now: float) -> None:
        """Run the update up to its next consensus step (sent now, averaged when the
        neighbours' critics are in or the timeout passes), or to its end."""
        try:
            e = next(self.update)
        except StopIteration:
            self.update, done = None, self.after_update
            self.s.updates += 1
            self.after_update = None
            done()
            return
        u, lg = self.s.updates, self.learning
        t, x = lg.step_of(u, e), lg.exchange
        # a copy: the message goes out after this call returns, and by then the average
        # may already have been written into the learner's parameters
        mine = np.array(self.learner.consensus_parameters(), copy=True)
        to = x.recipients(self.id, lg.neighbours, t)
        encoded = self.s.sender.message(mine, t, bool(to))
        for b in to if encoded is not None else ():  # None: no vector of step t - staleness
            self.fx.send(b, Critic.of(u, e, lg.layout, encoded), u, e)
        self.exchange = {"u": u, "e": e, "mine": mine,
                         "expected": x.heard(self.id, lg.neighbours, t),
                         "deadline": now + self.t.consensus_timeout_s}

    def _average(self, now: float) -> None:
        x, lg = self.exchange, self.learning
        self.exchange = None
        u, e, mine = x["u"], x["e"], x["mine"]
        values = {self.id: mine}
        for b in x["expected"]:
            msg = self.critics.pop((u, e, b), None)
            if msg is None:
                continue
            try:
                v = self.s.receiver.decode(b, msg.encoded())
                if v.shape != mine.shape:
                    raise Undecodable(f"{v.size} values once decoded, expected {mine.size}")
            except Undecodable as why:  # malformed, or a difference from a keyframe lost
                self.fx.log("rejected_critic", peer=b, update=u, step=e, reason=str(why))
                continue
            values[b] = v
        self.learner.set_consensus_parameters(lg.aggregation.combine(self.id, values, lg.weights))
        self.fx.log("consensus", update=u, step=e, used=sorted(values),
                    missing=sorted(set(lg.neighbours) - set(values)))
        for key in [key for key in self.critics if key[:2] <= (u, e)]:  # too late to count
            del self.critics[key]
        self._run_update(now)

    # --- time ---------------------------------------------------------------------------
    def _advance(self, now: float) -> Effects:
        if now - self.heard_market > self.t.idle_exit_s and not self.finished:
            self.finished, self.exit_reason = True, "market_silent"  # whatever was open
        while not self.finished and not self.fx.die:
            if self.exchange is not None:
                x = self.exchange
                if (all((x["u"], x["e"], b) in self.critics for b in x["expected"])
                        or now >= x["deadline"]):
                    self._average(now)
                    continue
                break
            if self.update is not None:
                break
            p = self.pending
            if p is None:
                if self.stopping:
                    self._stop(now)
                    continue
                if self.deferred:
                    msg, arrived = self.deferred.pop(0)
                    if msg.k >= self.s.next_k:
                        self._start_round(msg, arrived, now)
                    continue
                break
            if "settlement" in p and ("signal" in p or now >= p["due"] or self.deferred
                                      or self.stopping):
                self._conclude(now)
                continue
            if now < p["due"]:
                break
            if "settlement" not in p:
                # the ledger survives a market restart: ask until the budget is spent
                if p["attempt"] >= self.max_resends:
                    self._conclude(now)
                    continue
                p["attempt"] += 1
                p["due"] = now + self.t.resend_s
                self.fx.send("market", Resend(p["k"], p["bid"].surplus_kwh, p["attempt"]),
                             p["episode"], p["round"])
            break
        return self.fx.take()

    def _checkpoint(self, acted: bool = False) -> None:
        """``acted``: taken right after ``act`` (the bid): only the learner's acting state
        has changed since the last full snapshot (a learner's rollout pickles slowly)."""
        if self.learner is not None:
            if acted and self._snapshot is not None:
                self.s.learner = {**self._snapshot,
                                  **to_portable(self.learner.acting_state())}
            else:
                self._snapshot = to_portable(self.learner.state_dict())
                self.s.learner = self._snapshot
        self.s.open_round = None if self.pending is None else {
            k: v for k, v in self.pending.items() if k != "due"}
        self.fx.checkpoint = self.s
