"""The deployment's protocol objects without processes: every fault path, on a virtual
clock (comms.protocol.bus), built from the same spec `peergrid deploy` writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from peergrid.agents import statefile
from peergrid.agents.learners.consensus import consensus_due, update_steps
from peergrid.comms.messages import BidMessage, Critic, Hello, RoundStart, SettlementMessage
from peergrid.comms.node import DUPLICATE_WINDOW, DuplicateWindow, NodeLog, Refusals
from peergrid.comms.nodes.grid import grid_protocol
from peergrid.comms.nodes.market import market_protocol
from peergrid.comms.nodes.prosumer import prosumer_protocol
from peergrid.comms.protocol.bus import LocalBus
from peergrid.comms.protocol.ledger import MarketLedger
from peergrid.market.bid import Bid
from peergrid.market.operator import MarketOperator, bid_problem
from peergrid.scenarios.definition import checks
from peergrid.scenarios.commands.deploy import deploy_spec, with_faults


@pytest.fixture(scope="module")
def spec_for(_ieee13_scenario, tmp_path_factory):
    made = {}

    def make(days: int = 1, policy: str = "rule", **faults):
        key = (days, policy, repr(sorted(faults.items())))
        if key not in made:
            s = _ieee13_scenario.model_copy(update={
                "scenario": _ieee13_scenario.scenario.model_copy(update={"days": days})})
            s = with_faults(s, bid_deadline_ms=300.0, signal_timeout_ms=300.0,
                            down_after_ms=1000.0, **faults)
            made[key] = deploy_spec(s, policy, tmp_path_factory.mktemp("spec"), days=days)
        return made[key]
    return make


def build(spec, name: str, state=None, incarnation: int = 0):
    """A node's protocol object, as its process builds it (comms.nodes)."""
    if name == "market":
        return market_protocol(spec, state)
    if name == "grid":
        return grid_protocol(spec, state, incarnation)
    return prosumer_protocol(spec, name, incarnation, state)


def bus_for(spec, **kw) -> LocalBus:
    nodes = {n: build(spec, n) for n in ["grid", *spec.agents, "market"]}
    bus = LocalBus(nodes, heartbeat_s=spec.timing.heartbeat_s, **kw)
    bus.start()
    return bus


def records(bus: LocalBus, spec) -> pd.DataFrame:
    rows = [r for a in spec.agents for r in bus.table(f"agents/{a}.jsonl")]
    return pd.DataFrame(rows).sort_values(["episode", "round", "agent"]).reset_index(drop=True)


def assert_every_round_once_and_balanced(bus: LocalBus, spec) -> pd.DataFrame:
    n = spec.window.n_rounds
    for a in spec.agents:  # the raw rows: exactly once, in order, no de-duplication
        keys = [(r["episode"], r["round"]) for r in bus.table(f"agents/{a}.jsonl")]
        assert keys == [spec.window.window().episode_round(k) for k in range(n)], a
    frame = records(bus, spec)
    assert checks.energy_balance_problems(frame, dt_h=24 / spec.window.steps_per_day) == []
    per_round = frame.groupby(["episode", "round"])[["p2p_sold_kwh", "p2p_bought_kwh"]].sum()
    assert np.allclose(per_round.p2p_sold_kwh, per_round.p2p_bought_kwh, atol=1e-9)
    assert len(bus.table("market.jsonl")) == n and len(bus.table("grid.jsonl")) == n
    return frame


def flags(bus: LocalBus, agent: str) -> dict[int, list[str]]:
    return {e["k"]: e["flags"] for e in bus.log(agent, "round") if e["flags"]}


def undisturbed(spec) -> pd.DataFrame:
    bus = bus_for(spec)
    bus.run()
    return records(bus, spec)


# --- the same objects, driven in one process -------------------------------------------

def test_two_days_on_the_bus_equal_the_in_process_runtime(spec_for, ieee13_scenario):
    from test_deploy import in_process, reference

    spec = spec_for(days=2)
    bus = bus_for(spec)
    bus.run()
    got = assert_every_round_once_and_balanced(bus, spec)
    s = ieee13_scenario.model_copy(update={
        "scenario": ieee13_scenario.scenario.model_copy(update={"days": 2})})
    expected = in_process(s, reference("rule"))
    pd.testing.assert_frame_equal(got[expected.columns], expected)


