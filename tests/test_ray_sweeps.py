"""Sweeps on Ray (``--engine ray``): the local pool's results, a run whose worker died is
run again from clean, and an address is refused when it names another cluster than the
Ray already initialised in the process. Each test starts (and stops) one local Ray
instance."""

from __future__ import annotations

import csv
import os
import re
import sys
from pathlib import Path

import pytest

from peergrid.scenarios.commands.experiment import TrainingJob, check_engine

# the files of a run that depend on the run alone (manifest.json and timing.txt hold dates)
RUN_FILES = ("metrics.csv", "eval.csv", "test.csv", "exchange.json", "best.state",
             "checkpoint.state")
DATED = ("manifest.json", "timing.txt")


def _tiny(s):
    algo = s.algo.model_copy(update={"eval_every": 2, "rollout_days": 2, "epochs": 2})
    return s.model_copy(update={"algo": algo})


def _without_wall_time(report: Path) -> list[str]:
    return [line for line in report.read_text().splitlines()
            if not line.startswith("- wall time:")]


def _without_wall_columns(summary: Path) -> list[list[str]]:
    """The cells of a ``summary.csv`` as written, but its wall-time columns."""
    rows = list(csv.reader(summary.read_text().splitlines()))
    kept = [i for i, name in enumerate(rows[0]) if not name.startswith("wall_")]
    return [[row[i] for i in kept] for row in rows]


def _assert_same_sweep(local: Path, on_ray: Path) -> None:
    """A sweep on Ray wrote what the local pool wrote, wall times apart: the summary, the
    report, the same runs (no staging directory left) and each run's files byte for byte
    (but those that hold dates)."""
    assert _without_wall_columns(on_ray / "summary.csv") == _without_wall_columns(
        local / "summary.csv")
    assert _without_wall_time(on_ray / "report.md") == _without_wall_time(local / "report.md")
    runs = sorted(p.name for p in (local / "train").iterdir())
    assert sorted(p.name for p in (on_ray / "train").iterdir()) == runs
    for run in runs:
        files = sorted(p.name for p in (local / "train" / run).iterdir()
                       if p.name not in DATED)
        assert "test.csv" in files and "best.state" in files, (run, files)
        assert sorted(p.name for p in (on_ray / "train" / run).iterdir()
                      if p.name not in DATED) == files, run
        for name in files:
            assert ((on_ray / "train" / run / name).read_bytes()
                    == (local / "train" / run / name).read_bytes()), (run, name)


def test_graphs_on_ray_write_the_local_pools_summary_and_runs(ieee13_scenario, tmp_path):
    ray = pytest.importorskip("ray")
    from peergrid.scenarios.commands.comparison import graphs

    s = _tiny(ieee13_scenario)
    budget = {"seeds": 2, "episodes": 2, "progress": False, "topologies": ("ring",)}
    local = graphs(s, "ieee13.toml", tmp_path / "local", **budget)
    on_ray = graphs(s, "ieee13.toml", tmp_path / "ray", engine="ray", **budget)
    assert not ray.is_initialized()  # the instance it started is stopped
    assert (on_ray / "summary.csv").read_bytes() == (local / "summary.csv").read_bytes()
    _assert_same_sweep(local, on_ray)


@pytest.mark.slow  # ~40 s; the graphs test above keeps Ray's equality in the default suite
def test_paper_comparison_on_ray_writes_the_local_pools_summary_report_and_runs(
        ieee13_scenario, tmp_path):
    """The path that keeps each run's wall time (``run_training_jobs``' result, as
    ``faults`` does): the report's training time per run comes from the Ray tasks."""
    ray = pytest.importorskip("ray")
    from peergrid.scenarios.commands.comparison import paper_comparison

    s = _tiny(ieee13_scenario)
    s = s.model_copy(update={"scenario": s.scenario.model_copy(update={"days": 1})})
    budget = {"seeds": 2, "episodes": 2, "progress": False,
              "algorithms": ("consensus", "ippo")}
    local = paper_comparison(s, "ieee13.toml", tmp_path / "local", **budget)
    on_ray = paper_comparison(s, "ieee13.toml", tmp_path / "ray", engine="ray", **budget)
    assert not ray.is_initialized()
    _assert_same_sweep(local, on_ray)
    wall = next(line for line in (on_ray / "report.md").read_text().splitlines()
                if line.startswith("- wall time:"))
    assert re.search(r"training per run \(s\): consensus \d+, ippo \d+$", wall), wall


