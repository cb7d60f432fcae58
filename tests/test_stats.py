"""Known answers for the statistics the experiment reports state."""

import math

import pandas as pd
import pytest
from hypothesis import given, strategies as st

from peergrid.scenarios.commands.stats import band, summarize, welch_p


def test_summary_known_answer():
    # mean 3, sample std sqrt(2.5); t(0.975, 4) = 2.7764 from the t table.
    s = summarize([1, 2, 3, 4, 5])
    assert s.n == 5 and s.mean == 3
    assert s.std == pytest.approx(math.sqrt(2.5))
    half = 2.7764 * math.sqrt(2.5) / math.sqrt(5)
    assert s.ci95_low == pytest.approx(3 - half, abs=1e-3)
    assert s.ci95_high == pytest.approx(3 + half, abs=1e-3)


def test_one_seed_has_no_interval():
    s = summarize([7.0])
    assert s.mean == 7.0 and math.isnan(s.std) and math.isnan(s.ci95_low)


def test_welch_known_answer():
    # t = -3 / sqrt(1/3 + 1/3) = -3.674 with Welch-Satterthwaite df = 4: p = 0.0213.
    assert welch_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.0213, abs=1e-4)


def test_welch_degenerate_cases():
    assert welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert math.isnan(welch_p([1.0], [2.0, 3.0]))


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=20))
def test_interval_contains_the_mean(values):
    s = summarize(values)
    assert s.ci95_low <= s.mean + 1e-6 * (1 + abs(s.mean))
    assert s.ci95_high >= s.mean - 1e-6 * (1 + abs(s.mean))


def test_band_matches_summary_row_by_row():
    frame = pd.DataFrame([[1, 2, 3, 4, 5], [2, 2, 2, 2, 2]], dtype=float)
    mean, low, high = band(frame)
    s = summarize([1, 2, 3, 4, 5])
    assert mean[0] == 3 and low[0] == pytest.approx(s.ci95_low) and high[0] == pytest.approx(s.ci95_high)
    assert low[1] == high[1] == 2


def test_resume_keeps_complete_runs_and_restarts_partial_ones(ieee13_scenario, tmp_path):
    from peergrid.scenarios.commands.experiment import TrainingJob, finished_wall_s, run_training_jobs

    def job(name: str, episodes: int = 600) -> TrainingJob:
        return TrainingJob(ieee13_scenario, "ieee13.toml", "ippo", 0, str(tmp_path / name),
                           episodes)

    done = tmp_path / "done"
    done.mkdir()
    (done / "timing.txt").write_text("wall_s 93.5\nepisodes 600\n")
    (done / "test.csv").write_text("episode,team_reward\n600,-1.0\n")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "metrics.csv").write_text("episode\n1\n")
    assert finished_wall_s(job("done")) == 93.5
    assert finished_wall_s(job("done", episodes=900)) is None  # asked for more
    assert finished_wall_s(job("partial")) is None
    walls = run_training_jobs([job("done")], workers=1, progress=False, desc="", resume=True)
    assert walls == {str(done): 93.5} and (done / "test.csv").is_file()