@pytest.mark.parametrize("rule", ["median", "clip"])
def test_a_robust_aggregation_on_the_bus_equals_the_in_process_learners(ieee13_scenario,
                                                                       tmp_path, rule):
    """`[comms] aggregation` reaches the deployed learners: a learning day with the rule
    averages bitwise as the in-process team does (one torch thread)."""
    import torch

    from peergrid.agents.learners.portable import from_portable
    from peergrid.scenarios.commands.train import Team
    from test_deploy import in_process

    torch.set_num_threads(1)
    s = ieee13_scenario
    s = s.model_copy(update={
        "algo": s.algo.model_copy(update={"rollout_days": 1, "epochs": 2}),
        "comms": s.comms.model_copy(update={"aggregation": rule}),
        "scenario": s.scenario.model_copy(update={"days": 1})})
    spec = deploy_spec(with_faults(s, bid_deadline_ms=300.0, signal_timeout_ms=300.0),
                       "consensus", tmp_path, days=1, seed=5)
    assert {p.learning.aggregation.rule for p in spec.prosumers.values()} == {rule}
    bus = bus_for(spec)
    bus.run()
    team = Team("consensus", s, 5, stacked=False)
    expected = in_process(s, lambda _: (lambda o: team.act(o)), team)
    got = assert_every_round_once_and_balanced(bus, spec)
    pd.testing.assert_frame_equal(got[expected.columns], expected)
    for i, aid in enumerate(team.ids):
        deployed = from_portable(statefile.loads(bus.checkpoints[aid][0]).learner)
        local = team.group.groups[i].state_dict()
        for part in ("critic", "estimator"):
            for name, tensor in local[part].items():
                assert torch.equal(tensor, deployed[part][name]), (aid, part, name)


def test_a_clock_offset_on_any_node_changes_nothing(spec_for):
    spec = spec_for()
    skewed = bus_for(spec, skew_s={"a03": 3.0, "market": -7.5, "grid": 1e4})
    skewed.run()
    pd.testing.assert_frame_equal(records(skewed, spec), undisturbed(spec))
    assert not any(e for a in spec.agents for e in skewed.log(a, "stale_round_start"))


# --- lost messages ---------------------------------------------------------------------

def test_a_lost_round_done_costs_at_most_one_signal_timeout_and_nothing_else(spec_for):
    spec = spec_for()
    lost = []

    def drop(sender, s):
        if sender == "a01" and s.msg.kind == "round_done" and s.msg.k == 5 and not lost:
            lost.append(s)
            return True
        return False

    bus = bus_for(spec, drop=drop)
    bus.run()
    assert lost
    pd.testing.assert_frame_equal(records(bus, spec), undisturbed(spec))
    rounds = bus.log("market", "round")
    assert rounds[5]["round_done_missing"] == []  # the settlement again, confirmed again
    assert max(r["duration_s"] for r in rounds) <= 0.3 + 0.3 + 1e-9


def test_a_lost_settlement_is_asked_for_and_booked_from_the_ledger(spec_for):
    spec = spec_for()

    def drop(sender, s):  # the first copy of a02's settlement of round 7, and the retry
        return sender == "market" and s.to == "a02" and s.msg.kind == "settlement" \
            and s.msg.k == 7 and not bus.log("market", "resend")

    bus = bus_for(spec, drop=drop)
    bus.run()
    assert [e["k"] for e in bus.log("market", "resend")] == [7]
    pd.testing.assert_frame_equal(records(bus, spec), undisturbed(spec))


