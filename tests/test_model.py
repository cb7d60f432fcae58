"""The mesa model as mesa's own tools drive it: ``running``, model reporters, batch_run."""

from __future__ import annotations

import math

import mesa
import numpy as np
import pandas as pd
import pytest

from peergrid.scenarios.runtime.model import MODEL_REPORTERS, MarketModel

ROUNDS = 24  # one day of hourly rounds (ieee13)


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    """2 seeds x 2 policies x 1 day, every step collected, as a mesa user runs it."""
    rows = mesa.batch_run(MarketModel, {"scenario": "ieee13", "seed": [7, 8],
                                        "policy": ["rule", "nop2p"], "days": 1},
                          data_collection_period=1, display_progress=False)
    return pd.DataFrame(rows)


def test_running_turns_false_after_the_last_round_and_stepping_on_is_a_no_op():
    model = MarketModel("ieee13", "rule", days=1)
    for k in range(ROUNDS):
        assert model.running, f"stopped early, after {k} rounds"
        model.step()
    assert not model.running and model.steps == ROUNDS
    before = model.datacollector.get_model_vars_dataframe()
    model.step()  # e.g. SolaraViz's step button with a render interval > 1
    assert not model.running and model.steps == ROUNDS
    pd.testing.assert_frame_equal(model.datacollector.get_model_vars_dataframe(), before)


def test_model_reporters_hold_every_round_and_agree_with_the_agents():
    model = MarketModel("ieee13", "rule", days=1)
    model.run_model()
    frame = model.datacollector.get_model_vars_dataframe()
    assert list(frame.columns) == list(MODEL_REPORTERS)
    assert len(frame) == ROUNDS + 1 and frame.iloc[0].drop("time").isna().all()  # Step 0
    rounds = frame.iloc[1:]
    agents = model.datacollector.get_agent_vars_dataframe()
    sold = agents.groupby(level="Step").p2p_sold_kwh.sum()
    np.testing.assert_allclose(rounds.p2p_kwh.to_numpy(), sold.loc[rounds.index].to_numpy(),
                               atol=1e-9)
    vm = agents.groupby(level="Step").vm_pu
    assert (rounds.vm_min_pu <= vm.min().loc[rounds.index] + 1e-12).all()
    assert (rounds.vm_max_pu >= vm.max().loc[rounds.index] - 1e-12).all()
    assert rounds.time.iloc[0] == "2016-05-09T00:00:00"


def test_voltage_violations_count_buses_outside_the_scenario_limits(ieee13_scenario):
    # the same day against limits every bus breaks: each electrical node counts once
    tight = ieee13_scenario.feeder.model_copy(update={"vm_min_pu": 1.2, "vm_max_pu": 1.3})
    model = MarketModel(ieee13_scenario.model_copy(update={"feeder": tight}), "rule", days=1)
    model.step()
    groups = set(model.community.grid.bus_groups.values())
    assert model.voltage_violations == len(groups) > 1


def test_batch_run_over_seeds_and_policies(batch):
    runs = batch.groupby("RunId")[["seed", "policy"]].first()
    assert len(runs) == 4 and not runs.duplicated().any()
    assert set(map(tuple, runs.to_numpy())) == {(7, "rule"), (7, "nop2p"), (8, "rule"),
                                                 (8, "nop2p")}
    # Step 0 (before any round) then rounds; mesa 3.3's batch_run stops one short of the
    # last step (mesa issue #2514), the model's own DataCollector has them all
    assert (batch.groupby("RunId").Step.agg(["min", "max"]).to_numpy()
            >= [0, ROUNDS - 1]).all()
    played = batch[batch.Step > 0]
    assert played.AgentID.notna().all()  # a round's agent rows carry its model reporters
    assert ((played.feed_in_price_per_kwh - 1e-12 <= played.sell_price_per_kwh)
            & (played.sell_price_per_kwh <= played.buy_price_per_kwh + 1e-12)
            & (played.buy_price_per_kwh <= played.retail_price_per_kwh + 1e-12)).all()
    assert (played.sdr >= 0).all() and (played.p2p_kwh >= 0).all()
    assert played.vm_min_pu.between(0.9, 1.1).all() and played.vm_max_pu.between(0.9, 1.1).all()
    assert (played.vm_min_pu <= played.vm_max_pu).all()
    assert (played.voltage_violations >= 0).all() and (played.lines_overloaded >= 0).all()
    # nop2p bids nothing; rule trades P2P
    by_policy = played.groupby("policy").p2p_kwh.sum()
    assert by_policy["nop2p"] == 0 and by_policy["rule"] > 0


def test_same_seed_same_result_in_and_out_of_batch_run(batch):
    columns = [c for c in MODEL_REPORTERS if c != "time"]
    model = MarketModel("ieee13", "rule", days=1, seed=7)
    model.run_model()
    alone = model.datacollector.get_model_vars_dataframe()[columns]
    run = batch[(batch.seed == 7) & (batch.policy == "rule")].groupby("Step")[columns].first()
    pd.testing.assert_frame_equal(run, alone.loc[run.index], check_names=False)
    # reference policies draw nothing at random: another seed replays the same day
    other = batch[(batch.seed == 8) & (batch.policy == "rule")].groupby("Step")[columns].first()
    pd.testing.assert_frame_equal(run, other)


def test_seed_replaces_the_scenario_seed_and_bad_keywords_are_named():
    model = MarketModel("ieee13", "rule", days=1, seed=3)
    assert model.community.scenario.scenario.seed == 3
    draw = model.rng.integers(1 << 30)
    assert draw == MarketModel("ieee13", "rule", days=1, seed=3).rng.integers(1 << 30)
    assert draw != MarketModel("ieee13", "rule", days=1, seed=4).rng.integers(1 << 30)
    with pytest.raises(ValueError, match="policy = 'greedy'"):
        MarketModel("ieee13", "greedy", days=1)
    with pytest.raises(ValueError, match="seed = -1"):
        MarketModel("ieee13", "rule", days=1, seed=-1)
    with pytest.raises(ValueError, match="days = 0"):
        MarketModel("ieee13", "rule", days=0)


def test_voltvar_by_name_switches_the_inverters_to_volt_var():
    model = MarketModel("ieee13", "voltvar", days=1)
    assert {a.inverter_control for a in model.community.scenario.agents} == {"volt_var"}
    assert math.isnan(model.datacollector.get_model_vars_dataframe().sdr.iloc[0])
