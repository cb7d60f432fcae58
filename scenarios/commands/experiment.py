"""Experiments as commands, and what they share.

``peergrid experiment baselines``: every reference policy and both perfect-foresight
optima (voltage-blind, voltage-aware) on the ``[scenario]`` window as one continuous
stretch. The learning experiments (``scenarios.comparison``, ``scenarios.tuning``) run
many training runs through ``run_training_jobs`` and compare them with these rows.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any


from peergrid.agents.poisoning import Attack
from peergrid.agents.policies import make_policy
from peergrid.scenarios.runtime.community import for_policy
from peergrid.scenarios.runtime.env import PeerGridEnv
from peergrid.scenarios.runtime.logs import versions
from peergrid.scenarios.commands.optimum import aware_schedule, blind_schedule, schedule_actions
from peergrid.scenarios.definition.schema import Scenario
from peergrid.scenarios.commands.train import evaluate_choice, train

REFERENCES = ("nop2p", "selfconsume", "rule", "voltvar")
OPTIMA = {"optimum (voltage-blind)": blind_schedule, "optimum (voltage-aware)": aware_schedule}
BASELINE_FIELDS = ["name", "community_cost", "voltage_penalty", "line_penalty",
                   "overvoltage_rounds", "overvoltage_bus_rounds", "undervoltage_rounds",
                   "undervoltage_bus_rounds", "vm_min_pu", "vm_max_pu", "max_line_loading_pct",
                   "curtailed_kwh", "p2p_kwh", "team_reward", "share_of_optimum_savings",
                   "share_of_blind_optimum_savings", "solve_s"]


@dataclass(frozen=True)
class TrainingJob:
    """One training run of a multi-run experiment."""

    scenario: Scenario
    source: str
    algo: str
    seed: int
    out: str
    episodes: int
    attack: Attack | None = None
    """A lying neighbour (the poisoning experiment)."""


def _train_job(job: TrainingJob) -> tuple[TrainingJob, float]:
    t0 = time.perf_counter()
    train(job.scenario, job.source, job.algo, job.seed, job.out, episodes=job.episodes,
          progress=False, tensorboard=False, attack=job.attack)
    return job, time.perf_counter() - t0


def finished_wall_s(job: TrainingJob) -> float | None:
    """The training wall time of a run already complete in ``job.out`` (its test window
    measured, all its episodes trained), else None."""
    out = Path(job.out)
    timing = out / "timing.txt"
    if not (timing.is_file() and (out / "test.csv").is_file()):
        return None
    fields = dict(line.split() for line in timing.read_text().splitlines() if line.strip())
    return float(fields["wall_s"]) if int(fields["episodes"]) == job.episodes else None


ENGINES = ("local", "ray")
"""Where training runs execute: a local process pool, or Ray tasks (``raysweep.py``)."""


def check_engine(engine: str, address: str | None) -> None:
    """Refuse a bad engine before an experiment clears its directory (``--force``)."""
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise ValueError(f"--address {address}: only with --engine ray")
    if engine == "ray":
        from peergrid.scenarios.commands.raysweep import require_ray

        require_ray()


def run_training_jobs(jobs: list[TrainingJob], workers: int, progress: bool, desc: str,
                      resume: bool = False, engine: str = "local",
                      address: str | None = None) -> dict[str, float]:
    """Every job in a pool of ``workers`` processes (spawned: each imports torch afresh,
    one torch thread each), or with ``engine="ray"`` as Ray tasks (local instance of
    ``workers`` CPUs, or the cluster at ``address``; the same results); wall seconds per
    job's output directory. With ``resume``, runs already complete are kept (each run
    depends only on its scenario, algorithm and seed) and a partly trained run starts
    again."""
    check_engine(engine, address)
    walls: dict[str, float] = {}
    if resume:
        for job in jobs:
            wall = finished_wall_s(job)
            if wall is not None:
                walls[job.out] = wall
            elif Path(job.out).exists():
                shutil.rmtree(job.out)
        jobs = [j for j in jobs if j.out not in walls]
    if engine == "ray":
        from peergrid.scenarios.commands.raysweep import run_on_ray

        return walls | run_on_ray(jobs, workers, progress, desc, address)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        done = pool.map(_train_job, jobs)
        if progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(jobs), desc=desc, unit="run")
        for job, wall in done:
            walls[job.out] = wall
    return walls


def reference_metrics(scenario: Scenario, policy: str) -> dict[str, float]:
    scenario = for_policy(scenario, policy)
    env = PeerGridEnv(scenario)
    policies = {p.spec.agent_id: make_policy(policy, p.spec, p.dt_h)
                for p in env.community.prosumers}
    return evaluate_choice(scenario, lambda obs: {a: policies[a](o) for a, o in obs.items()}, env)


def optimum_metrics(scenario: Scenario, name: str) -> dict[str, float]:
    """An optimum (``OPTIMA``) over the continuous window, replayed through the env with
    the inverters in set-point mode; ``solve_s`` is the schedule's solve time."""
    agents = [a.model_copy(update={"inverter_control": "setpoint"}) for a in scenario.agents]
    scenario = scenario.model_copy(update={"agents": agents})
    env = PeerGridEnv(scenario)
    schedule = OPTIMA[name](env.community)
    plan = schedule_actions(env.community, schedule)
    return {**evaluate_choice(scenario, lambda obs: plan[env.k], env),
            "solve_s": schedule.info["solve_s"]}