def test_ten_percent_loss_everywhere_keeps_every_round_once_balanced_and_bounded(spec_for):
    spec = spec_for()
    rng = np.random.default_rng(3)
    bus = bus_for(spec, drop=lambda sender, s: rng.random() < 0.1)
    bus.run()
    assert_every_round_once_and_balanced(bus, spec)
    all_flags = [f for a in spec.agents for fl in flags(bus, a).values() for f in fl]
    assert "no_settlement" not in all_flags  # the market was alive: it always answered
    assert max(r["duration_s"] for r in bus.log("market", "round")) <= 0.3 + 0.3 + 1e-9


def test_a_grid_only_answer_carries_the_rounds_own_sdr(spec_for):
    spec = spec_for()

    def drop(sender, s):  # a04's bid of round 12 never arrives
        return sender == "a04" and s.msg.kind == "bid" and s.msg.k == 12

    bus = bus_for(spec, drop=drop)
    bus.run()
    frame = records(bus, spec).set_index(["round", "agent"])
    assert flags(bus, "a04")[12] == ["grid_only"]
    assert frame.loc[(12, "a04"), "p2p_bought_kwh"] == frame.loc[(12, "a04"), "p2p_sold_kwh"] == 0
    # not the SDR of round 11 (what the agent had heard last): round 12's own
    assert frame.loc[(12, "a04"), "sdr"] == frame.loc[(12, "a01"), "sdr"]
    assert bus.table("market.jsonl")[12]["bids_missing"] == ["a04"]


# --- dead processes -----------------------------------------------------------------------

def test_a_prosumer_killed_between_bid_and_booking_is_booked_from_the_ledger(spec_for):
    spec = spec_for()
    state = {}

    def kill_after_bid():  # a06 dies the moment its bid of round 8 is out
        if "dead" not in state and any(s.msg.kind == "bid" and s.msg.k == 8 and n == "a06"
                                       for _, n, s in bus.sent[-20:]):
            bus.kill("a06")
            state["dead"] = bus.now
        return "dead" in state

    bus = bus_for(spec)
    bus.run(stop=kill_after_bid)
    assert bus.table("market.jsonl")[-1]["round"] <= 8
    # silent for down_after_s: marked down, and nobody waits for it; two rounds later back
    bus.run(stop=lambda: len(bus.table("market.jsonl")) >= 2 + min(
        [e["k"] for e in bus.log("market", "down")], default=99))
    assert [e["peer"] for e in bus.log("market", "down")] == ["a06"]
    bus.restart("a06", lambda st: build(spec, "a06", st, incarnation=1))
    bus.run()
    frame = assert_every_round_once_and_balanced(bus, spec)
    fl = flags(bus, "a06")
    # its round 8 was cleared with its bid: booked as cleared, from the ledger
    assert fl.get(8, []) in ([], ["voltage_unknown"])
    a06 = frame[frame.agent == "a06"].set_index("round")
    assert a06.loc[8, ["p2p_sold_kwh", "p2p_bought_kwh"]].sum() > 0
    down = sorted(k for k, f in fl.items() if "down" in f)
    assert down and down == list(range(9, 9 + len(down)))
    assert set(_down_rounds(bus, "a06")) <= set(down)  # the market's view, the agent's rows


def _down_rounds(bus: LocalBus, peer: str) -> set[int]:
    return {k for k, row in enumerate(bus.table("market.jsonl")) if peer in row["down"]}


def test_a_dead_grid_costs_one_timeout_per_round_and_every_round_keeps_a_grid_row(spec_for):
    spec = spec_for()
    bus = bus_for(spec)
    bus.run(stop=lambda: len(bus.table("grid.jsonl")) >= 10)
    bus.kill("grid")
    bus.run(stop=lambda: len(bus.table("market.jsonl")) >= 16)
    bus.restart("grid", lambda st: build(spec, "grid", st, incarnation=1))
    bus.run()
    assert_every_round_once_and_balanced(bus, spec)
    grid = pd.DataFrame(bus.table("grid.jsonl"))
    lost = grid[grid.positions_lost.eq(True)]
    assert 1 <= len(lost) <= 6 and lost["round"].min() >= 10
    rounds = bus.log("market", "round")
    assert max(r["duration_s"] for r in rounds) <= 0.3 + 0.3 + 1e-9  # one timeout, not seven
    unknown = [k for k, f in flags(bus, "a01").items() if "voltage_unknown" in f]
    assert set(lost["round"]) <= set(unknown)


