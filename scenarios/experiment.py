"""The paper's comparison as one command: `peergrid experiment paper-comparison`.

Trains consensus actor-critic, independent PPO and MADDPG over several seeds (two at a
time on a 2-core machine), evaluates their greedy policies and the reference policies
and the perfect-foresight optimum on the held-out ``[scenario]`` window (every day from
the initial state of charge), and writes::

    summary.csv          one row per algorithm, policy and the optimum
    report.md            the table, shares of the optimum's savings, command, versions
    learning_curves.png  evaluation team reward vs training episode, mean ± std over seeds
    day/                 one evaluation day of the consensus policy (seed 0): logs and
                         prices_sdr.png, soc.png, voltages.png, energy.png
    train/<algo>-s<seed>/  each training run (metrics, evaluations, checkpoint)
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peergrid.agents.policies import make_policy
from peergrid.scenarios.env import PeerGridEnv
from peergrid.scenarios.logs import versions
from peergrid.scenarios.optimum import optimal_day_schedule, schedule_actions
from peergrid.scenarios.schema import Scenario
from peergrid.scenarios.train import ALGORITHMS, evaluate_choice, evaluate_run, train

REFERENCES = ("nop2p", "rule")
SUMMARY_FIELDS = ["name", "seeds", "team_reward_mean", "team_reward_std", "community_cost_mean",
                  "voltage_violations_mean", "p2p_kwh_mean", "voltage_penalty_mean",
                  "share_of_optimum_savings"]


def _train_job(args: tuple[Scenario, str, str, int, str, int]) -> tuple[str, int, float]:
    scenario, source, algo, seed, out, episodes = args
    t0 = time.perf_counter()
    train(scenario, source, algo, seed, out, episodes=episodes, progress=False)
    return algo, seed, time.perf_counter() - t0


def reference_metrics(scenario: Scenario, policy: str) -> dict[str, float]:
    env = PeerGridEnv(scenario)
    policies = {p.spec.agent_id: make_policy(policy, p.spec, p.dt_h)
                for p in env.community.prosumers}
    return evaluate_choice(scenario, lambda obs: {a: policies[a](o) for a, o in obs.items()}, env)


def optimum_metrics(scenario: Scenario) -> dict[str, float]:
    env = PeerGridEnv(scenario)
    c = env.community
    plan = [a for d in range(c.days) for a in schedule_actions(c, optimal_day_schedule(c, d))]
    return evaluate_choice(scenario, lambda obs: plan[env.k], env)


def _row(name: str, runs: list[dict[str, float]]) -> dict[str, Any]:
    frame = pd.DataFrame(runs)
    return {
        "name": name, "seeds": len(runs),
        "team_reward_mean": frame.team_reward.mean(),
        "team_reward_std": frame.team_reward.std(ddof=0),
        "community_cost_mean": frame.community_cost.mean(),
        "voltage_violations_mean": frame.voltage_violations.mean(),
        "p2p_kwh_mean": frame.p2p_kwh.mean(),
        "voltage_penalty_mean": frame.voltage_penalty.mean(),
    }


def paper_comparison(scenario: Scenario, source: str, out: str | Path, seeds: int = 3,
                     episodes: int | None = None, workers: int = 2, force: bool = False,
                     progress: bool = True) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"--out {out}: not empty; choose another or pass --force")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.perf_counter()
    episodes = episodes or scenario.algo.episodes

    jobs = [(scenario, source, algo, seed, str(out / "train" / f"{algo}-s{seed}"), episodes)
            for seed in range(seeds) for algo in ALGORITHMS]
    train_wall: dict[str, list[float]] = {a: [] for a in ALGORITHMS}
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        done = pool.map(_train_job, jobs)
        if progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(jobs), desc="paper-comparison: training", unit="run")
        for algo, _, wall in done:
            train_wall[algo].append(wall)

    rows, curves = [], {}
    for algo in ALGORITHMS:
        finals = []
        for seed in range(seeds):
            ev = pd.read_csv(out / "train" / f"{algo}-s{seed}" / "eval.csv")
            finals.append(ev.iloc[-1].to_dict())
            curves.setdefault(algo, []).append(ev.set_index("episode").team_reward)
        rows.append(_row(algo, finals))
    for policy in REFERENCES:
        rows.append(_row(policy, [reference_metrics(scenario, policy)]))
    rows.append(_row("optimum", [optimum_metrics(scenario)]))

    by_name = {r["name"]: r for r in rows}
    base, best = by_name["nop2p"]["community_cost_mean"], by_name["optimum"]["community_cost_mean"]
    for r in rows:
        r["share_of_optimum_savings"] = (base - r["community_cost_mean"]) / (base - best)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        w.writeheader()
        w.writerows({k: r[k] for k in SUMMARY_FIELDS} for r in rows)

    _plot_curves(curves, by_name, out / "learning_curves.png")
    from peergrid.scenarios import report

    evaluate_run(out / "train" / "consensus-s0", out / "day", force=True, days=1)
    report.plot(out / "day")

    wall = time.perf_counter() - started
    _write_report(out, scenario, source, rows, seeds, episodes, train_wall, wall)
    return out


def _plot_curves(curves: dict[str, list[pd.Series]], by_name: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for i, (algo, series) in enumerate(curves.items()):
        frame = pd.concat(series, axis=1)
        mean, std = frame.mean(axis=1), frame.std(axis=1, ddof=0)
        ax.plot(frame.index, mean, color=f"C{i}", label=f"{algo} (mean of {frame.shape[1]} seeds)")
        ax.fill_between(frame.index, mean - std, mean + std, color=f"C{i}", alpha=0.2)
    for name, style in (("nop2p", ":"), ("rule", "--"), ("optimum", "-.")):
        ax.axhline(by_name[name]["team_reward_mean"], color="k", ls=style, lw=1, label=name)
    ax.set_xlabel("training episode (days)")
    ax.set_ylabel("evaluation team reward (held-out week)")
    ax.legend(fontsize=8)
    ax.set_title("Learning curves: greedy policy on the evaluation days, ± 1 std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_report(out: Path, s: Scenario, source: str, rows: list[dict], seeds: int,
                  episodes: int, train_wall: dict[str, list[float]], wall: float) -> None:
    import sys

    lines = [
        "# Paper comparison: consensus actor-critic vs independent PPO vs MADDPG", "",
        f"Scenario `{source}` (`{s.scenario.id}`), training window {s.algo.train_start} + "
        f"{s.algo.train_days} days, evaluation on the held-out window {s.scenario.start} + "
        f"{s.scenario.days} days (each day from the initial state of charge, greedy policy). "
        f"{seeds} seeds per algorithm, {episodes} training episodes (days) each.", "",
        "| policy | seeds | team reward (mean ± std) | community cost | voltage violations "
        "(rounds) | P2P kWh | voltage penalty | share of optimum's savings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['seeds']} | {r['team_reward_mean']:.1f} ± "
            f"{r['team_reward_std']:.1f} | {r['community_cost_mean']:.1f} | "
            f"{r['voltage_violations_mean']:.1f} | {r['p2p_kwh_mean']:.0f} | "
            f"{r['voltage_penalty_mean']:.1f} | {r['share_of_optimum_savings']:.1%} |")
    lines += [
        "", "Team reward: mean over agents of the summed reward over the evaluation window "
        "(reward = −payment − voltage penalty). Community cost: total payments (P2P payments "
        "are transfers, so this is the community's grid bill). Share of the optimum's savings: "
        "(cost of nop2p − cost) / (cost of nop2p − cost of the optimum). The optimum is the "
        "perfect-foresight battery schedule minimising the community's grid bill (linear "
        "program, HiGHS); voltage limits are not its constraint, its violations are shown as "
        "measured.", "",
        "![learning curves](learning_curves.png)", "",
        "One evaluation day of the consensus policy (seed 0): "
        "[prices and SDR](day/prices_sdr.png), [state of charge](day/soc.png), "
        "[voltages](day/voltages.png), [energy](day/energy.png).", "",
        "## Run", "",
        f"- command: `{' '.join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}`",
        f"- wall time: {wall / 60:.1f} min on {os.cpu_count()} cores; training per run (s): "
        + ", ".join(f"{a} {np.mean(w):.0f}" for a, w in train_wall.items()),
        f"- date: {dt.date.today().isoformat()}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
