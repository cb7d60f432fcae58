"""The command line, run as a user runs it: a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest


def peergrid(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "peergrid.scenarios.commands.cli", *args],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "day"
    res = peergrid("simulate", "--scenario", "ieee13", "--policy", "rule", "--days", "1",
                   "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "Community (13 agents, 24 rounds, policy rule)" in res.stdout
    return out


def test_version_names_the_installed_package():
    from importlib.metadata import version

    res = peergrid("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"peergrid {version('peergrid')}"


def test_simulate_writes_records_manifest_and_summary(run_dir):
    assert len(list((run_dir / "agents").glob("*.jsonl"))) == 13
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == manifest["scenario"]["scenario"]["seed"]
    assert manifest["run"]["policy"] == "rule" and "pandapower" in manifest["versions"]
    assert (run_dir / "summary.json").is_file()


def test_logs_commands_read_the_run(run_dir):
    assert peergrid("logs", "check", str(run_dir)).stdout.strip() == "all invariants hold"
    summary = json.loads(peergrid("logs", "summarize", str(run_dir), "--json").stdout)
    assert summary["community"]["rounds"] == 24
    plotted = peergrid("logs", "plot", str(run_dir)).stdout.split()
    assert {p.rsplit("/", 1)[-1] for p in plotted} == {
        "prices_sdr.png", "soc.png", "voltages.png", "energy.png"}


def test_existing_run_is_never_overwritten(run_dir):
    before = (run_dir / "agents" / "a01.jsonl").read_text()
    res = peergrid("simulate", "--days", "1", "--out", str(run_dir), "--quiet")
    assert res.returncode == 2 and "not empty" in res.stderr
    assert (run_dir / "agents" / "a01.jsonl").read_text() == before


def test_bad_scenario_exits_2_naming_file_field_and_value(tmp_path):
    from peergrid.scenarios.definition.loader import SHIPPED_DIR

    good = (SHIPPED_DIR / "ieee13.toml").read_text()
    text = re.sub(r"pv_kwp = [\d.]+", "pv_kwp = -3.0", good, count=1)
    assert text != good
    bad = tmp_path / "mine.toml"
    bad.write_text(text)
    res = peergrid("scenario", "check", str(bad))
    assert res.returncode == 2
    assert "mine.toml: agents[0].pv_kwp = -3.0" in res.stderr


def test_faults_on_the_command_line_are_checked_before_anything_starts(tmp_path):
    res = peergrid("deploy", "--partition", "a03:markt@3-4", "--out", str(tmp_path / "d"))
    assert res.returncode == 2
    assert "command line: deploy.partitions[0].b = 'markt': not a node" in res.stderr
    assert not (tmp_path / "d").exists()  # nothing started, nothing written
    res = peergrid("deploy", "--partition", "a03-market", "--out", str(tmp_path / "d"))
    assert res.returncode == 2 and "expected A:B@START[-END]" in res.stderr


def test_a_policy_the_nodes_could_not_load_is_refused_before_anything_starts(tmp_path):
    for args, message in ((["--policy", str(tmp_path / "typo")], "no manifest.json"),
                          (["--policy", "rule", "--learn"], "--learn continues a trained run")):
        res = peergrid("deploy", *args, "--out", str(tmp_path / "d"))
        assert res.returncode == 2 and message in res.stderr, res.stderr
        assert not (tmp_path / "d").exists()


def test_logs_on_a_missing_run_is_a_clear_error(tmp_path):
    res = peergrid("logs", "summarize", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "manifest.json" in res.stderr


def test_train_then_evaluate_writes_checked_records(tmp_path):
    run = tmp_path / "cons"
    res = peergrid("train", "--scenario", "ieee13", "--algo", "consensus", "--seed", "3",
                   "--episodes", "4", "--out", str(run), "--quiet")
    assert res.returncode == 0, res.stderr
    for name in ("metrics.csv", "eval.csv", "checkpoint.state", "manifest.json"):
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir())  # TensorBoard event file
    again = peergrid("train", "--scenario", "ieee13", "--out", str(run), "--quiet")
    assert again.returncode == 2 and "--resume" in again.stderr  # nothing overwritten
    res = peergrid("evaluate", str(run))
    assert res.returncode == 0, res.stderr
    assert "Community (13 agents, 168 rounds" in res.stdout
    check = peergrid("logs", "check", str(run / "evaluation"))
    assert check.stdout.strip() == "all invariants hold"


def test_diagnose_shows_the_feeder_is_fine_alone_and_the_agents_push_it_out():
    res = peergrid("scenario", "diagnose", "ieee13", "--json")
    assert res.returncode == 0, res.stderr
    windows = json.loads(res.stdout)
    assert list(windows) == ["train", "validation", "test"]
    d = windows["test"]
    community, zero, pv_alone = d["cases"]
    assert [c["name"] for c in d["cases"]] == ["community (nop2p)", "zero injections", "PV alone"]
    # with no injections the feeder sits inside its limits: every violation is the agents'
    assert zero["overvoltage_rounds"] == zero["undervoltage_rounds"] == 0
    assert max(zero["max_line_loading_pct"].values()) < 1.0
    # with the community's own injections: over-voltage at sunny middays at the far end,
    # under-voltage at the evening peak, and a real conductor loaded above 90 %
    assert community["overvoltage_rounds"] > 0 and community["undervoltage_rounds"] > 0
    assert set(community["overvoltage_hours"]) <= set(range(8, 17))
    assert set(community["undervoltage_hours"]) <= set(range(16, 24))
    assert {"611", "675", "671/680/692"} <= set(community["overvoltage_buses"])
    assert max(community["max_line_loading_pct"].values()) > 90.0
    assert pv_alone["overvoltage_rounds"] >= community["overvoltage_rounds"]
    text = peergrid("scenario", "diagnose", "ieee13", "--window", "train").stdout
    assert "train window: 21 days from 2016-04-11" in text
    assert "zero injections:" in text and "PV alone:" in text and "line loading" in text


@pytest.mark.parametrize("argv", [
    ["deploy", "--days", "0", "--out", "x"], ["deploy", "--days", "-1", "--out", "x"],
    ["train", "--episodes", "0", "--out", "x"], ["train", "--episodes", "-3", "--out", "x"],
    ["simulate", "--days", "0", "--out", "x"], ["experiment", "graphs", "--seeds", "0"],
    ["experiment", "poisoning", "--workers", "two"], ["node", "market", "--config", "x",
                                                      "--incarnation", "-1"]])
def test_counts_are_refused_before_anything_starts_or_is_written(argv, tmp_path, capsys,
                                                                  monkeypatch):
    from peergrid.scenarios.commands.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "integer" in err or "negative" in err, err
    assert list(tmp_path.iterdir()) == []  # nothing written