def test_a_grid_down_at_the_end_books_a_row_for_every_round_it_missed(spec_for):
    """The grid never saw the market's ``stop`` (dead, or back only after the end): its
    ``finish`` run writes the rounds it missed from its checkpoint, every round one row."""
    spec = spec_for()
    bus = bus_for(spec)
    bus.run(stop=lambda: len(bus.table("grid.jsonl")) >= 10)
    bus.kill("grid")
    bus.run()
    assert bus.nodes["market"].finished
    blob, counts = bus.checkpoints["grid"]
    for table, n in counts.items():
        del bus.rows[table][n:]
    g = build(spec, "grid", statefile.loads(blob), incarnation=1)
    fx = g.finish()
    assert g.finished and not fx.sends  # no market to answer
    for table, row in fx.rows:
        bus.rows.setdefault(table, []).append(row)
    grid = pd.DataFrame(bus.table("grid.jsonl"))
    assert list(grid["round"]) == list(range(24))
    lost = grid[grid.positions_lost.eq(True)]
    assert list(lost["round"]) == list(range(len(grid) - len(lost), 24))
    assert len(lost) >= 24 - 11 and fx.checkpoint.next_k == 24


def test_a_market_killed_mid_round_resumes_from_its_checkpoint(spec_for):
    spec = spec_for()
    bus = bus_for(spec)
    bus.run(stop=lambda: len(bus.table("market.jsonl")) >= 9 and bus.nodes["market"].phase
            == "collect")
    bus.kill("market")
    bus.run(until_s=bus.now + 0.5)
    bus.restart("market", lambda st: build(spec, "market", st))
    bus.run()
    frame = assert_every_round_once_and_balanced(bus, spec)
    assert [r["round"] for r in bus.table("market.jsonl")] == list(range(24))
    assert any(e for a in spec.agents for e in bus.log(a, "bid_again"))
    assert len(frame) == 24 * len(spec.agents)


def test_an_agent_down_at_the_end_is_booked_from_its_checkpoint_and_the_ledger(spec_for):

    spec = spec_for(kills=[{"agent": "a09", "at_round": 20}])  # never restarted
    bus = bus_for(spec)
    bus.run()
    assert [e["k"] for e in bus.log("a09", "killed")] == [20]
    assert len(bus.table("agents/a09.jsonl")) == 20
    # what the launcher does once the market has stopped: a09 once more, to finish
    blob, counts = bus.checkpoints["a09"]
    for table, n in counts.items():
        del bus.rows[table][n:]
    p = prosumer_protocol(spec, "a09", 1, statefile.loads(blob), finish=True)
    fx = p.start(bus.now)
    assert not fx.sends  # it does not talk to a market that is gone
    owed = bus.table("ledger")[-1]["a09"].get(str(p.pending["k"])) if p.pending else None
    fx = p.finish_from_ledger(SettlementMessage(**owed) if owed else None, bus.now)
    for table, row in fx.rows:
        bus.rows.setdefault(table, []).append(row)
    assert_every_round_once_and_balanced(bus, spec)
    fl = {e["k"]: e["flags"] for ev, e in fx.events if ev == "round"}
    assert all(fl[k] == ["down"] for k in range(20, 24))
    assert set(_down_rounds(bus, "a09")) == set(range(20, 24))


# --- bad input from legitimate peers ---------------------------------------------------------