def add_savings_shares(rows: list[dict[str, Any]], cost: str = "community_cost") -> None:
    """Each row's share of the optima's savings over nop2p: (nop2p - cost) / (nop2p -
    optimum), for the voltage-aware optimum (the physical limit) and the blind one."""
    by_name = {r["name"]: r for r in rows}
    base = by_name["nop2p"][cost]
    for key, optimum in (("share_of_optimum_savings", "optimum (voltage-aware)"),
                         ("share_of_blind_optimum_savings", "optimum (voltage-blind)")):
        best = by_name[optimum][cost]
        for r in rows:
            r[key] = (base - r[cost]) / (base - best)


def baselines(scenario: Scenario, source: str, out: str | Path, force: bool = False
              ) -> Path:
    """`peergrid experiment baselines`: every reference policy and both optima over the
    continuous evaluation window; ``summary.csv`` and ``report.md``."""
    out = _fresh_dir(out, force)
    started = time.perf_counter()
    rows = [{"name": p, **reference_metrics(scenario, p)} for p in REFERENCES]
    rows += [{"name": n, **optimum_metrics(scenario, n)} for n in OPTIMA]
    add_savings_shares(rows)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=BASELINE_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    _write_baseline_report(out, scenario, source, rows, time.perf_counter() - started)
    return out


def _fresh_dir(out: str | Path, force: bool, resume: bool = False) -> Path:
    out = Path(out)
    if resume:
        out.mkdir(parents=True, exist_ok=True)
        return out
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"--out {out}: not empty; choose another or pass --force")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def baseline_table(rows: list[dict[str, Any]]) -> list[str]:
    """The markdown table of the baselines (README, docs and report)."""
    lines = [
        "| policy | community cost | voltage penalty | line penalty | over-voltage rounds "
        "(bus-rounds) | under-voltage rounds (bus-rounds) | voltage range (pu) | max line "
        "loading | curtailed | share of the optimum's savings |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['community_cost']:,.0f} | {r['voltage_penalty']:,.0f} | "
            f"{r['line_penalty']:,.0f} | {r['overvoltage_rounds']} "
            f"({r['overvoltage_bus_rounds']}) | {r['undervoltage_rounds']} "
            f"({r['undervoltage_bus_rounds']}) | {r['vm_min_pu']:.3f} - {r['vm_max_pu']:.3f} | "
            f"{r['max_line_loading_pct']:.0f} % | {r['curtailed_kwh']:,.0f} kWh | "
            f"{r['share_of_optimum_savings']:.1%} |")
    return lines


def _write_baseline_report(out: Path, s: Scenario, source: str, rows: list[dict],
                           wall: float) -> None:
    solve = {r["name"]: r["solve_s"] for r in rows if r["name"] in OPTIMA}
    lines = [
        "# Baselines: reference policies and the perfect-foresight optima", "",
        f"Scenario `{source}` (`{s.scenario.id}`), feeder `{s.feeder.name}` "
        f"({s.feeder.model}), {s.scenario.days} days from {s.scenario.start} as one continuous "
        "stretch (batteries start at their initial charge once; the optima end the window "
        "with at least that charge).", "",
        *baseline_table(rows), "",
        "Community cost: the community's grid bill (P2P payments are transfers). Penalties "
        "as charged to the agents (grid/penalty.py). A bus-round is one bus out of limits "
        "in one round (any phase; one electrical node counts once: docs/feeder.md). Max line "
        "loading includes transformers in the per-phase model. Share of the optimum's savings: (cost of nop2p - cost) / "
        "(cost of nop2p - cost of the voltage-aware optimum), the best any policy can do "
        "with perfect foresight while keeping the feeder within its limits.", "",
        *_run_section(f"{wall:.1f} s; optimum solve times (s): "
                      + ", ".join(f"{k} {v:.2f}" for k, v in solve.items())),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _run_section(wall: str) -> list[str]:
    """How a report was made: command, wall time, date, versions."""
    return [
        "## Run", "",
        f"- command: `{' '.join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}`",
        f"- wall time: {wall}",
        f"- date: {dt.date.today().isoformat()}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
    ]
