"""The in-process runtime: invariants every round, and mesa model == PettingZoo env."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pettingzoo.test import parallel_api_test, parallel_seed_test

from peergrid.agents.policies import make_policy
from peergrid.agents.records import RECORD_COLUMNS
from peergrid.scenarios.definition import checks
from peergrid.scenarios.runtime.env import PeerGridEnv
from peergrid.scenarios.runtime.logs import read_records, read_table
from peergrid.scenarios.runtime.model import MarketModel
from peergrid.scenarios.commands.report import summarize
from peergrid.scenarios.commands.simulate import simulate


def run_model(scenario, policy: str, days: int = 1) -> pd.DataFrame:
    model = MarketModel(scenario, lambda p: make_policy(policy, p.spec, p.dt_h), days=days)
    while not model.finished:
        model.step()
    return model.datacollector.get_agent_vars_dataframe().reset_index(drop=True)


@pytest.fixture(scope="module")
def rule_day(_ieee13_scenario):
    """Two days with the rule policy (a midnight in between)."""
    return run_model(_ieee13_scenario, "rule", days=2)


def test_every_round_balances_energy_and_bounds_prices(rule_day):
    assert checks.energy_balance_problems(rule_day, dt_h=1.0) == []
    assert checks.price_bound_problems(rule_day) == []
    assert checks.no_worse_than_grid_problems(rule_day) == []


def test_every_agent_has_exactly_one_record_per_round(rule_day, ieee13_scenario):
    ids = [a.id for a in ieee13_scenario.agents]
    assert checks.completeness_problems(rule_day, ids, 48) == []


def test_the_rule_policy_trades_p2p_and_the_battery_rule_never_clips(rule_day):
    assert rule_day.p2p_sold_kwh.sum() > 0
    assert rule_day.battery_clip_kw.abs().max() < 1e-3  # float32 observation rounding only


def test_energy_balance_check_catches_a_broken_record(rule_day):
    broken = rule_day.copy()
    broken.loc[5, "grid_import_kwh"] += 1.0
    assert len(checks.energy_balance_problems(broken, dt_h=1.0)) == 1


def test_env_days_equal_mesa_days_under_the_same_policy(ieee13_scenario, rule_day):
    env = PeerGridEnv(ieee13_scenario, days=2)
    policies = {p.spec.agent_id: make_policy("rule", p.spec, p.dt_h) for p in env.community.prosumers}
    rows = []
    for day in (0, 1):  # the env's default: the second day carries the first day's charge
        obs, _ = env.reset(options={"day": day})
        while env.agents:
            obs, rewards, _, _, infos = env.step({a: policies[a](obs[a]) for a in env.agents})
            for a, info in infos.items():
                assert rewards[a] == info["record"].reward
                rows.append(info["record"].as_dict())
    env_days = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    pd.testing.assert_frame_equal(env_days, rule_day[list(RECORD_COLUMNS)], check_dtype=False)


def test_batteries_carry_their_charge_over_midnight(ieee13_scenario, rule_day):
    from peergrid.scenarios.runtime.community import prosumer_spec

    specs = {a.id: prosumer_spec(a).battery for a in ieee13_scenario.agents}
    moved = 0
    for agent, g in rule_day.groupby("agent"):
        b = specs[agent]
        if not b.present:
            continue
        before, first = g[g.episode == 0].iloc[-1], g[g.episode == 1].iloc[0]
        kw = first.battery_kw
        stored = kw * b.eta_charge if kw >= 0 else kw / b.eta_discharge
        # the first round after midnight starts from where the day ended, not soc_init
        assert first.soc == pytest.approx(before.soc + stored / b.capacity_kwh, abs=1e-9)
        moved += abs(before.soc - b.soc_init) > 0.01
    assert moved > 0  # some battery ended the day away from its initial charge


def test_env_episode_start_options(ieee13_scenario):
    env = PeerGridEnv(ieee13_scenario, days=2)
    batteries = [p for p in env.community.prosumers if p.spec.battery.present]
    env.reset(seed=1, options={"day": 0, "soc": "sample"})
    sampled = [p.soc for p in batteries]
    assert all(p.spec.battery.soc_min <= p.soc <= p.spec.battery.soc_max for p in batteries)
    env.reset(seed=1, options={"day": 0, "soc": "sample"})
    assert [p.soc for p in batteries] == sampled  # from the env's seeded generator
    env.reset(options={"soc": "initial"})
    assert all(p.soc == p.spec.battery.soc_init for p in batteries)
    env.reset(options={"soc": {p.spec.agent_id: 0.3 for p in env.community.prosumers}})
    assert all(p.soc == 0.3 for p in batteries)
    with pytest.raises(ValueError, match="options.soc"):
        env.reset(options={"soc": "full"})


def test_same_seed_same_run(ieee13_scenario, rule_day):
    again = run_model(ieee13_scenario, "rule", days=2)
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
    out = simulate(ieee13_scenario, "ieee13.toml", "rule", tmp_path / "run", days=2, progress=False)
    written = read_records(out)[list(RECORD_COLUMNS)]
    expected = rule_day[list(RECORD_COLUMNS)].sort_values(["episode", "round", "agent"])
    pd.testing.assert_frame_equal(written, expected.reset_index(drop=True), check_dtype=False)
    assert len(read_table(out, "market")) == len(read_table(out, "grid")) == 48


def test_rule_costs_the_community_less_than_grid_only(ieee13_scenario, rule_day):
    nop2p = run_model(ieee13_scenario, "nop2p", days=2)
    selfc = run_model(ieee13_scenario, "selfconsume", days=2)
    assert nop2p.p2p_sold_kwh.sum() == 0 and np.allclose(nop2p.payment, nop2p.grid_only_payment)
    assert rule_day.payment.sum() < selfc.payment.sum() < nop2p.payment.sum()


def test_summary_totals_match_records(ieee13_scenario, tmp_path):
    out = simulate(ieee13_scenario, "ieee13.toml", "rule", tmp_path / "s", days=1, progress=False)
    records = read_records(out)
    c = summarize(out)["community"]
    assert c["cost"] == pytest.approx(records.payment.sum())
    assert c["p2p_kwh"] == pytest.approx(records.p2p_bought_kwh.sum())
    assert 0 <= c["self_sufficiency"] <= 1


def test_voltvar_reduces_violations_against_rule_over_the_week(ieee13_scenario):
    from peergrid.scenarios.commands.experiment import reference_metrics

    rule = reference_metrics(ieee13_scenario, "rule")
    voltvar = reference_metrics(ieee13_scenario, "voltvar")
    assert voltvar["community_cost"] == pytest.approx(rule["community_cost"])  # same energy
    rule_bus_rounds = rule["overvoltage_bus_rounds"] + rule["undervoltage_bus_rounds"]
    voltvar_bus_rounds = voltvar["overvoltage_bus_rounds"] + voltvar["undervoltage_bus_rounds"]
    assert voltvar_bus_rounds < rule_bus_rounds
    assert voltvar["voltage_penalty"] < rule["voltage_penalty"]


def test_volt_var_inverters_settle_on_the_curve_within_their_capability(ieee13_scenario, tmp_path):
    from peergrid.agents.devices import reactive_capability_kvar
    from peergrid.grid.inverters import volt_var_pu
    from peergrid.scenarios.runtime.community import prosumer_spec

    out = simulate(ieee13_scenario, "ieee13.toml", "voltvar", tmp_path / "vv", days=1,
                   progress=False)
    records = read_records(out)
    assert checks.all_problems(records, dt_h=1.0) == []
    grid = read_table(out, "grid")
    settled = 0
    for a in ieee13_scenario.agents:
        spec = prosumer_spec(a)
        rating = spec.inverter.pv_kva + spec.inverter.battery_kva
        for _, r in records[records.agent == a.id].iterrows():
            cap = reactive_capability_kvar(spec.inverter, r.pv_kw, r.pv_kw - r.curtailed_kw,
                                           r.battery_kw)
            assert abs(r.q_kvar) <= cap + 1e-6
            phases = a.phases or "abc"
            vm = np.mean([grid.loc[r["round"], f"vm_pu.{a.bus}.{p}"] for p in phases])
            target = float(volt_var_pu(vm)) * rating
            if abs(target) < cap - 1e-3:  # not at the capability limit: on the curve
                assert r.q_kvar == pytest.approx(target, abs=0.01)
                settled += target != 0
    assert settled > 0


def test_volt_watt_curve_is_ieee_1547_defaults_for_pv():
    from peergrid.grid.inverters import volt_watt_pu

    # full output up to 1.06 pu, down linearly to 0.2 of the rating at 1.10 pu (a DER that
    # cannot absorb active power), flat beyond
    got = volt_watt_pu(np.array([1.0, 1.06, 1.08, 1.10, 1.2]))
    assert got == pytest.approx([1.0, 1.0, 0.6, 0.2, 0.2])


def test_volt_watt_limit_is_in_pu_of_the_pv_kwp_not_the_inverter_kva(ieee13_scenario):
    from peergrid.agents.policies import volt_watt_curtail
    from peergrid.agents.spaces import OBS
    from peergrid.scenarios.runtime.community import Community

    community = Community(ieee13_scenario, days=1)
    spec = next(p.spec for p in community.prosumers if p.spec.pv_kwp > 0)
    assert spec.inverter.pv_kva > spec.pv_kwp  # the two bases differ
    obs = np.zeros(max(OBS.values()) + 1, dtype=np.float32)
    obs[OBS["pv"]] = spec.pv_kwp / spec.p_ref_kw  # full output
    obs[OBS["last_dv"]] = 0.8  # 1.08 pu: the curve allows 0.6 of the rating
    assert volt_watt_curtail(spec, obs) == pytest.approx(0.4, rel=1e-5)