def test_a_bid_the_market_cannot_clear_is_refused_and_that_agent_trades_grid_only(spec_for):
    spec = spec_for()
    market = build(spec, "market")
    market.start(0.0)
    for peer in [*spec.agents, "grid"]:
        market.on_message(0.0, peer, -1, -1, Hello(1, 0, 0))
    market.on_message(0.01, "a01", 0, 0, BidMessage(0, "634", -2.0, 3.0, 0.0, 0.0, 0.0))
    market.on_message(0.01, "a02", 0, 0, BidMessage(0, "645", 1.0, 1e6, 0.0, 0.0, 0.0))
    for a in spec.agents[2:]:  # the last one completes the round's bids: it clears
        fx = market.on_message(0.02, a, 0, 0, BidMessage(0, "634", 0.0, 0.0, 0.0, 0.0, 0.0))
    row = [r for t, r in fx.rows if t == "market.jsonl"][0]
    assert set(row["bids_refused"]) == {"a01", "a02"}  # the round went on without them
    assert "sign of surplus_kwh" in row["bids_refused"]["a01"]
    assert "more than its devices can deliver" in row["bids_refused"]["a02"]
    settled = {s.to for s in fx.sends if s.msg.kind == "settlement"}
    assert "a01" not in settled and "a03" in settled
    answer = market.s.ledger.answer("a01", 0, 3.0)  # what a01 is told when it asks
    assert answer.traded is False and answer.p2p_sold_kwh == 0 and answer.grid_export_kwh == 3


def test_bid_problem_names_the_field_and_accepts_what_the_clearing_accepts():
    ok = Bid("a01", "634", 0, 1.0, 2.0, 0.1, 0.0, 1.0)
    assert bid_problem(ok, 5.0) is None
    assert "sign" in bid_problem(Bid("a01", "634", 0, -1.0, 2.0, 0.0), 5.0)
    assert "no larger magnitude" in bid_problem(Bid("a01", "634", 0, 3.0, 2.0, 0.0), 5.0)
    assert "finite" in bid_problem(Bid("a01", "634", 0, float("nan"), 2.0, 0.0), 5.0)
    assert "q_kvar" in bid_problem(Bid("a01", "634", 0, 1.0, 2.0, float("inf")), 5.0)
    assert "devices" in bid_problem(Bid("a01", "634", 0, 1.0, 9.0, 0.0), 5.0)


def test_a_critic_of_another_layout_or_length_is_refused_not_averaged(spec_for, tmp_path):
    spec = spec_for(policy="consensus")
    p = prosumer_protocol(spec, "a02", 0)
    p.start(0.0)
    lg = p.learning
    mine = p.learner.consensus_parameters()
    fx = p.on_message(0.0, lg.neighbours[0], 0, 0, Critic(0, 0, "another", mine))
    assert [ev for ev, _ in fx.events] == ["rejected_critic"] and not p.critics
    p.on_message(0.0, lg.neighbours[0], 0, 0, Critic(0, 0, lg.layout, mine[:-1]))
    p.on_message(0.0, lg.neighbours[1], 0, 0, Critic(0, 0, lg.layout, mine * 0 + 1))
    p.s.updates, p.exchange = 0, {"u": 0, "e": 0, "mine": mine, "deadline": 1.0,
                                  "expected": list(lg.neighbours)}
    p.update = iter(())
    p.after_update = lambda: None
    p._average(0.5)
    used = p.fx.take().events
    refused = [f for ev, f in used if ev == "rejected_critic"]
    assert len(refused) == 1 and "values, expected" in refused[0]["reason"]
    done = [f for ev, f in used if ev == "consensus"][0]
    assert lg.neighbours[0] in done["missing"] and lg.neighbours[1] in done["used"]


def test_a_stale_round_start_for_an_earlier_incarnation_is_ignored(spec_for):
    spec = spec_for()
    p = prosumer_protocol(spec, "a01", incarnation=2)
    p.start(0.0)
    fx = p.on_message(0.1, "market", 0, 3, RoundStart(3, 0.3, 1))
    assert [ev for ev, _ in fx.events] == ["stale_round_start"] and p.pending is None
    fx = p.on_message(0.2, "market", 0, 4, RoundStart(4, 0.3, 2))
    assert p.pending is not None and p.pending["k"] == 4


def test_a_node_whose_market_falls_silent_exits(spec_for):
    spec = spec_for()
    p = prosumer_protocol(spec, "a01")
    p.start(0.0)
    p.on_tick(spec.timing.idle_exit_s - 0.1)
    assert not p.finished
    p.on_tick(spec.timing.idle_exit_s + 0.1)
    assert p.finished and p.exit_reason == "market_silent"
    g = build(spec, "grid")
    g.start(0.0)
    g.on_tick(spec.timing.idle_exit_s + 0.1)
    assert g.finished and g.exit_reason == "market_silent"


