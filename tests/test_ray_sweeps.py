"""Sweeps on Ray (``--engine ray``): the local pool's results, and a run whose worker died
is run again from clean. Each test starts (and stops) a local Ray instance of 2 CPUs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from peergrid.scenarios.commands.experiment import TrainingJob, check_engine

# the files of a run that depend on the run alone (manifest.json and timing.txt hold dates)
RUN_FILES = ("metrics.csv", "eval.csv", "test.csv", "exchange.json", "best.state",
             "checkpoint.state")


def _tiny(s):
    algo = s.algo.model_copy(update={"eval_every": 2, "rollout_days": 2, "epochs": 2})
    return s.model_copy(update={"algo": algo})


def _without_wall_time(report: Path) -> list[str]:
    return [line for line in report.read_text().splitlines()
            if not line.startswith("- wall time:")]


def test_graphs_on_ray_write_the_local_pools_summary_and_runs(ieee13_scenario, tmp_path):
    ray = pytest.importorskip("ray")
    from peergrid.scenarios.commands.comparison import graphs

    s = _tiny(ieee13_scenario)
    budget = {"seeds": 2, "episodes": 2, "progress": False, "topologies": ("ring",)}
    local = graphs(s, "ieee13.toml", tmp_path / "local", **budget)
    on_ray = graphs(s, "ieee13.toml", tmp_path / "ray", engine="ray", **budget)
    assert not ray.is_initialized()  # the instance it started is stopped
    assert (on_ray / "summary.csv").read_bytes() == (local / "summary.csv").read_bytes()
    assert _without_wall_time(on_ray / "report.md") == _without_wall_time(local / "report.md")
    runs = sorted(p.name for p in (local / "train").iterdir())
    assert sorted(p.name for p in (on_ray / "train").iterdir()) == runs  # no staging left
    for run in runs:
        for name in RUN_FILES:
            assert ((on_ray / "train" / run / name).read_bytes()
                    == (local / "train" / run / name).read_bytes()), (run, name)


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
