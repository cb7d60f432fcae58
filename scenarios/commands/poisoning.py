"""``peergrid experiment poisoning``: consensus with a lying neighbour, per aggregation rule.

One agent (``liar``, an insider with a valid key: authentication cannot stop it) learns
honestly but sends forged critic and estimator vectors at every consensus step
(``agents.poisoning``: scaled, random, sign-flipped). For each aggregation rule
(``agents.aggregation``) and each attack, ``seeds`` runs of the networked actor-critic
are trained with the comparison's protocol (validation model selection, test week), and
the honest agents' test team reward, their critic disagreement and the penalties they
are charged are compared with the clean run of the same rule and with the clean
Metropolis run. A run whose parameters stop being finite is stopped there
(``diverged``); its policy is the one selected on validation before, if any.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peergrid.agents.aggregation import AGGREGATIONS
from peergrid.agents.poisoning import ATTACKS, Attack
from peergrid.scenarios.commands.comparison import _plt
from peergrid.scenarios.commands.experiment import (TrainingJob, _fresh_dir, _run_section,
                                                    check_engine, reference_metrics,
                                                    run_training_jobs)
from peergrid.scenarios.commands.arguments import count
from peergrid.scenarios.commands.stats import fmt, paired_p, summarize
from peergrid.scenarios.definition.schema import Scenario

CONDITIONS = ("none", *ATTACKS)
DEFAULT_EPISODES = 200
"""The committed report's size (48 runs on 2 cores in about half an hour); the
comparison's 600 with ``--episodes 600``."""


def _run_dir(out: Path, rule: str, attack: str, seed: int) -> Path:
    return out / "train" / f"{rule}-{attack}-seed{seed}"


def _final_disagreement(run: Path, honest: list[str]) -> float:
    """The honest agents' critic disagreement in the run's last checkpoint (after its
    last update, or the last one saved before it diverged): the same agents in every
    cell, the liar's own critic left out even where it told no lie."""
    from peergrid.agents.learners.consensus import critic_disagreement
    from peergrid.scenarios.commands.train import CHECKPOINT, Team, read_state
    from peergrid.scenarios.definition.loader import scenario_from_dump
    from peergrid.scenarios.runtime.logs import read_manifest

    if not (run / CHECKPOINT).is_file():
        return np.nan
    state = read_state(run / CHECKPOINT)
    team = Team(state["algo"], scenario_from_dump(read_manifest(run)["scenario"]),
                state["seed"])
    team.load_state_dict(state["team"])
    return critic_disagreement(team.group, honest)


def _honest_row(run: Path, honest: list[str]) -> dict[str, float]:
    test = pd.read_csv(run / "test.csv").iloc[0]
    evals = pd.read_csv(run / "eval.csv") if (run / "eval.csv").is_file() else pd.DataFrame()
    has_policy = f"reward.{honest[0]}" in test
    last = evals.iloc[-1] if len(evals) else None
    return {
        "team_reward": float(np.mean([test[f"reward.{a}"] for a in honest]))
        if has_policy else np.nan,
        "penalty": float(sum(test[f"penalty.{a}"] for a in honest)) if has_policy else np.nan,
        "selected_episode": float(test["episode"]) if has_policy else np.nan,
        # the policy at the last validation, whatever model selection kept: an attack
        # that does its damage late shows here
        "last_validation_reward": float(np.mean([last[f"reward.{a}"] for a in honest]))
        if last is not None else np.nan,
        "last_validation_episode": float(last["episode"]) if last is not None else np.nan,
        "critic_disagreement": _final_disagreement(run, honest),
        "diverged_episode": float(test.get("diverged_episode", np.nan)),
    }