# --- bounded resources and counters ---------------------------------------------------------

def test_the_duplicate_window_stays_bounded_under_a_flood():
    w = DuplicateWindow()
    for k in range(10_000):
        assert not w.seen("a01", k, ("bid", 0, k % 24, "a01"))
        assert w.seen("a01", k, ("bid", 0, k % 24, "a01"))
    assert w.size() <= DUPLICATE_WINDOW + 1


def test_refusals_are_counted_per_reason_per_round_and_logged_a_few_at_a_time(tmp_path):
    import json

    log = NodeLog(tmp_path / "n.jsonl")
    r = Refusals(log)
    for i in range(1000):
        r.add(0, "intruder", f"unknown peer: 'x{i}' is not a node here")
    r.add(1, "a01", "bid.bid_kwh = 'x': not a number")
    r.flush()
    log.close()
    events = [json.loads(x) for x in (tmp_path / "n.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "rejected" for e in events) == 6  # 5 of round 0, 1 of round 1
    counts = [e for e in events if e["event"] == "rejected_count"]
    assert counts[0]["counts"] == {"unknown peer": 1000} and counts[1]["total"] == 1


def test_the_ledger_keeps_what_is_owed_until_confirmed_and_no_more():
    op = MarketOperator([0.3] * 24, [0.05] * 24)
    ledger = MarketLedger(["a", "b"], keep_rounds=5)
    for k in range(12):
        ledger.book(k, op.close_round(k, k % 24, {
            "a": Bid("a", "1", k, 1.0, 1.0, 0.0), "b": Bid("b", "1", k, -1.0, -1.0, 0.0)}))
    assert ledger.unconfirmed("a") == list(range(7, 12))  # bounded
    assert ledger.answer("a", 11, 1.0).traded and ledger.answer("a", 11, 1.0).p2p_sold_kwh == 1
    ledger.confirm("a", 10)
    assert ledger.unconfirmed("a") == [11]
    assert ledger.answer("a", 12, 1.0) is None  # not cleared yet
    assert sorted(ledger.rounds) == list(range(7, 12))  # the summaries do not grow either


# --- learning --------------------------------------------------------------------------------

def test_a_consensus_period_longer_than_an_update_still_averages():
    assert [e for e in range(3) if consensus_due(0, e, 5)] == []
    assert [e for e in range(3) if consensus_due(3, e, 5)] == [1]

    class Counting:
        def begin_update(self): pass
        def update_epoch(self): return {}
        def end_update(self): pass

    steps = []
    for u in range(4):
        steps += [(u, e) for e in update_steps(Counting(), 3, 5, u * 3)]
    assert steps == [(1, 1), (3, 0)]  # every 5 epochs over the run: epochs 5 and 10


def test_learning_on_from_a_run_follows_the_runs_algorithm_not_the_scenario_file(
        _ieee13_scenario, tmp_path):
    from peergrid.scenarios.commands.train import train

    s = _ieee13_scenario.model_copy(update={
        "scenario": _ieee13_scenario.scenario.model_copy(update={"days": 1})})
    assert s.algo.name == "consensus"  # the file says consensus ...
    run = train(s, "ieee13.toml", "ippo", 1, tmp_path / "run", episodes=1, progress=False,
                tensorboard=False)  # ... the run is independent PPO
    spec = deploy_spec(s, str(run), tmp_path / "dep", learn=True)
    for a, node in spec.prosumers.items():
        assert node.policy.kind == "trained" and node.policy.name == "ippo"
        assert node.learning is not None and node.learning.neighbours == (), a  # no averaging
    p = prosumer_protocol(spec, "a01")
    assert p.learner is not None and p.learning.neighbours == ()


def test_a_settlement_owed_across_a_long_market_outage_is_booked_from_the_restarted_ledger(
        spec_for):
    spec = spec_for()  # down_after 1 s: the market is gone longer than that

    killed = []

    def drop(sender, s):  # every copy the first market sends of a02's settlement of round 7
        return not killed and sender == "market" and s.to == "a02" \
            and s.msg.kind == "settlement" and s.msg.k == 7

    bus = bus_for(spec, drop=drop)
    bus.run(stop=lambda: len(bus.table("market.jsonl")) >= 8)  # round 7 has just cleared
    bus.kill("market")
    killed.append(bus.now)
    bus.run(until_s=bus.now + 1.5)
    bus.restart("market", lambda st: build(spec, "market", st))
    bus.run()
    assert_every_round_once_and_balanced(bus, spec)
    assert "no_settlement" not in flags(bus, "a02").get(7, [])
    assert [e["k"] for e in bus.log("market", "resend")][:1] == [7]  # the new market answered


def test_a_market_restarted_mid_collection_gets_the_same_bids_through_real_duplicate_filters(
        spec_for):
    spec = spec_for()
    bus = bus_for(spec)
    bus.run(stop=lambda: len(bus.table("market.jsonl")) >= 9 and bus.nodes["market"].phase
            == "collect" and bus.nodes["market"]._round["bids"])
    bus.kill("market")
    bus.restart("market", lambda st: build(spec, "market", st))
    bus.run()
    assert_every_round_once_and_balanced(bus, spec)
    nine = bus.table("market.jsonl")[9]
    assert nine["round"] == 9 and nine["bids_missing"] == []  # every bid came again
    assert bus.dropped_duplicates == 0


def test_far_future_critics_cannot_crowd_out_the_ones_that_count(spec_for):
    spec = spec_for(policy="consensus")
    p = prosumer_protocol(spec, "a02", 0)
    p.start(0.0)
    lg, mine = p.learning, p.learner.consensus_parameters()
    for u in range(1, 200):  # a flood of critics for updates that will never come
        p.on_message(0.0, lg.neighbours[0], u, 0, Critic(u, 0, lg.layout, mine))
    p.on_message(0.0, lg.neighbours[1], 0, 0, Critic(0, 0, lg.layout, mine))
    assert list(p.critics) == [(0, 0, lg.neighbours[1])]


def test_a_grid_signal_without_the_feeders_nodes_is_refused_not_raised(spec_for):
    from peergrid.comms.messages import VoltageReport

    spec = spec_for()
    p = prosumer_protocol(spec, "a01", 0)
    p.start(0.0)
    p.on_message(0.01, "market", 0, 0, RoundStart(0, 0.3, 0))
    fx = p.on_message(0.02, "grid", 0, 0, VoltageReport(0, {"650.a": 1.0}, True, {}, {}, {}, 0.0))
    assert [ev for ev, _ in fx.events] == ["rejected"] and "signal" not in p.pending


def test_a_node_whose_market_vanishes_mid_update_exits_instead_of_spinning(spec_for):
    spec = spec_for(policy="consensus")
    p = prosumer_protocol(spec, "a02", 0)
    p.start(0.0)
    p.exchange = {"u": 0, "e": 0, "mine": None, "deadline": 1e9}  # waiting for critics
    t = spec.timing.idle_exit_s + 0.1
    p.on_tick(t)
    assert p.finished and p.exit_reason == "market_silent"


def test_a_round_start_or_bid_lost_is_sent_again_once_halfway_to_the_deadline(spec_for):
    spec = spec_for()

    def drop(sender, s):  # a07's first round start of round 4, and a08's first bid of it
        first = not any(x.msg.kind == s.msg.kind and x.msg.k == 4 and x is not s
                        for _, n, x in bus.sent if n == sender and x.to == s.to)
        return first and s.msg.kind in ("round_start", "bid") and s.msg.k == 4 and (
            (sender == "market" and s.to == "a07") or sender == "a08")

    bus = bus_for(spec, drop=drop)
    bus.run()
    assert bus.table("market.jsonl")[4]["bids_missing"] == []  # both made it the second time
    pd.testing.assert_frame_equal(records(bus, spec), undisturbed(spec))
