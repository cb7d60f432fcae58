"""Scenario files: the default loads; bad input names file, field and value."""

from __future__ import annotations

import copy
import tomllib

import numpy as np
import pytest

from peergrid.scenarios.definition import profiles
from peergrid.scenarios.definition.errors import ScenarioError
from peergrid.scenarios.definition.loader import SHIPPED_DIR, load_scenario, parse_scenario


@pytest.fixture(scope="module")
def raw():
    with open(SHIPPED_DIR / "ieee13.toml", "rb") as f:
        return tomllib.load(f)


def problems_for(raw, mutate) -> list[str]:
    data = copy.deepcopy(raw)
    mutate(data)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, "bad.toml")
    assert "bad.toml" in str(err.value)
    return err.value.problems


def test_default_scenario_follows_the_paper_setup(ieee13_scenario):
    s = ieee13_scenario
    assert s.feeder.name == "ieee13"
    assert (s.feeder.vm_min_pu, s.feeder.vm_max_pu) == (0.95, 1.05)
    kinds = {(a.pv_kwp > 0, a.battery_kwh > 0) for a in s.agents}
    assert kinds == {(False, False), (True, False), (True, True)}
    assert 10 <= len(s.agents) <= 20


def test_negative_battery_names_field_and_value(raw):
    def mutate(d):
        d["agents"][3]["battery_kwh"] = -5.0
        d["agents"][3]["battery_kw"] = 1.0
    problems = problems_for(raw, mutate)
    assert any(p.startswith("agents[3].battery_kwh = -5.0") for p in problems), problems


def test_unknown_key_is_an_error_not_ignored(raw):
    problems = problems_for(raw, lambda d: d["feeder"].update(slack_vm=1.0))
    assert any("feeder.slack_vm" in p and "unknown field" in p for p in problems)


def test_all_problems_are_reported_at_once(raw):
    def mutate(d):
        d["agents"][0]["bus"] = "999"
        d["agents"][1]["load_profile"] = "H9-Z"
        d["agents"][2]["pv_profile"] = "PV42"
    problems = problems_for(raw, mutate)
    assert len(problems) == 3
    assert any("agents[0].bus = '999'" in p for p in problems)
    assert any("agents[1].load_profile = 'H9-Z'" in p for p in problems)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["tariff"].update(feed_in_price_per_kwh=0.5), "feed_in_price_per_kwh = 0.5"),
        (lambda d: d["tariff"].update(retail_price_per_kwh=[0.1] * 23), "24 hourly prices"),
        (lambda d: d["agents"][1].update(id="a01"), "duplicate agent id"),
        (lambda d: d["scenario"].update(step_min=45), "scenario.step_min = 45"),
        (lambda d: d["scenario"].update(start="2017-03-01"), "profile year 2016"),
        (lambda d: d["feeder"].update(vm_min_pu=1.1), "must be below vm_max_pu"),
        (lambda d: d["agents"][0].update(soc_init=0.95), "soc_init = 0.95"),
        (lambda d: d["agents"][0].pop("bus"), "agents[0].bus: required field is missing"),
        (lambda d: d.setdefault("deploy", {}).update(
            kills=[{"agent": "a5", "at_round": 6, "restart_round": 9}]),
         "deploy.kills[0].agent = 'a5': not an agent"),
        (lambda d: d.setdefault("deploy", {}).update(
            kills=[{"agent": "a05", "at_round": 6, "restart_round": 4}]),
         "restart_round = 4 must come after at_round = 6"),
        (lambda d: d.setdefault("deploy", {}).update(
            partitions=[{"a": "a03", "b": "markt", "start_round": 3, "end_round": 4}]),
         "deploy.partitions[0].b = 'markt': not a node"),
        (lambda d: d.setdefault("deploy", {}).update(
            partitions=[{"a": "a03", "b": "grid", "start_round": 5, "end_round": 4}]),
         "end_round = 4 is before start_round = 5"),
    ],
)
def test_bad_fields_are_named(raw, mutate, fragment):
    problems = problems_for(raw, mutate)
    assert any(fragment in p for p in problems), problems


