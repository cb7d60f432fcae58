"""`peergrid experiment tune`: the same small tuning budget for every algorithm.

For each algorithm, a grid of four settings: two step sizes x two exploration scales
(PPO: the initial std of the Gaussian policy; MADDPG: the initial std of its action
noise; 0.3 and 0.1 of the action box's half-width for both), each trained with the same
seeds and the same number of episodes. A setting's score is its runs' best team reward
on the **validation** window (the model-selection criterion of every run), averaged
over seeds: nothing here looks at the test window. The best setting of each algorithm
is written as ``[algo.overrides.<name>]`` for a scenario file (``tuned.toml``), with
every run's score in ``tuning.csv`` and a report.

Why exploration is in the grid: a pilot with the shipped std of 0.5 spent most of its
training reward on voltage penalties its own exploration caused (random reactive power
on 13 inverters), 30,000-46,000 per training day against 13,800 for a whole validation
week of `nop2p`.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from peergrid.scenarios.commands.experiment import (TrainingJob, _fresh_dir, _run_section,
                                           check_engine, run_training_jobs)
from peergrid.scenarios.definition.schema import ALGORITHMS, LearnerOverrides, Scenario
from peergrid.scenarios.commands.stats import summarize

EXPLORATION_STD = (0.3, 0.1)
PPO_GRID = [{"lr_actor": lr_actor, "lr_critic": lr_critic,
             "init_log_std": round(math.log(std), 3)}
            for lr_actor, lr_critic in ((3e-4, 1e-3), (1e-3, 3e-3)) for std in EXPLORATION_STD]
# Lowe et al. (2017): Adam 1e-2, gamma 0.95, minibatch 1024, tau 0.01, two layers of 64;
# their update every 100 steps is kept at `update_every` here (14,400 rounds of training
# against their 1.5 million steps)
MADDPG_DEFAULTS = {"gamma": 0.95, "batch_size": 1024, "tau": 0.01, "hidden_sizes": [64, 64]}
MADDPG_GRID = [{**MADDPG_DEFAULTS, "lr_actor": lr, "lr_critic": lr, "noise_start": std}
               for lr in (1e-3, 1e-2) for std in EXPLORATION_STD]


def grid(algo: str) -> list[dict[str, Any]]:
    return MADDPG_GRID if algo == "maddpg" else PPO_GRID


def with_setting(scenario: Scenario, algo: str, setting: dict[str, Any]) -> Scenario:
    overrides = dict(scenario.algo.overrides)
    base = overrides.get(algo)
    merged = {**(base.model_dump(exclude_none=True) if base else {}), **setting}
    overrides[algo] = LearnerOverrides(**merged)
    return scenario.model_copy(update={"algo": scenario.algo.model_copy(
        update={"overrides": overrides})})


def tune(scenario: Scenario, source: str, out: str | Path, seeds: int = 2,
         episodes: int = 400, workers: int = 2, force: bool = False, progress: bool = True,
         algorithms: tuple[str, ...] = ALGORITHMS, resume: bool = False,
         engine: str = "local", address: str | None = None) -> Path:
    check_engine(engine, address)
    out = _fresh_dir(out, force, resume)
    started = time.perf_counter()
    jobs = [TrainingJob(with_setting(scenario, algo, setting), source, algo, seed,
                        str(out / "train" / f"{algo}-g{g}-s{seed}"), episodes)
            for algo in algorithms for g, setting in enumerate(grid(algo))
            for seed in range(seeds)]
    run_training_jobs(jobs, workers, progress, "tune: training", resume, engine, address)
    rows = []
    for algo in algorithms:
        for g, setting in enumerate(grid(algo)):
            for seed in range(seeds):
                ev = pd.read_csv(out / "train" / f"{algo}-g{g}-s{seed}" / "eval.csv")
                rows.append({"algo": algo, "setting": g, **{k: str(v) if isinstance(v, list)
                                                            else v for k, v in setting.items()},
                             "seed": seed, "best_validation_team_reward": ev.team_reward.max()})
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "tuning.csv", index=False)
    chosen: dict[str, dict[str, Any]] = {}
    lines_table = ["| algorithm | setting | validation team reward: mean (95 % CI) | chosen |",
                   "|---|---|---|---|"]
    for algo in algorithms:
        scores = {g: summarize(frame[(frame.algo == algo) & (frame.setting == g)]
                               .best_validation_team_reward) for g in range(len(grid(algo)))}
        best = max(scores, key=lambda g: scores[g].mean)
        chosen[algo] = grid(algo)[best]
        for g, s in scores.items():
            ci = f" ({s.ci95_low:,.0f} to {s.ci95_high:,.0f})" if s.n > 1 else ""
            lines_table.append(f"| {algo} | {grid(algo)[g]} | {s.mean:,.0f}{ci} | "
                               f"{'yes' if g == best else ''} |")
    toml = ["# written by `peergrid experiment tune` (docs/results/tuning/report.md)"]
    for algo, setting in chosen.items():
        toml.append(f"\n[algo.overrides.{algo}]")
        toml += [f"{k} = {v!r}".replace("'", '"') for k, v in setting.items()]
    (out / "tuned.toml").write_text("\n".join(toml) + "\n")
    lines = [
        "# Tuning: the same budget for every algorithm, scored on the validation window", "",
        f"Scenario `{source}`: {len(grid(algorithms[0]))} settings per algorithm x {seeds} "
        f"seeds x {episodes} episodes; a setting's score is the best validation team reward "
        f"of its runs (the criterion every run's model selection uses), averaged over "
        f"seeds. The test window is not looked at.", "",
        *lines_table, "",
        "The chosen settings, as `[algo.overrides.<name>]` for a scenario file:", "",
        "```toml", *toml, "```", "",
        *_run_section(f"{(time.perf_counter() - started) / 60:.1f} min on "
                      f"{os.cpu_count()} cores"),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out
