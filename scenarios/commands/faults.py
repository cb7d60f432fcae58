"""``peergrid experiment faults``: how much of networked learning survives an unreliable
network, and how much communication it needs.

Both consensus learners (the networked actor-critic ``consensus`` and the critic-only
``consensus-critic``) are trained in process under the exchange's fault model
(``agents.exchange``, the same schedule a deployment applies, message for message)
along three axes, one at a time from the perfect network:

- loss: each consensus message lost with probability 0, 0.1, 0.3, 0.5, 0.7, 0.9;
- staleness: every neighbour's vector 0, 1, 4 or 16 consensus steps old (a step
  follows each epoch of local updates: 10 per PPO update, one update per 4 days);
- partition: none, or the graph's two halves unable to hear each other for 10 % or 50 %
  of training (a window centred on its middle, then healed).

Independent PPO (nothing shared) is the floor a consensus learner degrades to when
nothing arrives. Then the networked actor-critic on a perfect network with cheaper
exchanges: float16, int8 with one scale per tensor, top-k differences (10 % of the
entries, a whole vector every 10 steps), and consensus once per update or once every 4
updates (``consensus_period``). Each run's bytes are the wire encoding's size of every
message sent (``exchange.json``), so the report can set team reward against bytes.

Every run uses the comparison's protocol (validation model selection, test week); the
size of the sweep is ``seeds`` x ``episodes`` (``--quick``: the committed report).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from peergrid.scenarios.commands.comparison import _plt
from peergrid.scenarios.commands.experiment import (TrainingJob, _fresh_dir, _run_section,
                                                    reference_metrics, run_training_jobs)
from peergrid.scenarios.commands.stats import summarize
from peergrid.scenarios.definition.schema import LearnerOverrides, Scenario

LOSSES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
STALENESS = (0, 1, 4, 16)
PARTITIONS = (0.0, 0.1, 0.5)
"""Share of training the two halves of the graph are cut apart."""
CHEAPER = {"float16": {"codec": "float16"}, "int8": {"codec": "int8"},
           "topk 10 %": {"codec": "topk", "topk_fraction": 0.1, "keyframe_every": 10},
           "once per update": {"period_updates": 1},
           "every 4th update": {"period_updates": 4}}
CONSENSUS = ("consensus", "consensus-critic")
QUICK = {"seeds": 3, "episodes": 200}
FULL = {"seeds": 5, "episodes": 600}


@dataclass(frozen=True)
class Point:
    algo: str
    axis: str
    """loss, staleness, partition, cheaper, or none (independent PPO)."""
    value: float | str
    comms: dict[str, Any]
    period: int | None = None
    """consensus_period in epochs (None: the scenario's)."""

    @property
    def name(self) -> str:
        return f"{self.algo}-{self.axis}-{self.value}".replace(" ", "").replace("%", "pct")


def consensus_steps(s: Scenario, algo: str, episodes: int, period: int | None = None) -> int:
    a = s.algo.for_algorithm(algo)
    return (episodes // a.rollout_days) * a.epochs // (period or a.consensus_period)


def points(s: Scenario, episodes: int) -> list[Point]:
    """The sweep: each axis from the perfect network, per consensus learner; independent
    PPO; the cheaper exchanges for the networked actor-critic."""
    out = []
    for algo in CONSENSUS:
        out.append(Point(algo, "loss", 0.0, {}))  # the perfect network, every axis's 0
        out += [Point(algo, "loss", x, {"faults": {"loss": x}}) for x in LOSSES[1:]]
        out += [Point(algo, "staleness", k, {"faults": {"staleness": k}})
                for k in STALENESS[1:]]
        steps = consensus_steps(s, algo, episodes)
        for share in PARTITIONS[1:]:
            length = max(1, round(share * steps))
            start = (steps - length) // 2
            out.append(Point(algo, "partition", share, {"faults": {"partitions": [
                {"start_step": start, "end_step": start + length - 1}]}}))
    epochs = s.algo.for_algorithm("consensus").epochs
    for label, c in CHEAPER.items():
        every = c.get("period_updates")
        comms = {k: v for k, v in c.items() if k != "period_updates"}
        out.append(Point("consensus", "cheaper", label, comms,
                         every * epochs if every else None))
    out.append(Point("ippo", "none", "-", {}))
    return out


def scenario_for(s: Scenario, p: Point) -> Scenario:
    comms = s.comms.model_validate({**s.comms.model_dump(), **p.comms,
                                    "faults": {**s.comms.faults.model_dump(),
                                               **p.comms.get("faults", {})}})
    update: dict[str, Any] = {"comms": comms}
    if p.period is not None:
        overrides = dict(s.algo.overrides)
        base = overrides.get(p.algo) or LearnerOverrides()
        overrides[p.algo] = base.model_copy(update={"consensus_period": p.period})
        update["algo"] = s.algo.model_copy(update={"overrides": overrides})
    return s.model_copy(update=update)


def _run_dir(out: Path, p: Point, seed: int) -> Path:
    return out / "train" / f"{p.name}-seed{seed}"


def _run_row(run: Path) -> dict[str, float]:
    test = pd.read_csv(run / "test.csv").iloc[0]
    metrics = pd.read_csv(run / "metrics.csv")
    disagreement = metrics["critic_disagreement"].dropna() \
        if "critic_disagreement" in metrics else pd.Series(dtype=float)
    exchange = json.loads((run / "exchange.json").read_text()) \
        if (run / "exchange.json").is_file() else None
    return {
        "team_reward": float(test["team_reward"]),
        "voltage_penalty": float(test["voltage_penalty"]),
        "critic_disagreement": float(disagreement.iloc[-1]) if len(disagreement) else np.nan,
        "bytes_total": float(exchange["bytes_total"]) if exchange else 0.0,
        "bytes_per_link_per_step": float(exchange["bytes_per_link_per_step"])
        if exchange else 0.0,
        "arrived_share": exchange["messages_used"] / max(exchange["messages_sent"], 1)
        if exchange else np.nan,
        "steps": float(exchange["consensus_steps"]) if exchange else 0.0,
    }


def _paired_p(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a, float), np.asarray(b, float)
    if len(x) < 2 or np.allclose(x, y):
        return np.nan if len(x) < 2 else 1.0
    return float(sps.ttest_rel(x, y).pvalue)


def faults(scenario: Scenario, source: str, out: str | Path, seeds: int | None = None,
           episodes: int | None = None, workers: int = 2, force: bool = False,
           progress: bool = True, resume: bool = False, quick: bool = False) -> Path:
    size = QUICK if quick else FULL
    seeds, episodes = seeds or size["seeds"], episodes or size["episodes"]
    out = _fresh_dir(out, force, resume)
    started = time.perf_counter()
    sweep = points(scenario, episodes)
    jobs = [TrainingJob(scenario_for(scenario, p), source, p.algo, seed,
                        str(_run_dir(out, p, seed)), episodes)
            for p in sweep for seed in range(seeds)]
    # the slowest (the encodings average one agent at a time) first: the pool ends together
    jobs.sort(key=lambda j: j.scenario.comms.codec == "float32")
    walls = run_training_jobs(jobs, workers, progress, "faults: training", resume)

    nop2p = reference_metrics(scenario, "nop2p")
    runs = [(p, [_run_row(_run_dir(out, p, seed)) for seed in range(seeds)]) for p in sweep]
    perfect = {a: next(rs for p, rs in runs if p.algo == a and p.axis == "loss"
                       and p.value == 0.0) for a in CONSENSUS}
    floor = next(rs for p, rs in runs if p.algo == "ippo")
    rows = []
    for p, rs in runs:
        row: dict[str, Any] = {"algo": p.algo, "axis": p.axis, "value": p.value,
                               "seeds": seeds, "episodes": episodes}
        for key in ("team_reward", "voltage_penalty", "critic_disagreement"):
            summary = summarize([r[key] for r in rs])
            row |= {f"{key}_mean": summary.mean, f"{key}_ci95_low": summary.ci95_low,
                    f"{key}_ci95_high": summary.ci95_high}
        for key in ("bytes_total", "bytes_per_link_per_step", "arrived_share", "steps"):
            row[f"{key}_mean"] = float(np.mean([r[key] for r in rs]))
        reward = [r["team_reward"] for r in rs]
        base = perfect.get(p.algo if p.algo in CONSENSUS else "consensus")
        row["p_vs_perfect_network"] = _paired_p(reward, [r["team_reward"] for r in base]) \
            if p.algo in CONSENSUS and not (p.axis == "loss" and p.value == 0.0) else np.nan
        row["p_vs_ippo"] = _paired_p(reward, [r["team_reward"] for r in floor]) \
            if p.algo != "ippo" else np.nan
        row["wall_s_mean"] = float(np.mean([walls[str(_run_dir(out, p, s))]
                                            for s in range(seeds)]))
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "summary.csv", index=False)
    _plot_axes(frame, float(nop2p["team_reward"]), out / "faults.png")
    _plot_bytes(frame, out / "bytes.png")
    _report(out, scenario, source, frame, seeds, episodes, float(nop2p["team_reward"]),
            time.perf_counter() - started, workers, quick)
    return out


# ---- figures ---------------------------------------------------------------------------

_METRICS = (("team_reward", "test team reward"), ("voltage_penalty", "voltage penalty (test)"),
            ("critic_disagreement", "critic disagreement (end)"))
_AXES = (("loss", "message loss probability", LOSSES),
         ("staleness", "staleness (consensus steps)", STALENESS),
         ("partition", "share of training partitioned", PARTITIONS))


def _series(frame: pd.DataFrame, algo: str, axis: str) -> pd.DataFrame:
    """One learner's rows along one axis, its perfect network as the axis's 0."""
    mine = frame[frame.algo == algo]
    zero = mine[(mine.axis == "loss") & (mine.value == 0.0)]
    rows = mine[mine.axis == axis] if axis == "loss" else pd.concat([zero, mine[mine.axis == axis]])
    x = [0.0 if i == 0 and axis != "loss" else float(v) for i, v in enumerate(rows.value)]
    return rows.assign(x=x).sort_values("x")


def _plot_axes(frame: pd.DataFrame, nop2p: float, path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(3, 3, figsize=(14, 10.5))
    ippo = frame[frame.algo == "ippo"].iloc[0]
    for col, (axis, label, _) in enumerate(_AXES):
        for row, (key, ylabel) in enumerate(_METRICS):
            ax = axes[row, col]
            for i, algo in enumerate(CONSENSUS):
                s = _series(frame, algo, axis)
                pos = np.arange(len(s)) if axis == "staleness" else s.x
                ax.plot(pos, s[f"{key}_mean"], "o-", color=f"C{i}", label=algo)
                ax.fill_between(pos, s[f"{key}_ci95_low"], s[f"{key}_ci95_high"],
                                color=f"C{i}", alpha=0.2)
                if axis == "staleness":
                    ax.set_xticks(pos, [f"{v:g}" for v in s.x])
            ax.axhline(ippo[f"{key}_mean"], color="C2", lw=1.2, label="ippo (no exchange)")
            if np.isfinite(ippo[f"{key}_ci95_low"]):
                ax.axhspan(ippo[f"{key}_ci95_low"], ippo[f"{key}_ci95_high"], color="C2",
                           alpha=0.12)
            if key == "team_reward":
                ax.axhline(nop2p, color="0.4", ls="--", lw=1, label="nop2p (no learning)")
            if key == "critic_disagreement":
                ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", ncol=4,
               frameon=False)
    fig.suptitle("mean over seeds, band: 95 % CI", y=0.955, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cheaper_rows(frame: pd.DataFrame) -> pd.DataFrame:
    perfect = frame[(frame.algo == "consensus") & (frame.axis == "loss") & (frame.value == 0.0)]
    cheaper = frame[(frame.algo == "consensus") & (frame.axis == "cheaper")]
    return pd.concat([perfect.assign(value="float32 (exact)"), cheaper])


def _plot_bytes(frame: pd.DataFrame, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    rows = _cheaper_rows(frame)
    for i, (_, r) in enumerate(rows.iterrows()):
        err = [[r.team_reward_mean - r.team_reward_ci95_low],
               [r.team_reward_ci95_high - r.team_reward_mean]]
        ax.errorbar(r.bytes_total_mean / 1e9, r.team_reward_mean, yerr=np.nan_to_num(err),
                    fmt="o", capsize=3, color=f"C{i}", label=r.value)
    ippo = frame[frame.algo == "ippo"].iloc[0]
    ax.axhline(ippo.team_reward_mean, color="C2", lw=1.2, ls=":", label="ippo (0 bytes)")
    ax.set_xscale("log")
    ax.set_xlabel("bytes sent by the consensus exchange over a training run (GB, log)")
    ax.set_ylabel("test team reward (mean, 95 % CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- report ----------------------------------------------------------------------------

def _fmt(x: float, spec: str = ",.0f") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) \
        else format(x, spec)


def _ci(r: pd.Series, key: str, spec: str = ",.0f") -> str:
    return (f"{_fmt(r[f'{key}_mean'], spec)} ({_fmt(r[f'{key}_ci95_low'], spec)} to "
            f"{_fmt(r[f'{key}_ci95_high'], spec)})")


def _report(out: Path, s: Scenario, source: str, frame: pd.DataFrame, seeds: int,
            episodes: int, nop2p: float, wall: float, workers: int, quick: bool) -> None:
    table = ["| learner | axis | value | test team reward (95 % CI) | p vs perfect network | "
             "p vs ippo | voltage penalty | critic disagreement | arrived | MB per run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        table.append(
            f"| {r.algo} | {r.axis} | {r.value} | {_ci(r, 'team_reward')} | "
            f"{_fmt(r.p_vs_perfect_network, '.3f')} | {_fmt(r.p_vs_ippo, '.3f')} | "
            f"{_ci(r, 'voltage_penalty')} | {_fmt(r.critic_disagreement_mean, '.2g')} | "
            f"{_fmt(r.arrived_share_mean, '.0%')} | {_fmt(r.bytes_total_mean / 1e6, ',.0f')} |")
    cheap = _cheaper_rows(frame)
    exact = cheap.iloc[0]
    bytes_table = ["| exchange | MB per run | share of exact | kB per link per step | "
                   "test team reward (95 % CI) | p vs exact |", "|---|---|---|---|---|---|"]
    for _, r in cheap.iterrows():
        bytes_table.append(
            f"| {r.value} | {r.bytes_total_mean / 1e6:,.0f} | "
            f"{r.bytes_total_mean / exact.bytes_total_mean:.1%} | "
            f"{r.bytes_per_link_per_step_mean / 1e3:,.1f} | {_ci(r, 'team_reward')} | "
            f"{_fmt(r.p_vs_perfect_network, '.3f')} |")
    size = "`--quick`" if quick else "full size"
    lines = [
        "# Learning over an unreliable network", "",
        f"Scenario `{source}` (`{s.scenario.id}`), `{s.comms.topology}` communication graph, "
        f"{seeds} seeds per point, {episodes} training episodes per run ({size}), the "
        "comparison's protocol (validation model selection, test week). One fault axis at a "
        "time from the perfect network, for both consensus learners; independent PPO "
        "(`ippo`, nothing exchanged) as the floor. nop2p's test team reward is "
        f"{nop2p:,.0f}. The fault model is `agents.exchange` (docs/learning.md), the one a "
        "deployment applies to the same messages.", "",
        "![faults](faults.png)", "",
        *table, "",
        "## What each byte of consensus buys", "",
        "The networked actor-critic on the perfect network, with its exchange made cheaper "
        "(bytes: the wire encoding of every message sent, from each run's "
        "`exchange.json`; the deployed socket counts the same bytes, tested).", "",
        *bytes_table, "",
        "![bytes](bytes.png)", "",
        "Test team reward: the selected policy's team reward on the test week (mean over "
        "agents of their summed reward). p: paired t-test over seeds (the same seed has the "
        "same initialisation and training days in every cell). Critic disagreement: the "
        "largest distance of an agent's critic from the agents' mean after the last update "
        "(ippo's critics are unrelated networks: its value is a scale, not a failure). "
        "Arrived: the share of the messages sent that arrived and were averaged. "
        "Staleness counts consensus steps (10 per PPO update); the partition window is "
        "centred on the middle of training and the graph is split by a Kernighan-Lin "
        "bisection.", "",
        *_run_section(f"{wall / 60:.1f} min on {os.cpu_count()} cores, {workers} workers"),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