def _dies_at_first_checkpoint_once(job: TrainingJob) -> float:
    """The real attempt, except that the first one kills its own worker process right
    after it wrote its first checkpoint: a run directory partly written, no result."""
    from peergrid.scenarios.commands import train as train_module
    from peergrid.scenarios.commands.raysweep import train_attempt

    try:
        os.close(os.open(Path(job.out).parent / "died", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return train_attempt(job)
    write_state = train_module.write_state

    def write_then_die(path: Path, state: dict) -> None:
        write_state(path, state)
        if path.name == train_module.CHECKPOINT:
            (Path(job.out).parent / "died").write_text(str(path.parent))
            os._exit(1)

    train_module.write_state = write_then_die
    return train_attempt(job)


@pytest.mark.slow  # ~25 s (the suite's 10 min); Ray's equality stays in it (graphs)
def test_a_run_whose_worker_died_is_retried_from_clean_and_equals_the_run(ieee13_scenario,
                                                                         tmp_path):
    ray = pytest.importorskip("ray")
    from peergrid.scenarios.commands.raysweep import run_on_ray
    from peergrid.scenarios.commands.train import train

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests
    s = _tiny(ieee13_scenario)
    (tmp_path / "train").mkdir()
    job = TrainingJob(s, "ieee13.toml", "consensus", 1, str(tmp_path / "train" / "run"), 2)
    walls = run_on_ray([job], workers=1, progress=False, desc="",
                       attempt=_dies_at_first_checkpoint_once)
    partial = Path((tmp_path / "train" / "died").read_text())  # the first attempt died
    assert partial.name.startswith(".run.attempt-") and not partial.exists()  # and was cleared
    assert set(walls) == {job.out} and walls[job.out] > 0
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["died", "run"]
    reference = train(s, "ieee13.toml", "consensus", 1, tmp_path / "reference", episodes=2,
                      progress=False, tensorboard=False)
    for name in RUN_FILES:
        assert (Path(job.out) / name).read_bytes() == (reference / name).read_bytes(), name
    assert (Path(job.out) / "timing.txt").is_file()


def test_engines_are_checked_before_anything_runs(monkeypatch):
    with pytest.raises(ValueError, match="--engine 'dask'"):
        check_engine("dask", None)
    with pytest.raises(ValueError, match="--address .* only with --engine ray"):
        check_engine("local", "10.0.0.1:6379")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ImportError) as err:
        check_engine("ray", None)
    assert str(err.value) == "--engine ray needs Ray: pip install 'peergrid[cluster]'"


def test_an_address_naming_another_cluster_than_the_initialised_ray_is_refused(
        ieee13_scenario, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from peergrid.comms.raycluster import RayClusterMismatch, init_ray
    from peergrid.scenarios.commands.raysweep import run_on_ray

    assert init_ray(None, num_cpus=1)  # started here: the caller shuts it down
    try:
        gcs = ray.get_runtime_context().gcs_address
        port = int(gcs.rsplit(":", 1)[1])
        monkeypatch.setenv("RAY_ADDRESS", gcs)  # what "auto" finds, whatever else runs here
        for same in (None, gcs, f"127.0.0.1:{port}", f"localhost:{port}", "auto", "local"):
            assert init_ray(same) is False, same  # used as it is, left to its owner
        for other in (f"127.0.0.1:{port + 1}", f"198.51.100.7:{port}"):
            with pytest.raises(RayClusterMismatch) as err:
                init_ray(other)
            assert str(err.value) == (
                f"--address {other} names another cluster than the one Ray is already "
                f"connected to in this process, at {gcs}: shut that one down first "
                "(ray.shutdown()), or pass no address to use it")
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port + 1}")
        with pytest.raises(RayClusterMismatch,
                           match=rf"^--address auto \(\S+:{port + 1}\) names another cluster"):
            init_ray("auto")
        job = TrainingJob(ieee13_scenario, "ieee13.toml", "consensus", 0,
                          str(tmp_path / "run"), 2)
        with pytest.raises(RayClusterMismatch):  # before any run, and the caller's Ray stays
            run_on_ray([job], 1, False, "", address=f"127.0.0.1:{port + 1}")
        assert ray.is_initialized() and not (tmp_path / "run").exists()
    finally:
        ray.shutdown()