def poisoning(scenario: Scenario, source: str, out: str | Path, seeds: int = 3,
              episodes: int | None = None, workers: int = 2, force: bool = False,
              progress: bool = True, resume: bool = False, liar: str | None = None,
              rules: tuple[str, ...] = AGGREGATIONS, engine: str = "local",
              address: str | None = None) -> Path:
    check_engine(engine, address)
    out = _fresh_dir(out, force, resume)
    started = time.perf_counter()
    episodes = count(episodes, DEFAULT_EPISODES, "episodes")
    ids = [a.id for a in scenario.agents]
    liar = liar or ids[0]
    if liar not in ids:
        raise ValueError(f"--liar {liar!r}: not an agent of {source} ({', '.join(ids)})")
    honest = [a for a in ids if a != liar]
    jobs = []
    for rule in rules:
        s = scenario.model_copy(update={"comms": scenario.comms.model_copy(
            update={"aggregation": rule})})
        for kind in CONDITIONS:
            attack = None if kind == "none" else Attack(liar, kind)
            jobs += [TrainingJob(s, source, "consensus", seed,
                                 str(_run_dir(out, rule, kind, seed)), episodes, attack)
                     for seed in range(seeds)]
    run_training_jobs(jobs, workers, progress, "poisoning: training", resume, engine, address)

    nop2p = reference_metrics(scenario, "nop2p")
    floor = float(np.mean([nop2p[f"reward.{a}"] for a in honest]))
    runs = {(rule, kind): [_honest_row(_run_dir(out, rule, kind, seed), honest)
                           for seed in range(seeds)]
            for rule in rules for kind in CONDITIONS}
    clean = [r["team_reward"] for r in runs[("metropolis", "none")]] \
        if "metropolis" in rules else None
    benefit = (np.nanmean(clean) - floor) if clean else np.nan
    rows = []
    for (rule, kind), rs in runs.items():
        rewards = [r["team_reward"] for r in rs]
        finite = [x for x in rewards if np.isfinite(x)]
        summary = summarize(finite) if finite else None
        rows.append({
            "rule": rule, "attack": kind, "seeds": seeds,
            "diverged": int(sum(np.isfinite(r["diverged_episode"]) for r in rs)),
            "diverged_at_episode": ";".join(f"{r['diverged_episode']:.0f}" for r in rs
                                            if np.isfinite(r["diverged_episode"])),
            "no_policy": int(len(rewards) - len(finite)),
            "team_reward_mean": summary.mean if summary else np.nan,
            "team_reward_ci95_low": summary.ci95_low if summary else np.nan,
            "team_reward_ci95_high": summary.ci95_high if summary else np.nan,
            "p_vs_same_rule_clean": paired_p(rewards, [r["team_reward"] for r in
                                                        runs[(rule, "none")]])
            if kind != "none" else np.nan,
            "p_vs_metropolis_clean": paired_p(rewards, clean)
            if clean and (rule, kind) != ("metropolis", "none") else np.nan,
            "benefit_kept": (summary.mean - floor) / benefit
            if summary and clean and benefit > 0 else np.nan,
            "selected_episode_mean": float(np.nanmean([r["selected_episode"] for r in rs]))
            if finite else np.nan,
            "last_validation_reward_mean": float(np.nanmean(
                [r["last_validation_reward"] for r in rs]))
            if any(np.isfinite(r["last_validation_reward"]) for r in rs) else np.nan,
            "penalty_mean": float(np.nanmean([r["penalty"] for r in rs]))
            if finite else np.nan,
            "critic_disagreement": float(np.nanmean([r["critic_disagreement"] for r in rs]))
            if any(np.isfinite(r["critic_disagreement"]) for r in rs) else np.nan,
        })
    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    _plot(rows, rules, floor, out / "poisoning.png")
    _report(out, scenario, source, rows, seeds, episodes, liar, floor,
            time.perf_counter() - started)
    return out


