"""Experiments as commands: `peergrid experiment baselines | paper-comparison`.

``baselines``: every reference policy and both perfect-foresight optima (voltage-blind,
voltage-aware) on the ``[scenario]`` window as one continuous stretch.

``paper-comparison``: trains consensus actor-critic, independent PPO and MADDPG over
several seeds (two at a time on a 2-core machine), evaluates their greedy policies, the
baselines above on the held-out ``[scenario]`` window (one continuous stretch:
batteries carry their charge over midnight), and writes::

    summary.csv          one row per algorithm, policy and optimum
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
import sys
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peergrid.agents.policies import make_policy
from peergrid.scenarios.community import for_policy
from peergrid.scenarios.env import PeerGridEnv
from peergrid.scenarios.logs import versions
from peergrid.scenarios.optimum import aware_schedule, blind_schedule, schedule_actions
from peergrid.scenarios.schema import Scenario
from peergrid.scenarios.train import ALGORITHMS, evaluate_choice, evaluate_run, train

REFERENCES = ("nop2p", "selfconsume", "rule", "voltvar")
OPTIMA = {"optimum (voltage-blind)": blind_schedule, "optimum (voltage-aware)": aware_schedule}
SUMMARY_FIELDS = ["name", "seeds", "team_reward_mean", "team_reward_std", "community_cost_mean",
                  "voltage_violations_mean", "p2p_kwh_mean", "voltage_penalty_mean",
                  "share_of_optimum_savings", "line_penalty_mean", "overvoltage_rounds_mean",
                  "undervoltage_rounds_mean", "max_line_loading_pct_mean", "curtailed_kwh_mean",
                  "share_of_blind_optimum_savings"]
BASELINE_FIELDS = ["name", "community_cost", "voltage_penalty", "line_penalty",
                   "overvoltage_rounds", "overvoltage_bus_rounds", "undervoltage_rounds",
                   "undervoltage_bus_rounds", "vm_min_pu", "vm_max_pu", "max_line_loading_pct",
                   "curtailed_kwh", "p2p_kwh", "team_reward", "share_of_optimum_savings",
                   "share_of_blind_optimum_savings", "solve_s"]


def _train_job(args: tuple[Scenario, str, str, int, str, int]) -> tuple[str, int, float]:
    scenario, source, algo, seed, out, episodes = args
    t0 = time.perf_counter()
    train(scenario, source, algo, seed, out, episodes=episodes, progress=False)
    return algo, seed, time.perf_counter() - t0


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


def _fresh_dir(out: str | Path, force: bool) -> Path:
    out = Path(out)
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
        "in one round (any phase). Share of the optimum's savings: (cost of nop2p - cost) / "
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


def _row(name: str, runs: list[dict[str, float]]) -> dict[str, Any]:
    """Mean (and sample std, ddof = 1) over the seeds of a policy's evaluation metrics."""
    frame = pd.DataFrame(runs)
    return {
        "name": name, "seeds": len(runs),
        "team_reward_mean": frame.team_reward.mean(),
        "team_reward_std": frame.team_reward.std(ddof=1),
        "community_cost": frame.community_cost.mean(),
        **{f"{k}_mean": frame[k].mean() for k in (
            "community_cost", "voltage_violations", "p2p_kwh", "voltage_penalty", "line_penalty",
            "overvoltage_rounds", "undervoltage_rounds", "max_line_loading_pct",
            "curtailed_kwh")},
    }


def paper_comparison(scenario: Scenario, source: str, out: str | Path, seeds: int = 3,
                     episodes: int | None = None, workers: int = 2, force: bool = False,
                     progress: bool = True) -> Path:
    out = _fresh_dir(out, force)
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
    for name in OPTIMA:
        rows.append(_row(name, [optimum_metrics(scenario, name)]))
    add_savings_shares(rows)
    by_name = {r["name"]: r for r in rows}
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
        mean, std = frame.mean(axis=1), frame.std(axis=1, ddof=1).fillna(0.0)
        ax.plot(frame.index, mean, color=f"C{i}", label=f"{algo} (mean of {frame.shape[1]} seeds)")
        ax.fill_between(frame.index, mean - std, mean + std, color=f"C{i}", alpha=0.2)
    for name, style in (("nop2p", ":"), ("rule", "--"), ("voltvar", (0, (3, 1, 1, 1))),
                        ("optimum (voltage-aware)", "-.")):
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
    lines = [
        "# Paper comparison: consensus actor-critic vs independent PPO vs MADDPG", "",
        f"Scenario `{source}` (`{s.scenario.id}`), training window {s.algo.train_start} + "
        f"{s.algo.train_days} days, evaluation on the held-out window {s.scenario.start} + "
        f"{s.scenario.days} days as one continuous stretch (batteries carry their charge over "
        "midnight), greedy policy. "
        f"{seeds} seeds per algorithm, {episodes} training episodes (days) each.", "",
        "| policy | seeds | team reward (mean ± std) | community cost | voltage penalty | "
        "line penalty | over-voltage rounds | under-voltage rounds | max line loading | "
        "curtailed kWh | P2P kWh | share of the optimum's savings |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        std = "" if r["seeds"] < 2 else f" ± {r['team_reward_std']:.1f}"
        lines.append(
            f"| {r['name']} | {r['seeds']} | {r['team_reward_mean']:.1f}{std} | "
            f"{r['community_cost_mean']:,.0f} | {r['voltage_penalty_mean']:,.0f} | "
            f"{r['line_penalty_mean']:,.0f} | {r['overvoltage_rounds_mean']:.1f} | "
            f"{r['undervoltage_rounds_mean']:.1f} | {r['max_line_loading_pct_mean']:.0f} % | "
            f"{r['curtailed_kwh_mean']:,.0f} | {r['p2p_kwh_mean']:,.0f} | "
            f"{r['share_of_optimum_savings']:.1%} |")
    lines += [
        "", "Team reward: mean over agents of the summed reward over the evaluation window "
        "(reward = −payment − voltage penalty − line penalty); ± is the sample std over "
        "seeds. Community cost: total payments (P2P payments are transfers, so this is the "
        "community's grid bill). Share of the optimum's savings: (cost of nop2p − cost) / "
        "(cost of nop2p − cost of the voltage-aware optimum). The optima are perfect-foresight "
        "schedules over the continuous window (linear programs, HiGHS): the voltage-blind one "
        "moves batteries only, the voltage-aware one also curtails PV and sets inverter "
        "reactive power under the linearised AC limits; both are replayed through the same "
        "env as every policy and their violations are shown as measured.", "",
        "![learning curves](learning_curves.png)", "",
        "One evaluation day of the consensus policy (seed 0): "
        "[prices and SDR](day/prices_sdr.png), [state of charge](day/soc.png), "
        "[voltages](day/voltages.png), [energy](day/energy.png).", "",
        *_run_section(f"{wall / 60:.1f} min on {os.cpu_count()} cores; training per run "
                      "(s): " + ", ".join(f"{a} {np.mean(w):.0f}" for a, w in train_wall.items())),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
