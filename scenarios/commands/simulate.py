"""Run a reference policy through the mesa runtime and write the run directory."""

from __future__ import annotations

import time
from pathlib import Path

from peergrid.agents.policies import make_policy
from peergrid.scenarios.runtime.community import for_policy
from peergrid.scenarios.runtime.logs import RunWriter, write_manifest
from peergrid.scenarios.runtime.model import MarketModel
from peergrid.scenarios.definition.schema import Scenario


class RunDirectoryNotEmpty(FileExistsError):
    """Refuse to mix a new run into an existing one (recorded data is never lost)."""


def prepare_run_dir(out: str | Path, force: bool) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise RunDirectoryNotEmpty(
                f"--out {out}: directory exists and is not empty; choose another or pass --force"
            )
        for sub in ("agents",):
            for f in (out / sub).glob("*.jsonl"):
                f.unlink()
        for name in ("market.jsonl", "grid.jsonl", "summary.json", "manifest.json"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def simulate(
    scenario: Scenario,
    scenario_source: str,
    policy: str,
    out: str | Path,
    days: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Simulate ``days`` days with a reference policy; return the run directory."""
    out = prepare_run_dir(out, force)
    days = scenario.scenario.days if days is None else days
    scenario = for_policy(scenario, policy)
    started = time.perf_counter()
    with RunWriter(out) as writer:
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
    return out