def test_toml_syntax_error_names_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[scenario\nid = 1\n")
    with pytest.raises(ScenarioError, match="broken.toml"):
        load_scenario(bad)


def test_unknown_scenario_lists_shipped_ones():
    with pytest.raises(ScenarioError, match="ieee13"):
        load_scenario("no-such-scenario")


def test_household_profiles_are_real_simbench_data():
    loads, pvs = profiles.available_profiles()
    assert {"H0-A", "H0-B", "H0-C"} <= loads and {f"PV{i}" for i in range(1, 9)} <= pvs
    load = profiles.load_factor("H0-A", 60)
    pv = profiles.pv_factor("PV3", 60)
    assert len(load) == len(pv) == 366 * 24  # 2016 is a leap year
    assert load.max() == pytest.approx(1.0) and load.min() > 0
    june = profiles.window(pv, profiles.dt.date(2016, 6, 8), 1)
    assert june[:4].max() == 0 and june[11:14].min() > 0.3  # dark at night, bright at noon


def test_the_spring_dst_hour_is_interpolated_not_missing():
    # SimBench time stamps are local time: 27 March 2016 02:00-02:45 do not exist
    for factor in (profiles.load_factor("H0-A", 15), profiles.pv_factor("PV3", 15),
                   profiles.load_factor("G1-A", 60)):
        assert np.isfinite(factor.to_numpy()).all()
    quarter = profiles.load_factor("H0-A", 15)
    gap = quarter.loc["2016-03-27 02:00":"2016-03-27 02:45"].to_numpy()
    before, after = quarter.loc["2016-03-27 01:45"], quarter.loc["2016-03-27 03:00"]
    assert len(gap) == 4
    assert np.all((gap >= min(before, after) - 1e-12) & (gap <= max(before, after) + 1e-12))


def test_window_outside_profile_year_is_rejected():
    with pytest.raises(ValueError, match="outside the profile year"):
        profiles.window(profiles.load_factor("H0-A", 60), profiles.dt.date(2016, 12, 31), 2)


def test_step_length_averages_quarter_hours():
    quarter = profiles.load_factor("H0-B", 15)
    hourly = profiles.load_factor("H0-B", 60)
    raw_q = quarter * 1.0
    ratio = hourly.iloc[:48].to_numpy() / np.add.reduceat(raw_q.iloc[:192].to_numpy(), range(0, 192, 4)) * 4
    assert np.allclose(ratio, ratio[0])  # same shape, one scale (each normalised to its own peak)


# ---- placement: agents generated on a feeder's load buses ---------------------------

def test_switching_the_feeder_is_one_line(raw):
    data = copy.deepcopy(raw)
    del data["agents"]
    data["placement"] = {}
    data["feeder"]["name"] = "case33bw"
    s = parse_scenario(data, "switched.toml")
    assert len(s.agents) == 32 and {a.bus for a in s.agents} == {str(i) for i in range(2, 34)}
    data["feeder"]["name"] = "dickert_lv"
    assert len(parse_scenario(data, "switched.toml").agents) == 120


def test_placement_follows_the_rule_and_the_seed():
    s = load_scenario("case33bw")
    from peergrid.grid.feeders import base_loads

    loads = base_loads("case33bw")
    scale = {round(a.load_peak_kw / loads[a.bus][0], 6) for a in s.agents}
    assert len(scale) == 1 and scale.pop() > 1  # one "design_peak" factor for every agent
    for a in s.agents:
        assert (a.pv_kwp > 0) == (a.pv_profile is not None)
        assert a.pv_kwp == pytest.approx(0.0 if a.pv_profile is None else 1.5 * a.load_peak_kw)
        assert a.battery_kwh == 0 or (a.pv_kwp > 0 and a.battery_kw == pytest.approx(
            0.25 * a.battery_kwh))
    n_pv = sum(a.pv_kwp > 0 for a in s.agents)
    assert 0.3 * 32 < n_pv < 0.9 * 32  # pv_share = 0.6
    assert load_scenario("case33bw").agents == s.agents  # same seed, same agents
    assert load_scenario("case33bw", days=1).agents == s.agents  # --days changes no agent


@pytest.mark.parametrize("name", ["ieee13", "case33bw", "dickert_lv"])
def test_every_shipped_community_peaks_at_its_feeders_design_load(name):
    # the calibration rule (docs/feeder.md): household profiles peak in winter; scaled so
    # that the coincident peak over every window the scenario uses (training, validation,
    # test) is the load the feeder was built for, and no window exceeds it
    from peergrid.scenarios.commands.diagnose import diagnose
    from peergrid.scenarios.definition.loader import WINDOWS

    s = load_scenario(name)
    d = {w: diagnose(s, window=w) for w in WINDOWS}
    assert max(x["community_peak_over_design"] for x in d.values()) == pytest.approx(1.0,
                                                                                   abs=0.002)
    for x in d.values():  # every window: the feeder alone is inside its limits
        community, zero, _ = x["cases"]
        assert zero["overvoltage_rounds"] == zero["undervoltage_rounds"] == 0
        assert community["nonconverged_rounds"] == 0
    test = d["test"]["cases"][0]  # the agents' midday export pushes it out
    assert test["overvoltage_rounds"] > 0
    assert d["train"]["cases"][0]["undervoltage_rounds"] > 0  # and evening load, some days


def test_placement_count_samples_load_buses_by_seed(raw):
    data = copy.deepcopy(raw)
    del data["agents"]
    data["feeder"]["name"] = "dickert_lv"
    data["placement"] = {"count": 32}
    first = parse_scenario(data, "x.toml").agents
    assert len(first) == 32 and len({a.bus for a in first}) == 32
    data["scenario"]["seed"] += 1
    assert [a.bus for a in parse_scenario(data, "x.toml").agents] != [a.bus for a in first]


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d.update(placement={}), "not both"),
    (lambda d: d.pop("agents"), "[placement]"),
    (lambda d: (d.pop("agents"), d.update(placement={"count": 500})),
     "placement.count = 500: feeder 'ieee13' has only 9 load buses"),
    (lambda d: (d.pop("agents"), d.update(placement={"pv_profiles": ["PV9"]})),
     "placement.pv_profiles[0] = 'PV9': unknown profile"),
    (lambda d: d["feeder"].update(name="ieee34"), "feeder.name = 'ieee34'"),
])
def test_bad_placement_is_named(raw, mutate, fragment):
    problems = problems_for(raw, mutate)
    assert any(fragment in p for p in problems), problems


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["agents"][0].update(battery_kwh=float("inf")),
     "agents[0].battery_kwh = inf: must be a finite number"),
    (lambda d: d["feeder"].update(vm_max_pu=float("nan")),
     "feeder.vm_max_pu = nan: must be a finite number"),
    (lambda d: d["agents"][0].update(load_peak_kw=True),
     "agents[0].load_peak_kw = True: a boolean where a number belongs"),
    (lambda d: d["scenario"].update(seed="1"),
     "scenario.seed = '1': a quoted string where a number belongs (write it without "
     "quotes)"),
    (lambda d: d.pop("schema_version"), "schema_version: required field is missing"),
    (lambda d: d["feeder"].update(capacitors=0),
     "feeder.capacitors = 0: a number where true or false belongs"),
    (lambda d: d["feeder"].update(capacitors="false"),
     "feeder.capacitors = 'false': a quoted string where true or false belongs (write it "
     "without quotes)"),
    (lambda d: d["scenario"].update(seed=1.0),
     "scenario.seed = 1.0: a decimal number where an integer belongs"),
    (lambda d: d["agents"][2].update(load_peek_kw=3.0),
     "agents[2].load_peek_kw = 3.0: unknown field; did you mean 'load_peak_kw'?"),
    (lambda d: d.update(tarif={}), "tarif = {}: unknown field; did you mean 'tariff'?"),
])
def test_lax_values_are_refused_naming_field_and_value(raw, mutate, expected):
    problems = problems_for(raw, mutate)
    assert expected in problems, problems
    assert len(problems) == 1  # one line per mistake, not pydantic's as well


def test_a_strange_field_name_gets_no_wrong_hint(raw):
    problems = problems_for(raw, lambda d: d["feeder"].update(zzzz=1))
    assert problems == ["feeder.zzzz = 1: unknown field"]


@pytest.mark.parametrize("name", ["ieee13", "case33bw", "dickert_lv"])
@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_a_shown_scenario_reads_back_to_the_same_scenario(name, fmt, tmp_path):
    from peergrid.scenarios.definition.loader import to_file_text

    s = load_scenario(name)
    path = tmp_path / f"shown.{fmt}"
    path.write_text(to_file_text(s, fmt))
    back = load_scenario(path)
    assert back.model_dump(exclude={"placement"}) == s.model_dump(exclude={"placement"})
