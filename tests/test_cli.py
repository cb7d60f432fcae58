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
        "prices_sdr.png", "soc.png", "voltages.png", "energy.png", "feeder_map.png"}


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
    assert res.returncode == 2 and "nothing: no such directory" in res.stderr
    res = peergrid("logs", "summarize", str(tmp_path))
    assert res.returncode == 2 and "no manifest.json" in res.stderr


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


@pytest.mark.parametrize("argv, message", [
    (["simulate", "--out", "missing/parent/run"], "parent directory missing/parent does not exist"),
    (["simulate", "--out", "afile/run"], "afile is not a directory"),
    (["simulate", "--out", "afile"], "afile: exists and is not a directory"),
    (["train", "--out", "missing/run"], "parent directory missing does not exist"),
    (["deploy", "--out", "afile/d"], "afile is not a directory"),
    (["deploy", "--drop", "1.5", "--out", "d"], "not a probability"),
    (["deploy", "--latency-ms", "nan", "--out", "d"], "not a finite number"),
    (["deploy", "--base-port", "70000", "--out", "d"], "not a TCP port"),
    (["evaluate", "nothing"], "nothing: no such directory"),
    (["logs", "plot", "afile", "--out", "missing/figs"], "afile: not a directory"),
])
def test_paths_and_numbers_are_refused_before_anything_is_written(argv, message, tmp_path,
                                                                   capsys, monkeypatch):
    from peergrid.scenarios.commands.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]  # no parent chain grown


def test_an_os_error_is_one_line_naming_the_path(tmp_path):
    res = peergrid("simulate", "--days", "1", "--out", "/proc/peergrid-run", "--quiet")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "/proc/peergrid-run" in res.stderr
    assert "Traceback" not in res.stderr


def test_force_replaces_a_run_whole(run_dir, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    (old / "energy.png").write_bytes(b"an old figure")
    res = peergrid("simulate", "--days", "1", "--policy", "nop2p", "--out", str(old),
                   "--force", "--quiet")
    assert res.returncode == 0, res.stderr
    assert not (old / "energy.png").exists()  # nothing of the old run beside the new one
    assert json.loads((old / "manifest.json").read_text())["run"]["policy"] == "nop2p"
    assert [p.name for p in tmp_path.iterdir()] == ["old"]  # no staging left behind


def test_a_forced_run_that_fails_leaves_the_old_run_untouched(tmp_path):
    from peergrid.scenarios.runtime.rundir import run_directory

    out = tmp_path / "run"
    out.mkdir()
    (out / "records.jsonl").write_text("recorded\n")
    with pytest.raises(KeyboardInterrupt):
        with run_directory(out, force=True) as staging:
            assert staging != out and staging.parent == tmp_path
            (staging / "records.jsonl").write_text("half a new run\n")
            raise KeyboardInterrupt
    assert (out / "records.jsonl").read_text() == "recorded\n"
    with run_directory(out, force=True) as staging:
        (staging / "records.jsonl").write_text("new\n")
    assert [p.name for p in out.iterdir()] == ["records.jsonl"]
    assert (out / "records.jsonl").read_text() == "new\n"


def test_evaluate_on_a_run_that_is_not_a_training_run_says_so(run_dir):
    res = peergrid("evaluate", str(run_dir))
    assert res.returncode == 2
    assert "not a training run (a `peergrid simulate` run" in res.stderr


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_scenario_show_prints_a_file_that_check_reads_back(fmt, tmp_path):
    res = peergrid("scenario", "show", "case33bw", "--format", fmt)
    assert res.returncode == 0, res.stderr
    shown = tmp_path / f"shown.{fmt}"
    shown.write_text(res.stdout)
    check = peergrid("scenario", "check", str(shown))
    assert check.returncode == 0, check.stderr
    assert "ok (" in check.stdout


def test_every_option_of_every_command_has_help():
    import argparse

    from peergrid.scenarios.commands.cli import build_parser

    def parsers(p: argparse.ArgumentParser, path: str):
        yield path, p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    yield from parsers(sub, f"{path} {name}")

    missing = [f"{path} {a.option_strings or a.dest}" for path, p in parsers(build_parser(), "")
               for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
               and not a.help]
    assert missing == []
    text = build_parser()._subparsers._group_actions[0].choices["deploy"].format_help()
    assert "(default: 1)" in text  # defaults are shown


def test_help_and_logs_commands_do_not_import_torch(run_dir):
    code = ("import sys; from peergrid.scenarios.commands.cli import main; "
            f"main(['logs', 'summarize', {str(run_dir)!r}]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([sys.executable, "-c", "import sys; from peergrid.scenarios.commands"
                          ".cli import build_parser; build_parser().format_help(); "
                          "assert not {'torch', 'numpy', 'pydantic'} & set(sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_an_address_without_the_ray_engine_is_one_line(tmp_path):
    res = peergrid("experiment", "graphs", "--address", "10.0.0.1:6379", "--out",
                   str(tmp_path / "g"))
    assert res.returncode == 2
    assert res.stderr.strip() == "peergrid: --address 10.0.0.1:6379: only with --engine ray"
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("argv, message", [
    (["logs", "plot", "RUN", "--out", "missing/figs"], "parent directory missing does not exist"),
    (["logs", "report", "RUN", "--out", "missing/r.html"], "directory missing does not exist"),
    (["logs", "compare", "RUN", "RUN", "--out", "missing/c"], "parent directory missing"),
    (["train", "--out", "RUN"], "not empty, and not a training run to resume"),
    (["train", "--out", "RUN", "--resume"], "has no checkpoint.state: not a training run"),
    (["simulate", "--days", "400", "--out", "new"], "ieee13.toml with days = 400: scenario.days"),
])
def test_logs_and_train_name_what_is_wrong_with_their_paths(argv, message, run_dir, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = peergrid(*(str(run_dir) if a == "RUN" else a for a in argv), cwd=tmp_path)
    assert res.returncode == 2, res.stdout
    assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "missing").exists() and not (tmp_path / "new").exists()


@pytest.mark.parametrize("argv, message", [
    (["deploy", "--address", "10.0.0.1:6379"], "--address 10.0.0.1:6379: only with --engine ray"),
    (["experiment", "baselines", "--engine", "ray"],
     "--engine ray: baselines trains no sweep of runs (baselines train nothing; "
     "faults-deployed runs real deployments beside in-process twins on this machine)"),
    (["deploy", "--engine", "ray", "--base-port", "30000"],
     "--base-port: not with --engine ray (every node binds a port its operating system picks "
     "and reports it)"),
])
def test_deploy_engine_options_that_do_not_go_together_are_one_line(argv, message, tmp_path):
    res = peergrid(*argv, "--out", str(tmp_path / "d"))
    assert res.returncode == 2 and res.stderr.strip() == f"peergrid: {message}", res.stderr
    assert not (tmp_path / "d").exists()
