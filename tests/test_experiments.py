"""The experiment commands end to end on a tiny budget (slow: dozens of training runs)."""

from __future__ import annotations

import csv
import tomllib

import pytest

from peergrid.scenarios.commands.comparison import SUMMARY_FIELDS, paper_comparison
from peergrid.scenarios.definition.loader import parse_scenario, read_scenario_file
from peergrid.scenarios.commands.tuning import grid, tune

pytestmark = pytest.mark.slow


def _tiny(s):
    algo = s.algo.model_copy(update={"eval_every": 2, "rollout_days": 2, "epochs": 2})
    return s.model_copy(update={"algo": algo})


def test_tuning_writes_settings_a_scenario_file_accepts(ieee13_scenario, tmp_path):
    out = tune(_tiny(ieee13_scenario), "ieee13.toml", tmp_path / "tune", seeds=2,
               episodes=2, progress=False, algorithms=("ippo", "maddpg"))
    with open(out / "tuning.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * len(grid("ippo"))
    tuned = tomllib.loads((out / "tuned.toml").read_text())
    data, source = read_scenario_file("ieee13")
    data["algo"]["overrides"] = tuned["algo"]["overrides"]
    s = parse_scenario(data, source)  # the chosen settings are valid overrides
    assert s.algo.for_algorithm("maddpg").batch_size == 1024
    assert s.algo.for_algorithm("ippo").init_log_std in {g["init_log_std"]
                                                          for g in grid("ippo")}


def test_paper_comparison_reports_intervals_and_tests(ieee13_scenario, tmp_path):
    out = paper_comparison(_tiny(ieee13_scenario), "ieee13.toml", tmp_path / "pc", seeds=2,
                           episodes=2, progress=False, algorithms=("consensus", "ippo"))
    with open(out / "summary.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert list(next(iter(rows.values()))) == SUMMARY_FIELDS
    for name in ("consensus", "ippo"):
        r = {k: float(v) for k, v in rows[name].items() if k not in ("name",) and v != ""}
        assert r["seeds"] == 2
        assert r["team_reward_ci95_low"] <= r["team_reward_mean"] <= r["team_reward_ci95_high"]
    assert 0 <= float(rows["ippo"]["p_vs_consensus"]) <= 1
    report = (out / "report.md").read_text()
    assert "Welch" in report and "test window" in report
    for figure in ("learning_curves.png", "violations_by_bus.png"):
        assert (out / figure).stat().st_size > 0


def test_poisoning_reports_every_rule_and_attack_and_a_random_liar_breaks_metropolis(
        ieee13_scenario, tmp_path):
    from peergrid.scenarios.commands.poisoning import CONDITIONS, poisoning

    out = poisoning(_tiny(ieee13_scenario), "ieee13.toml", tmp_path / "p", seeds=2,
                    episodes=4, progress=False, rules=("metropolis", "median"))
    with open(out / "summary.csv") as f:
        rows = {(r["rule"], r["attack"]): r for r in csv.DictReader(f)}
    assert set(rows) == {(r, a) for r in ("metropolis", "median") for a in CONDITIONS}
    # N(0, 1) vectors: the plain average pulls the liar's neighbours' critics apart; the
    # median keeps every honest critic between honest values
    gap = {r: float(rows[(r, "random")]["critic_disagreement"]) for r in ("metropolis",
                                                                          "median")}
    assert gap["median"] < gap["metropolis"] / 10, gap
    assert int(rows[("median", "random")]["diverged"]) == 0
    assert (out / "poisoning.png").stat().st_size > 0
    assert "lying neighbour" in (out / "report.md").read_text()


def test_the_fault_sweep_reports_every_axis_and_what_each_exchange_costs(ieee13_scenario,
                                                                        tmp_path):
    from peergrid.scenarios.commands.faults import CHEAPER, LOSSES, faults

    out = faults(_tiny(ieee13_scenario), "ieee13.toml", tmp_path / "f", seeds=2, episodes=4,
                 progress=False)
    with open(out / "summary.csv") as f:
        rows = {(r["algo"], r["axis"], r["value"]): r for r in csv.DictReader(f)}
    assert len(rows) == 2 * 14 + len(CHEAPER) + 1
    arrived = [float(rows[("consensus", "loss", str(x))]["arrived_share_mean"]) for x in LOSSES]
    assert arrived[0] == 1.0 and arrived[-1] < arrived[1] < 1.0
    exact = float(rows[("consensus", "loss", "0.0")]["bytes_total_mean"])
    share = {k: float(rows[("consensus", "cheaper", k)]["bytes_total_mean"]) / exact
             for k in CHEAPER}
    assert 0.49 < share["float16"] < 0.51 and 0.24 < share["int8"] < 0.26
    assert share["topk 10 %"] < 0.5
    assert float(rows[("consensus", "loss", "1.0")]["arrived_share_mean"]) == 0
    # 4 steps in a run: a staleness of 4 (two updates) sends nothing, ippo exchanges nothing
    assert float(rows[("consensus", "staleness", "4")]["bytes_total_mean"]) == 0
    assert float(rows[("ippo", "none", "-")]["bytes_total_mean"]) == 0
    for figure in ("faults.png", "bytes.png"):
        assert (out / figure).stat().st_size > 0
    assert "What each byte of consensus buys" in (out / "report.md").read_text()


def test_a_deployed_online_learner_equals_the_in_process_one_of_its_seed(ieee13_scenario,
                                                                          tmp_path):
    import pandas as pd

    from peergrid.scenarios.commands.deploy import with_faults
    from peergrid.scenarios.commands.faults import confirm_deployed

    s = with_faults(_tiny(ieee13_scenario), base_port=29600)
    out = confirm_deployed(s, "ieee13.toml", tmp_path / "d", loss=0.3, days=4, seeds=2,
                           deployments=1)
    rows = pd.read_csv(out / "deployed.csv")
    deployed = rows[rows.runtime == "zeromq"].iloc[0]
    assert deployed.seed == 2  # not one of the in-process seeds 0 and 1
    same = rows[(rows.runtime == "in-process") & (rows.seed == deployed.seed)].iloc[0]
    assert deployed.team_reward == same.team_reward  # 13 processes, sockets: the same run
    assert "the two runtimes agree" in (out / "deployed.md").read_text()
