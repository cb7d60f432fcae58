"""The in-process runtime: invariants every round, and mesa model == PettingZoo env."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from peergrid.agents.policies import make_policy
from peergrid.agents.records import RECORD_COLUMNS
from peergrid.scenarios import checks
from peergrid.scenarios.env import PeerGridEnv
from peergrid.scenarios.logs import read_records, read_table
from peergrid.scenarios.model import MarketModel
from peergrid.scenarios.report import summarize
from peergrid.scenarios.simulate import simulate


def run_model(scenario, policy: str, days: int = 1) -> pd.DataFrame:
    model = MarketModel(scenario, lambda p: make_policy(policy, p.spec, p.dt_h), days=days)
    while not model.finished:
        model.step()
    return model.datacollector.get_agent_vars_dataframe().reset_index(drop=True)


@pytest.fixture(scope="module")
def rule_day(_ieee13_scenario):
    return run_model(_ieee13_scenario, "rule")


def test_every_round_balances_energy_and_bounds_prices(rule_day):
    assert checks.energy_balance_problems(rule_day, dt_h=1.0) == []
    assert checks.price_bound_problems(rule_day) == []
    assert checks.no_worse_than_grid_problems(rule_day) == []


def test_every_agent_has_exactly_one_record_per_round(rule_day, ieee13_scenario):
    ids = [a.id for a in ieee13_scenario.agents]
    assert checks.completeness_problems(rule_day, ids, 24) == []


def test_the_rule_policy_trades_p2p_and_the_battery_rule_never_clips(rule_day):
    assert rule_day.p2p_sold_kwh.sum() > 0
    assert rule_day.battery_clip_kw.abs().max() < 1e-3  # float32 observation rounding only


def test_energy_balance_check_catches_a_broken_record(rule_day):
    broken = rule_day.copy()
    broken.loc[5, "grid_import_kwh"] += 1.0
    assert len(checks.energy_balance_problems(broken, dt_h=1.0)) == 1


def test_env_day_equals_mesa_day_under_the_same_policy(ieee13_scenario, rule_day):
    env = PeerGridEnv(ieee13_scenario, days=1)
    policies = {p.spec.agent_id: make_policy("rule", p.spec, p.dt_h) for p in env.community.prosumers}
    obs, _ = env.reset(options={"day": 0})
    rows = []
    while env.agents:
        obs, rewards, _, _, infos = env.step({a: policies[a](obs[a]) for a in env.agents})
        for a, info in infos.items():
            assert rewards[a] == info["record"].reward
            rows.append(info["record"].as_dict())
    env_day = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    pd.testing.assert_frame_equal(env_day, rule_day[list(RECORD_COLUMNS)], check_dtype=False)


def test_same_seed_same_run(ieee13_scenario, rule_day):
    again = run_model(ieee13_scenario, "rule")
    pd.testing.assert_frame_equal(again, rule_day)


def test_env_draws_days_from_its_seed(ieee13_scenario):
    env = PeerGridEnv(ieee13_scenario, days=7)

    def days_after(seed: int) -> list[int]:
        env.reset(seed=seed)
        drawn = [env.day]
        for _ in range(6):
            env.reset()
            drawn.append(env.day)
        return drawn

    assert days_after(3) == days_after(3)
    assert len(set(days_after(3))) > 1


def test_env_passes_pettingzoo_conformance(ieee13_scenario):
    parallel_api_test(PeerGridEnv(ieee13_scenario, days=2), num_cycles=30)
    parallel_seed_test(lambda: PeerGridEnv(ieee13_scenario, days=2), num_cycles=10)


def test_written_log_is_the_datacollector_frame(ieee13_scenario, rule_day, tmp_path):
    out = simulate(ieee13_scenario, "ieee13.toml", "rule", tmp_path / "run", days=1, progress=False)
    written = read_records(out)[list(RECORD_COLUMNS)]
    expected = rule_day[list(RECORD_COLUMNS)].sort_values(["episode", "round", "agent"])
    pd.testing.assert_frame_equal(written, expected.reset_index(drop=True), check_dtype=False)
    assert len(read_table(out, "market")) == len(read_table(out, "grid")) == 24


def test_rule_costs_the_community_less_than_grid_only(ieee13_scenario, rule_day):
    nop2p = run_model(ieee13_scenario, "nop2p")
    selfc = run_model(ieee13_scenario, "selfconsume")
    assert nop2p.p2p_sold_kwh.sum() == 0 and np.allclose(nop2p.payment, nop2p.grid_only_payment)
    assert rule_day.payment.sum() < selfc.payment.sum() < nop2p.payment.sum()


def test_summary_totals_match_records(ieee13_scenario, tmp_path):
    out = simulate(ieee13_scenario, "ieee13.toml", "rule", tmp_path / "s", days=1, progress=False)
    records = read_records(out)
    c = summarize(out)["community"]
    assert c["cost"] == pytest.approx(records.payment.sum())
    assert c["p2p_kwh"] == pytest.approx(records.p2p_bought_kwh.sum())
    assert 0 <= c["self_sufficiency"] <= 1
