"""``peergrid experiment faults``: how much of networked learning survives an unreliable
network, and how much communication it needs.

Both consensus learners (the networked actor-critic ``consensus`` and the critic-only
``consensus-critic``) are trained in process under the exchange's fault model
(``agents.exchange``, the same schedule a deployment applies, message for message)
along three axes, one at a time from the perfect network:

- loss: each consensus message lost with probability 0, 0.1, 0.3, 0.5, 0.7, 0.9, and
  1 (nothing ever arrives: what a consensus learner degrades to);
- staleness: every neighbour's vector 0, 1 or 16 PPO updates old, and 1 and 4
  consensus steps (a step follows each epoch of local updates: 10 per PPO update, one
  update per 4 days), so 1, 4, 10, 40 and 160 steps;
- partition: none, or the graph's two halves unable to hear each other for 10 % or 50 %
  of training (a window centred on its middle, then healed).

Independent PPO (nothing shared, its critic on its own observation) is the reference
without a network; a consensus learner that hears nothing (loss 1) is not it (the
networked learner keeps its public-state critic and a team-reward estimator fitted to
its own reward). Then the networked actor-critic on a perfect network with cheaper
exchanges: float16, int8 with one scale per tensor, top-k differences (10 % of the
entries, a whole vector every 10 steps), and consensus once per update or once every 4
updates (``consensus_period``). Each run's bytes are the wire encoding's size of every
message sent (``exchange.json``), so the report can set team reward against bytes.

Every run uses the comparison's protocol (validation model selection, test week); the
size of the sweep is ``seeds`` x ``episodes`` (``--quick``: the committed report).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peergrid.agents.learners.portable import from_portable
from peergrid.comms.nodes.loop import Checkpoints
from peergrid.scenarios.commands.comparison import _plt
from peergrid.scenarios.commands.experiment import (TrainingJob, _fresh_dir, _run_section,
                                                    check_engine, reference_metrics,
                                                    run_training_jobs)
from peergrid.scenarios.commands.arguments import count
from peergrid.scenarios.commands.stats import fmt, paired_p, summarize, welch_p
from peergrid.scenarios.commands.train import Team, evaluate_choice, run_day
from peergrid.scenarios.definition.schema import LearnerOverrides, Scenario
from peergrid.scenarios.runtime.env import PeerGridEnv

LOSSES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
STALENESS_UPDATES = (1, 4, 16)
STALENESS_STEPS = (1, 4)
"""Staleness below one update, in consensus steps."""
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
        per_update = s.algo.for_algorithm(algo).epochs // s.algo.for_algorithm(
            algo).consensus_period
        lags = sorted({*STALENESS_STEPS, *(k * per_update for k in STALENESS_UPDATES)})
        out += [Point(algo, "staleness", k, {"faults": {"staleness": k}}) for k in lags]
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
        # the worst moment (a partition heals before the end of training)
        "critic_disagreement_peak": float(disagreement.max()) if len(disagreement) else np.nan,
        "selected_episode": float(test["episode"]),
        "bytes_total": float(exchange["bytes_total"]) if exchange else 0.0,
        "bytes_per_link_per_step": float(exchange["bytes_per_link_per_step"])
        if exchange else 0.0,
        "arrived_share": exchange["messages_used"] / max(exchange["messages_sent"], 1)
        if exchange else np.nan,
        "steps": float(exchange["consensus_steps"]) if exchange else 0.0,
    }


def faults(scenario: Scenario, source: str, out: str | Path, seeds: int | None = None,
           episodes: int | None = None, workers: int = 2, force: bool = False,
           progress: bool = True, resume: bool = False, quick: bool = False,
           engine: str = "local", address: str | None = None) -> Path:
    check_engine(engine, address)
    size = QUICK if quick else FULL
    seeds = count(seeds, size["seeds"], "seeds")
    episodes = count(episodes, size["episodes"], "episodes")
    out = _fresh_dir(out, force, resume)
    started = time.perf_counter()
    sweep = points(scenario, episodes)
    jobs = [TrainingJob(scenario_for(scenario, p), source, p.algo, seed,
                        str(_run_dir(out, p, seed)), episodes)
            for p in sweep for seed in range(seeds)]
    # the slowest (the encodings average one agent at a time) first: the pool ends together
    jobs.sort(key=lambda j: j.scenario.comms.codec == "float32")
    walls = run_training_jobs(jobs, workers, progress, "faults: training", resume, engine,
                              address)

    nop2p = reference_metrics(scenario, "nop2p")
    runs = [(p, [_run_row(_run_dir(out, p, seed)) for seed in range(seeds)]) for p in sweep]
    perfect = {a: next(rs for p, rs in runs if p.algo == a and p.axis == "loss"
                       and p.value == 0.0) for a in CONSENSUS}
    ippo = next(rs for p, rs in runs if p.algo == "ippo")
    rows = []
    for p, rs in runs:
        row: dict[str, Any] = {"algo": p.algo, "axis": p.axis, "value": p.value,
                               "seeds": seeds, "episodes": episodes}
        for key in ("team_reward", "voltage_penalty", "critic_disagreement"):
            summary = summarize([r[key] for r in rs])
            row |= {f"{key}_mean": summary.mean, f"{key}_ci95_low": summary.ci95_low,
                    f"{key}_ci95_high": summary.ci95_high}
        for key in ("bytes_total", "bytes_per_link_per_step", "arrived_share", "steps",
                    "critic_disagreement_peak", "selected_episode"):
            row[f"{key}_mean"] = float(np.mean([r[key] for r in rs]))
        reward = [r["team_reward"] for r in rs]
        base = perfect.get(p.algo if p.algo in CONSENSUS else "consensus")
        row["p_vs_perfect_network"] = paired_p(reward, [r["team_reward"] for r in base]) \
            if p.algo in CONSENSUS and not (p.axis == "loss" and p.value == 0.0) else np.nan
        row["p_vs_ippo"] = welch_p(reward, [r["team_reward"] for r in ippo]) \
            if p.algo != "ippo" else np.nan  # another algorithm: not a paired design
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
_AXES = (("loss", "message loss probability"),
         ("staleness", "staleness (consensus steps; 10 = one PPO update)"),
         ("partition", "share of training partitioned"))


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
    for col, (axis, label) in enumerate(_AXES):
        for row, (key, ylabel) in enumerate(_METRICS):
            ax = axes[row, col]
            for i, algo in enumerate(CONSENSUS):
                s = _series(frame, algo, axis)
                pos = np.arange(len(s)) if axis == "staleness" else s.x
                ax.plot(pos, s[f"{key}_mean"], "o-", color=f"C{i}", label=algo)
                low = s[f"{key}_ci95_low"]
                if key == "critic_disagreement":  # a log axis: the band stops above 0
                    low = low.clip(lower=s[f"{key}_mean"].min() / 10)
                ax.fill_between(pos, low, s[f"{key}_ci95_high"], color=f"C{i}", alpha=0.2)
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

def _ci(r: pd.Series, key: str, spec: str = ",.0f") -> str:
    return (f"{fmt(r[f'{key}_mean'], spec)} ({fmt(r[f'{key}_ci95_low'], spec)} to "
            f"{fmt(r[f'{key}_ci95_high'], spec)})")


def _report(out: Path, s: Scenario, source: str, frame: pd.DataFrame, seeds: int,
            episodes: int, nop2p: float, wall: float, workers: int, quick: bool) -> None:
    table = ["| learner | axis | value | test team reward (95 % CI) | p vs perfect network | "
             "p vs ippo | voltage penalty (95 % CI) | critic disagreement: end, peak | "
             "selected at episode | arrived | MB per run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        table.append(
            f"| {r.algo} | {r.axis} | {r.value} | {_ci(r, 'team_reward')} | "
            f"{fmt(r.p_vs_perfect_network, '.3f')} | {fmt(r.p_vs_ippo, '.3f')} | "
            f"{_ci(r, 'voltage_penalty')} | {fmt(r.critic_disagreement_mean, '.2g')}, "
            f"{fmt(r.critic_disagreement_peak_mean, '.2g')} | "
            f"{fmt(r.selected_episode_mean)} | {fmt(r.arrived_share_mean, '.0%')} | "
            f"{fmt(r.bytes_total_mean / 1e6, ',.0f')} |")
    cheap = _cheaper_rows(frame)
    exact = cheap.iloc[0]
    bytes_table = ["| exchange | MB per run | share of exact | kB per link per step | "
                   "test team reward (95 % CI) | p vs exact |", "|---|---|---|---|---|---|"]
    for _, r in cheap.iterrows():
        bytes_table.append(
            f"| {r.value} | {r.bytes_total_mean / 1e6:,.0f} | "
            f"{r.bytes_total_mean / exact.bytes_total_mean:.1%} | "
            f"{r.bytes_per_link_per_step_mean / 1e3:,.1f} | {_ci(r, 'team_reward')} | "
            f"{fmt(r.p_vs_perfect_network, '.3f')} |")
    size = "`--quick`" if quick else "full size"
    lines = [
        "# Learning over an unreliable network", "",
        f"Scenario `{source}` (`{s.scenario.id}`), `{s.comms.topology}` communication graph, "
        f"{seeds} seeds per point, {episodes} training episodes per run ({size}), the "
        "comparison's protocol (validation model selection, test week). One fault axis at a "
        "time from the perfect network, for both consensus learners; independent PPO "
        "(`ippo`, nothing exchanged) as the reference without a network. nop2p's test "
        f"team reward is {nop2p:,.0f}. The fault model is `agents.exchange` "
        "(docs/learning.md), the one a deployment applies to the same messages.", "",
        "![faults](faults.png)", "",
        *table, "",
        "## What each byte of consensus buys", "",
        "The networked actor-critic on the perfect network, with its exchange made cheaper "
        "(bytes: the wire encoding of every message sent, from each run's "
        "`exchange.json`; the deployed socket counts the same bytes, tested).", "",
        *bytes_table, "",
        "![bytes](bytes.png)", "",
        "Test team reward: the selected policy's team reward on the test week (mean over "
        "agents of their summed reward). p vs perfect network: paired t-test over seeds "
        "(the same seed has the same initialisation and training days in every cell); p "
        "vs ippo: Welch's test (another algorithm). With 3 seeds and ~60 tests these "
        "p-values are exploratory: read the intervals, and expect a few below 0.05 by "
        "chance. Critic disagreement: the largest distance of an agent's critic from the "
        "agents' mean after the last update (end) and after the worst update (peak: a "
        "partition heals before training ends); ippo's critics are unrelated networks, its "
        "value is a scale, not a failure. Selected at episode: when model selection's "
        "policy was trained. Arrived: the share of the messages sent that arrived and were "
        "averaged. Staleness counts consensus steps (a step follows each epoch: 10 per PPO "
        "update, an update every 4 days). The partition window is centred on the middle "
        "of training; the halves are a Kernighan-Lin bisection of the graph (the same for "
        "every seed). The compressed exchanges average one agent at a time in float64 (as "
        "a node does), the exact runs in one stacked float32 product: same-seed runs "
        "differ by rounding as well as by the encoding, which weakens the pairing but "
        "biases nothing.", "",
        *_run_section(f"{wall / 60:.1f} min on {os.cpu_count()} cores, {workers} workers"),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


# ---- the deployed confirmation -----------------------------------------------------------

def online_window(s: Scenario, days: int) -> Scenario:
    """``days`` consecutive days ending with the training window's last day (before the
    validation and test windows): what an online learner sees, in calendar order."""
    start = s.algo.train_start + dt.timedelta(days=s.algo.train_days - days)
    return s.model_copy(update={"scenario": s.scenario.model_copy(
        update={"start": start, "days": days})})


def learned_online(s: Scenario, algo: str, seed: int) -> Team:
    """In process, what a learning deployment does: the window's days in order, the
    battery carried over midnight, an update every ``rollout_days`` days, one agent at a
    time through the exchange (as the nodes do)."""
    team = Team(algo, s, seed, stacked=False)
    env = PeerGridEnv(s)
    for day in range(env.community.days):
        run_day(env, day, lambda o: team.act(o), team, soc="initial" if day == 0 else "carry")
        team.end_episode()
    return team


def learned_deployed(run: Path, s: Scenario, algo: str, seed: int) -> Team:
    """The learners a deployment ended with (each node's last checkpoint), as a team."""
    team = Team(algo, s, seed, stacked=False)
    for i, a in enumerate(team.ids):
        state = Checkpoints.read(run / "checkpoints" / f"{a}.state")
        if state is None:
            raise FileNotFoundError(f"{run}/checkpoints/{a}.state: no checkpoint")
        team.group.groups[i].load_state_dict(from_portable(state["state"].learner))
    return team


def confirm_deployed(scenario: Scenario, source: str, out: str | Path, loss: float = 0.3,
                     days: int = 84, seeds: int = 5, deployments: int = 2,
                     algo: str = "consensus", force: bool = False,
                     sweep: str | Path | None = None) -> Path:
    """One point of the sweep (``loss``) learned online by real deployments (13
    processes, CURVE sockets) over ``days`` days, with seeds ``seeds`` onwards, and the
    same online learning in process with seeds 0 to ``seeds`` - 1 and with each
    deployment's seed; each final policy evaluated greedily on the test week. Reports
    whether each deployment lands within the in-process 95 % interval, and its
    difference from the in-process run of its own seed (zero when the runtimes agree:
    one torch thread everywhere, as in the nodes); with ``sweep`` (a faults experiment
    directory), that point's interval there (another protocol: random training days,
    model selection)."""
    import torch

    from peergrid.scenarios.commands.deploy import deploy

    torch.set_num_threads(1)  # as every node: the same floating-point reductions
    out = _fresh_dir(out, force)
    faulty = scenario_for(scenario, Point(algo, "loss", loss, {"faults": {"loss": loss}}))
    window = online_window(faulty, days)
    t0 = time.perf_counter()
    rows = []
    deploy_seeds = list(range(seeds, seeds + deployments))
    for seed in deploy_seeds:
        t1 = time.perf_counter()
        run, exits = deploy(window, source, algo, out / f"deployment-seed{seed}", days=days,
                            seed=seed, force=True)
        wall = time.perf_counter() - t1
        if set(exits.values()) != {0}:
            raise RuntimeError(f"the deployment of seed {seed} did not end cleanly: {exits}")
        at_end = learned_deployed(run, window, algo, seed)
        m = evaluate_choice(faulty, lambda o, t=at_end: t.act(o, greedy=True))  # test week
        rows.append({"runtime": "zeromq", "seed": seed, "wall_s": wall,
                     "team_reward": m["team_reward"], "voltage_penalty": m["voltage_penalty"]})
    for seed in [*range(seeds), *deploy_seeds]:
        t1 = time.perf_counter()
        team = learned_online(window, algo, seed)
        m = evaluate_choice(faulty, lambda o, t=team: t.act(o, greedy=True))
        rows.append({"runtime": "in-process", "seed": seed, "wall_s": time.perf_counter() - t1,
                     "team_reward": m["team_reward"], "voltage_penalty": m["voltage_penalty"]})
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "deployed.csv", index=False)
    local = frame[(frame.runtime == "in-process") & (frame.seed < seeds)]
    ci = summarize(local.team_reward.tolist())
    verdicts = []
    for d in frame[frame.runtime == "zeromq"].itertuples():
        twin = float(frame[(frame.runtime == "in-process")
                           & (frame.seed == d.seed)].team_reward.iloc[0])
        inside = ci.ci95_low <= d.team_reward <= ci.ci95_high
        verdicts.append(
            f"The deployment of seed {d.seed}: {d.team_reward:,.1f}, "
            f"{'inside' if inside else 'outside'} the interval; the in-process run of its "
            f"seed: {twin:,.1f} (difference {d.team_reward - twin:+.3g}: the two runtimes "
            f"{'agree' if d.team_reward == twin else 'differ'}). It took "
            f"{d.wall_s / 60:.1f} min.")
    context = []
    if sweep is not None and (Path(sweep) / "summary.csv").is_file():
        sw = pd.read_csv(Path(sweep) / "summary.csv")
        hit = sw[(sw.algo == algo) & (sw.axis == "loss")
                 & (pd.to_numeric(sw.value, errors="coerce") == loss)]
        if len(hit):
            h = hit.iloc[0]
            context = [f"For context, the sweep's point (random training days, validation "
                       f"model selection, {int(h.episodes)} episodes, {int(h.seeds)} seeds): "
                       f"{h.team_reward_mean:,.1f} ({h.team_reward_ci95_low:,.1f} to "
                       f"{h.team_reward_ci95_high:,.1f}).", ""]
    lines = [
        "# The sweep's loss point, deployed", "",
        f"`{algo}` with consensus message loss {loss}, learned online over {days} consecutive "
        f"days ({window.scenario.start} to the training window's last day, in calendar "
        f"order, an update every {window.algo.for_algorithm(algo).rollout_days} days, no "
        "model selection: the policy at the end is the policy): as real deployments (a "
        f"market, a grid and {len(scenario.agents)} prosumer processes on CURVE sockets) "
        f"with seeds {', '.join(map(str, deploy_seeds))}, and in process with seeds 0 to "
        f"{seeds - 1} and with each deployment's seed. Each final policy acts greedily on "
        "the test week.", "",
        "| runtime | seed | test team reward | voltage penalty | wall time |",
        "|---|---|---|---|---|",
        *[f"| {r.runtime} | {r.seed} | {r.team_reward:,.1f} | {r.voltage_penalty:,.1f} | "
          f"{r.wall_s / 60:.1f} min |" for r in frame.itertuples()], "",
        f"In process, seeds 0 to {seeds - 1}: {ci.mean:,.1f} (95 % CI {ci.ci95_low:,.1f} to "
        f"{ci.ci95_high:,.1f}).", "", *verdicts, "",
        *context,
        *_run_section(f"{(time.perf_counter() - t0) / 60:.1f} min on {os.cpu_count()} cores"),
    ]
    (out / "deployed.md").write_text("\n".join(lines) + "\n")
    return out