def _plot(rows: list[dict[str, Any]], rules: tuple[str, ...], floor: float, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    x = np.arange(len(CONDITIONS))
    width = 0.8 / len(rules)
    by = {(r["rule"], r["attack"]): r for r in rows}
    for i, rule in enumerate(rules):
        pos = x - 0.4 + width * (i + 0.5)
        cells = [by[(rule, c)] for c in CONDITIONS]
        mean = np.array([c["team_reward_mean"] for c in cells])
        err = np.array([[c["team_reward_mean"] - c["team_reward_ci95_low"] for c in cells],
                        [c["team_reward_ci95_high"] - c["team_reward_mean"] for c in cells]])
        axes[0].bar(pos, mean, width, yerr=np.nan_to_num(err), capsize=2, color=f"C{i}",
                    label=rule)  # no bar where no policy was left
        for p, c in zip(pos, cells, strict=True):
            if c["no_policy"]:
                axes[0].annotate(f"{c['no_policy']}/{c['seeds']}\nbroken", (p, 0),
                                 ha="center", va="top", fontsize=7, color=f"C{i}",
                                 xytext=(0, -4), textcoords="offset points")
        axes[1].bar(pos, [c["critic_disagreement"] for c in cells], width, color=f"C{i}")
        axes[2].bar(pos, [c["penalty_mean"] for c in cells], width, color=f"C{i}")
    axes[0].axhline(floor, color="0.4", ls="--", lw=1, label="nop2p (no learning)")
    axes[0].set_ylabel("honest agents' test team reward\n(mean, 95 % CI)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("honest agents' critic disagreement")
    axes[2].set_ylabel("penalties charged to honest agents")
    for ax in axes:
        ax.set_xticks(x, CONDITIONS)
        ax.set_xlabel("what the liar sends")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper center",
               ncol=len(rules) + 1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _graph_note(s: Scenario, ids: list[str]) -> list[str]:
    """Say so when the trimmed mean cannot differ from the median on this graph."""
    from peergrid.scenarios.commands.train import communication_graph

    heard = max(d for _, d in communication_graph(s, ids).degree()) + 1
    trim = s.comms.trim
    if heard > 2 * trim + 1:
        return []
    return [f"On this graph an agent hears at most {heard - 1} neighbours: the trimmed mean "
            f"(trim {trim}) of {heard} values is their median, so those rows are equal run "
            "for run (a denser graph tells them apart).", ""]


def _no_policy(row: dict[str, Any]) -> str:
    return f" ({row['no_policy']} without a policy)" if row["no_policy"] else ""


def _report(out: Path, s: Scenario, source: str, rows: list[dict], seeds: int, episodes: int,
            liar: str, floor: float, wall: float) -> None:
    table = [
        "| rule | liar sends | diverged (at episode) | honest test team reward: mean (95 % "
        "CI) | share of the clean benefit | p vs same rule clean | p vs Metropolis clean | "
        "selected at episode | last validation | penalties (honest) | critic disagreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[f"| {r['rule']} | {r['attack']} | {r['diverged']}/{r['seeds']}"
          f"{f' ({_diverged_at(r)})' if r['diverged'] else ''}{_no_policy(r)} | "
          f"{fmt(r['team_reward_mean'])} ({fmt(r['team_reward_ci95_low'])} to "
          f"{fmt(r['team_reward_ci95_high'])}) | {fmt(r['benefit_kept'], '.0%')} | "
          f"{fmt(r['p_vs_same_rule_clean'], '.3f')} | "
          f"{fmt(r['p_vs_metropolis_clean'], '.3f')} | {fmt(r['selected_episode_mean'])} | "
          f"{fmt(r['last_validation_reward_mean'])} | {fmt(r['penalty_mean'])} | "
          f"{fmt(r['critic_disagreement'], '.2e')} |"
          for r in rows],
    ]
    lines = [
        "# Consensus with a lying neighbour", "",
        f"Scenario `{source}` (`{s.scenario.id}`), networked actor-critic (`consensus`) on the "
        f"`{s.comms.topology}` graph, {seeds} seeds per cell, {episodes} training episodes "
        f"per run, the comparison's protocol (validation model selection, test week). Agent "
        f"`{liar}` learns honestly but sends forged critic and estimator vectors (parameters "
        "and Adam moments) at every consensus step: `scaled` = its vector x 100, `random` = "
        "N(0, 1) values, `sign-flip` = its vector negated. Everything is measured on the "
        "other agents only.", "",
        *table, "",
        *_graph_note(s, [a.id for a in s.agents]),
        "Honest test team reward: the policy model selection kept (best validation score), "
        "on the test week, mean over the honest agents of their summed reward. Share of "
        "the clean benefit: (that - nop2p's) / (the clean Metropolis run's - nop2p's); "
        f"nop2p's honest team reward is {floor:,.0f}, so the benefit is a difference of "
        "means of ~3 seeds: shares within ~20 points of each other (and above 100 %) are "
        "noise, read the intervals and p-values. p: paired t-test over seeds (the same "
        "seed has the same initialisation and training days in every cell), on the test "
        "team reward. Selected at episode: when the kept policy was trained (an attack "
        "that does its damage late is partly hidden by model selection); last "
        "validation: the honest agents' validation team reward of the policy at the end "
        "of training, whatever was selected. Diverged: the parameters stopped being "
        "finite and training stopped there; its policy is the one selected before (none "
        "when it broke before the first validation: \"without a policy\", left out of the "
        "mean). Critic disagreement: the largest distance of an honest agent's critic from "
        "the honest agents' mean, in the run's last checkpoint (the same twelve agents in "
        "every cell).", "",
        "![poisoning](poisoning.png)", "",
        *_run_section(f"{wall / 60:.1f} min on {os.cpu_count()} cores"),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _diverged_at(row: dict[str, Any]) -> str:
    return row["diverged_at_episode"].replace(";", ", ")
