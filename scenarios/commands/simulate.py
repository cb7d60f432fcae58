"""Run a reference policy through the mesa runtime and write the run directory."""

from __future__ import annotations

import time
from pathlib import Path

from peergrid.agents.policies import make_policy
from peergrid.scenarios.runtime.community import for_policy
from peergrid.scenarios.runtime.logs import (IN_PROCESS_BUFFER_ROUNDS, RunWriter, check_format,
                                             write_manifest)
from peergrid.scenarios.runtime.model import MarketModel
from peergrid.scenarios.runtime.rundir import run_directory
from peergrid.scenarios.definition.schema import Scenario


def simulate(
    scenario: Scenario,
    scenario_source: str,
    policy: str,
    out: str | Path,
    days: int | None = None,
    progress: bool = True,
    force: bool = False,
    fmt: str = "jsonl",
) -> Path:
    """Simulate ``days`` days with a reference policy; return the run directory.
    ``fmt``: "jsonl" or "parquet" (comms.runlog; checked before anything runs)."""
    check_format(fmt)
    days = scenario.scenario.days if days is None else days
    if days < 1:
        raise ValueError(f"days = {days}: must be at least 1")
    scenario = for_policy(scenario, policy)
    with run_directory(out, force) as staging:
        _simulate(scenario, scenario_source, policy, staging, days, progress, fmt)
    return Path(out)


def _simulate(scenario: Scenario, scenario_source: str, policy: str, out: Path, days: int,
              progress: bool, fmt: str = "jsonl") -> None:
    started = time.perf_counter()
    with RunWriter(out, buffer_rounds=IN_PROCESS_BUFFER_ROUNDS, fmt=fmt) as writer:
        model = MarketModel(
            scenario,
            lambda prosumer: make_policy(policy, prosumer.spec, prosumer.dt_h),
            days=days,
            on_round=writer.write_round,
        )
        write_manifest(out, scenario_source, scenario, runtime="mesa", policy=policy, days=days,
                       start=model.community.start.isoformat())
        rounds = range(model.community.n_rounds)
        if progress:
            from tqdm import tqdm

            rounds = tqdm(rounds, desc=f"simulate {policy}", unit="round")
        for _ in rounds:
            model.step()
    elapsed = time.perf_counter() - started
    (out / "timing.txt").write_text(f"wall_s {elapsed:.2f}\nrounds {model.community.n_rounds}\n")
