"""The paper's comparison and the graph experiment, with their statistics.

``peergrid experiment paper-comparison``: trains every algorithm (the networked
actor-critic ``consensus``, its ablations ``consensus-critic`` and ``ippo``, the
centralised reference ``mappo``, and ``maddpg``) over several seeds, two runs at a time
on a 2-core machine. Each run keeps the policy that did best on the validation window
and is measured once on the test window (``scenarios.train``); the reference policies
and both optima are measured on the same test window. Writes::

    summary.csv            one row per algorithm, policy and optimum (mean, sample std,
                           95 % t interval, Welch p-value against consensus)
    report.md              the table, the claims with their p-values, the settings
    learning_curves.png    validation team reward against training episode, 95 % bands
    violations_by_bus.png  test-week over- and under-voltage rounds per bus, consensus
                           against independent PPO (and MAPPO)
    penalties_by_agent.png each agent's voltage and line penalty, the same algorithms
    day/                   one test day of the consensus policy (seed 0) and its figures
    train/<algo>-s<seed>/  each training run

``peergrid experiment graphs``: the networked actor-critic on each communication
graph (ring, complete, feeder, random geometric): team reward and how far the agents'
critics and team-reward estimators stay apart.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from peergrid.scenarios.commands.experiment import (OPTIMA, REFERENCES, TrainingJob, _fresh_dir,
                                           _run_section, add_savings_shares, check_engine,
                                           optimum_metrics, reference_metrics,
                                           run_training_jobs)
from peergrid.scenarios.definition.schema import ALGORITHMS, Scenario
from peergrid.scenarios.commands.arguments import count
from peergrid.scenarios.commands.stats import band, summarize, welch_p
from peergrid.scenarios.commands.train import evaluate_run, validation_window

SUMMARY_FIELDS = [
    "name", "seeds", "team_reward_mean", "team_reward_std", "community_cost_mean",
    "voltage_violations_mean", "p2p_kwh_mean", "voltage_penalty_mean",
    "share_of_optimum_savings", "team_reward_ci95_low", "team_reward_ci95_high",
    "p_vs_consensus", "voltage_penalty_p_vs_consensus", "line_penalty_mean",
    "overvoltage_rounds_mean", "undervoltage_rounds_mean", "max_line_loading_pct_mean",
    "curtailed_kwh_mean", "share_of_blind_optimum_savings", "selected_episode_mean",
]
METRICS = ("community_cost", "voltage_violations", "p2p_kwh", "voltage_penalty", "line_penalty",
           "overvoltage_rounds", "undervoltage_rounds", "max_line_loading_pct", "curtailed_kwh")
TOPOLOGIES = ("ring", "complete", "feeder", "random_geometric")


def run_name(algo: str, seed: int, tag: str = "") -> str:
    return f"{algo}{tag}-s{seed}"


def _row(name: str, runs: list[dict[str, float]], reference: list[dict[str, float]] | None
         ) -> dict[str, Any]:
    """A policy's row: means over seeds, the team reward's sample std and 95 % interval,
    and p-values against ``reference`` (the consensus runs): Welch's test for learners,
    a one-sample t-test for a deterministic policy (one run)."""
    frame = pd.DataFrame(runs)
    s = summarize(frame.team_reward)
    row = {"name": name, "seeds": len(runs), "team_reward_mean": s.mean,
           "team_reward_std": s.std, "team_reward_ci95_low": s.ci95_low,
           "team_reward_ci95_high": s.ci95_high,
           "community_cost": frame.community_cost.mean(),
           **{f"{k}_mean": frame[k].mean() for k in METRICS},
           "selected_episode_mean": frame["episode"].mean() if "episode" in frame else np.nan}
    for key, column in (("p_vs_consensus", "team_reward"),
                        ("voltage_penalty_p_vs_consensus", "voltage_penalty")):
        row[key] = np.nan
        if reference is not None and name != "consensus":
            ref = [r[column] for r in reference]
            if len(runs) > 1:
                row[key] = welch_p(frame[column], ref)
            elif np.std(ref) > 0:
                row[key] = float(sps.ttest_1samp(ref, frame[column].iloc[0]).pvalue)
    return row


def _baseline_rows(scenario: Scenario, reference: list[dict] | None) -> list[dict[str, Any]]:
    rows = [_row(p, [reference_metrics(scenario, p)], reference) for p in REFERENCES]
    rows += [_row(n, [optimum_metrics(scenario, n)], reference) for n in OPTIMA]
    return rows


def paper_comparison(scenario: Scenario, source: str, out: str | Path, seeds: int = 8,
                     episodes: int | None = None, workers: int = 2, force: bool = False,
                     progress: bool = True, algorithms: tuple[str, ...] = ALGORITHMS,
                     resume: bool = False, engine: str = "local",
                     address: str | None = None) -> Path:
    check_engine(engine, address)
    out = _fresh_dir(out, force, resume)
    started = time.perf_counter()
    episodes = count(episodes, scenario.algo.episodes, "episodes")
    jobs = [TrainingJob(scenario, source, algo, seed,
                        str(out / "train" / run_name(algo, seed)), episodes)
            for seed in range(seeds) for algo in algorithms]
    walls = run_training_jobs(jobs, workers, progress, "paper-comparison: training", resume,
                              engine, address)

    tests = {a: [pd.read_csv(out / "train" / run_name(a, s) / "test.csv").iloc[0].to_dict()
                 for s in range(seeds)] for a in algorithms}
    curves = {a: [pd.read_csv(out / "train" / run_name(a, s) / "eval.csv")
                  .set_index("episode").team_reward for s in range(seeds)] for a in algorithms}
    reference = tests.get("consensus")
    rows = [_row(a, tests[a], reference) for a in algorithms]
    rows += _baseline_rows(scenario, reference)
    add_savings_shares(rows, cost="community_cost")
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    validation_refs = {p: reference_metrics(validation_window(scenario), p)["team_reward"]
                       for p in ("nop2p", "rule", "voltvar")}
    _plot_curves(curves, validation_refs, out / "learning_curves.png")
    shown = [a for a in ("consensus", "ippo", "mappo") if a in tests]
    _plot_bus_violations({a: tests[a] for a in shown}, out / "violations_by_bus.png")
    _plot_agent_penalties({a: tests[a] for a in shown}, out / "penalties_by_agent.png")
    if "consensus" in algorithms:
        from peergrid.scenarios.commands import report

        evaluate_run(out / "train" / run_name("consensus", 0), out / "day", force=True, days=1)
        report.plot(out / "day")
    wall = time.perf_counter() - started
    per_algo = {a: np.mean([walls[j.out] for j in jobs if j.algo == a]) for a in algorithms}
    _write_report(out, scenario, source, rows, tests, seeds, episodes, per_algo, wall)
    return out


# ---- figures -------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_curves(curves: dict[str, list[pd.Series]], refs: dict[str, float], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    # the axis spans the references and the curves near them; a learner far below
    # (a diverged one) is named in the legend with its last mean instead of flattening
    # every other curve
    floor = min(refs.values()) if refs else None
    span = (max(refs.values()) - floor) if refs else None
    shown_lows = []
    for i, (algo, series) in enumerate(curves.items()):
        frame = pd.concat(series, axis=1)
        mean, low, high = band(frame)
        label = f"{algo} ({frame.shape[1]} seeds)"
        if floor is not None and mean.iloc[-1] < floor - 10 * max(span, 1.0):
            label += f", off scale: last mean {mean.iloc[-1]:,.0f}"
        else:
            shown_lows.append(float(low.min()))
        ax.plot(frame.index, mean, color=f"C{i}", label=label)
        ax.fill_between(frame.index, low, high, color=f"C{i}", alpha=0.2)
    for (name, value), style in zip(refs.items(), (":", "--", "-."), strict=False):
        ax.axhline(value, color="k", ls=style, lw=1, label=name)
    if floor is not None and shown_lows:
        bottom = min(min(shown_lows), floor)
        top = max(refs.values())
        ax.set_ylim(bottom - 0.1 * (top - bottom), top + 0.1 * (top - bottom))
    ax.set_xlabel("training episode (days)")
    ax.set_ylabel("validation team reward (validation week)")
    ax.legend(fontsize=8)
    ax.set_title("Learning curves: greedy policy on the validation week, mean and 95 % CI")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _per_key(runs: list[dict], prefix: str) -> pd.DataFrame:
    """Columns ``<prefix><key>`` of every run: (runs x keys)."""
    return pd.DataFrame([{k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)}
                         for r in runs])


def _grouped_bars(ax, frames: dict[str, pd.DataFrame], keys: list[str]) -> None:
    """One bar per (key, algorithm): the mean over seeds with its 95 % interval."""
    width = 0.8 / len(frames)
    for i, (algo, frame) in enumerate(frames.items()):
        s = [summarize(frame[k]) for k in keys]
        x = np.arange(len(keys)) + i * width
        ax.bar(x, [v.mean for v in s], width, label=algo, color=f"C{i}",
               yerr=[[v.mean - v.ci95_low for v in s], [v.ci95_high - v.mean for v in s]],
               capsize=2)
    ax.set_xticks(np.arange(len(keys)) + width * (len(frames) - 1) / 2, keys, rotation=90)


def _plot_bus_violations(tests: dict[str, list[dict]], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, kind in zip(axes, ("over", "under"), strict=True):
        frames = {a: _per_key(runs, f"{kind}_rounds.") for a, runs in tests.items()}
        _grouped_bars(ax, frames, list(next(iter(frames.values())).columns))
        ax.set_title(f"{kind}-voltage rounds per bus, test week (mean, 95 % CI)")
    axes[0].set_ylabel("rounds")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_agent_penalties(tests: dict[str, list[dict]], path: Path) -> None:
    plt = _plt()
    frames = {a: _per_key(runs, "penalty.") for a, runs in tests.items()}
    fig, ax = plt.subplots(figsize=(11, 4))
    _grouped_bars(ax, frames, list(next(iter(frames.values())).columns))
    ax.set_ylabel("voltage + line penalty (currency, test week)")
    ax.set_title("Penalty charged to each agent (mean over seeds, 95 % CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- report --------------------------------------------------------------------------

def _fmt_p(p: float) -> str:
    return "-" if not np.isfinite(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def comparison_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| policy | seeds | team reward: mean (95 % CI) | p vs consensus | community cost | "
        "voltage penalty (p vs consensus) | line penalty | rounds over / under | max line "
        "loading | curtailed kWh | share of the optimum's savings |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = (f" ({r['team_reward_ci95_low']:,.0f} to {r['team_reward_ci95_high']:,.0f})"
              if np.isfinite(r["team_reward_ci95_low"]) else "")
        lines.append(
            f"| {r['name']} | {r['seeds']} | {r['team_reward_mean']:,.0f}{ci} | "
            f"{_fmt_p(r['p_vs_consensus'])} | {r['community_cost_mean']:,.0f} | "
            f"{r['voltage_penalty_mean']:,.0f} ({_fmt_p(r['voltage_penalty_p_vs_consensus'])}) | "
            f"{r['line_penalty_mean']:,.0f} | {r['overvoltage_rounds_mean']:.1f} / "
            f"{r['undervoltage_rounds_mean']:.1f} | {r['max_line_loading_pct_mean']:.0f} % | "
            f"{r['curtailed_kwh_mean']:,.0f} | {r['share_of_optimum_savings']:.1%} |")
    return lines


def _claims(rows: list[dict[str, Any]], tests: dict[str, list[dict]]) -> list[str]:
    """The comparisons the paper makes, stated as measured, with their p-values."""
    by = {r["name"]: r for r in rows}
    if "consensus" not in by:
        return []
    c = by["consensus"]
    out = []
    for other in ("consensus-critic", "ippo", "mappo", "maddpg", "rule", "voltvar"):
        if other not in by:
            continue
        o = by[other]
        better = "higher" if c["team_reward_mean"] > o["team_reward_mean"] else "lower"
        out.append(
            f"- consensus vs {other}: team reward {c['team_reward_mean']:,.0f} vs "
            f"{o['team_reward_mean']:,.0f} ({better} for consensus, p = "
            f"{_fmt_p(o['p_vs_consensus'])}); voltage penalty {c['voltage_penalty_mean']:,.0f} "
            f"vs {o['voltage_penalty_mean']:,.0f} (p = "
            f"{_fmt_p(o['voltage_penalty_p_vs_consensus'])}).")
    if "ippo" in tests:
        own = {a: np.array([sum(v for k, v in r.items() if k.startswith("penalty."))
                            for r in tests[a]]) for a in ("consensus", "ippo")}
        out.append(
            f"- Penalties the agents suffer (voltage + line, summed over agents, test week): "
            f"consensus {own['consensus'].mean():,.0f}, independent PPO "
            f"{own['ippo'].mean():,.0f} (Welch p = {_fmt_p(welch_p(own['consensus'], own['ippo']))}).")
    return out


def _write_report(out: Path, s: Scenario, source: str, rows: list[dict], tests: dict,
                  seeds: int, episodes: int, per_algo: dict[str, float], wall: float) -> None:
    a = s.algo
    overrides = {k: {f: v for f, v in o.model_dump().items() if v is not None}
                 for k, o in a.overrides.items()}
    lines = [
        "# Paper comparison: the networked actor-critic against its ablations and baselines",
        "",
        f"Scenario `{source}` (`{s.scenario.id}`). Training window {a.train_start} + "
        f"{a.train_days} days; validation window {a.validation_start} + {a.validation_days} "
        f"days (model selection: each run keeps the policy with the best validation team "
        f"reward, evaluated every {a.eval_every} episodes); test window {s.scenario.start} + "
        f"{s.scenario.days} days, one continuous stretch, measured once per run. {seeds} "
        f"seeds per algorithm, {episodes} training episodes (days) each.", "",
        *comparison_table(rows), "",
        "Team reward: mean over agents of the summed reward over the test week (reward = "
        "−payment − voltage penalty − line penalty). 95 % CI: Student's t on the sample std "
        "(ddof = 1). p vs consensus: Welch's t-test for learners, a one-sample t-test of the "
        "consensus seeds against a deterministic policy's value. Share of the optimum's "
        "savings: (cost of nop2p − cost) / (cost of nop2p − cost of the voltage-aware "
        "optimum).", "",
        "## What the comparison says", "",
        *_claims(rows, tests), "",
        "![learning curves](learning_curves.png)", "",
        "![violations by bus](violations_by_bus.png)", "",
        "![penalties by agent](penalties_by_agent.png)", "",
        "One test day of the consensus policy (seed 0): [prices and SDR](day/prices_sdr.png), "
        "[state of charge](day/soc.png), [voltages](day/voltages.png), "
        "[energy](day/energy.png).", "",
        "## Settings", "",
        f"- shared: step sizes actor {a.lr_actor}, critic {a.lr_critic} (annealed: "
        f"{a.lr_anneal}), γ {a.gamma}, hidden {a.hidden_sizes}, PPO rollout {a.rollout_days} "
        f"days, {a.epochs} epochs, minibatch {a.minibatch}, clip {a.clip}, GAE λ "
        f"{a.gae_lambda}; consensus every {a.consensus_period} epoch(s) on the "
        f"`{s.comms.topology}` graph",
        f"- per algorithm (`[algo.overrides]`, from the tuning protocol, "
        f"docs/results/tuning/report.md): {overrides or 'none'}",
        "",
        *_run_section(f"{wall / 60:.1f} min on {os.cpu_count()} cores; training per run (s): "
                      + ", ".join(f"{k} {v:.0f}" for k, v in per_algo.items())),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


# ---- the communication graph -----------------------------------------------------------

def graphs(scenario: Scenario, source: str, out: str | Path, seeds: int = 3,
           episodes: int | None = None, workers: int = 2, force: bool = False,
           progress: bool = True, topologies: tuple[str, ...] = TOPOLOGIES,
           resume: bool = False, engine: str = "local", address: str | None = None) -> Path:
    """The networked actor-critic on each communication graph."""
    check_engine(engine, address)
    out = _fresh_dir(out, force, resume)
    started = time.perf_counter()
    episodes = count(episodes, scenario.algo.episodes, "episodes")
    jobs = []
    for topo in topologies:
        s = scenario.model_copy(update={"comms": scenario.comms.model_copy(
            update={"topology": topo})})
        jobs += [TrainingJob(s, source, "consensus", seed,
                             str(out / "train" / run_name("consensus", seed, f"-{topo}")),
                             episodes) for seed in range(seeds)]
    run_training_jobs(jobs, workers, progress, "graphs: training", resume, engine, address)
    rows, curves = [], {}
    ring_rewards = None
    for topo in topologies:
        runs = [out / "train" / run_name("consensus", seed, f"-{topo}") for seed in range(seeds)]
        test = [pd.read_csv(r / "test.csv").iloc[0].team_reward for r in runs]
        metrics = [pd.read_csv(r / "metrics.csv") for r in runs]
        gaps = {k: [m[f"{k}_disagreement"].dropna().iloc[-5:].mean() for m in metrics]
                for k in ("critic", "estimator")}
        curves[topo] = [m.set_index("episode")["estimator_disagreement"].dropna()
                        for m in metrics]
        summary = summarize(test)
        if topo == "ring":
            ring_rewards = test
        rows.append({"topology": topo, "seeds": seeds, "team_reward_mean": summary.mean,
                     "team_reward_ci95_low": summary.ci95_low,
                     "team_reward_ci95_high": summary.ci95_high,
                     "p_vs_ring": (welch_p(test, ring_rewards)
                                   if ring_rewards is not None and topo != "ring" else np.nan),
                     "critic_disagreement": float(np.mean(gaps["critic"])),
                     "estimator_disagreement": float(np.mean(gaps["estimator"]))})
    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    x = np.arange(len(rows))
    axes[0].bar(x, [r["team_reward_mean"] for r in rows],
                yerr=[[r["team_reward_mean"] - r["team_reward_ci95_low"] for r in rows],
                      [r["team_reward_ci95_high"] - r["team_reward_mean"] for r in rows]],
                capsize=3)
    axes[0].set_xticks(x, [r["topology"] for r in rows])
    axes[0].set_ylabel("test team reward (mean, 95 % CI)")
    for i, (topo, series) in enumerate(curves.items()):
        frame = pd.concat(series, axis=1)
        axes[1].plot(frame.index, frame.mean(axis=1), color=f"C{i}", label=topo)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("training episode")
    axes[1].set_ylabel("estimator disagreement after an update")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "graphs.png", dpi=120)
    plt.close(fig)
    lines = [
        "# The communication graph: the networked actor-critic on four graphs", "",
        f"Scenario `{source}`, {seeds} seeds per graph, {episodes} episodes, the comparison's "
        "protocol (validation model selection, test week).", "",
        "| graph | seeds | test team reward: mean (95 % CI) | p vs ring | critic "
        "disagreement | estimator disagreement |", "|---|---|---|---|---|---|",
        *[f"| {r['topology']} | {r['seeds']} | {r['team_reward_mean']:,.0f} "
          f"({r['team_reward_ci95_low']:,.0f} to {r['team_reward_ci95_high']:,.0f}) | "
          f"{_fmt_p(r['p_vs_ring'])} | {r['critic_disagreement']:.2e} | "
          f"{r['estimator_disagreement']:.2e} |" for r in rows], "",
        "Disagreement: the largest distance of an agent's parameters from the agents' mean "
        "after an update (its last five updates, averaged over seeds).", "",
        "![graphs](graphs.png)", "",
        *_run_section(f"{(time.perf_counter() - started) / 60:.1f} min on "
                      f"{os.cpu_count()} cores"),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out
