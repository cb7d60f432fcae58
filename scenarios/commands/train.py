"""Training and evaluation of the learners in the in-process runtime.

Three disjoint windows (``[algo]``): a run trains on the training window, one day per
episode drawn from the seed, each starting from the state of charge the previous one
ended with (``algo.episode_start``), the day's end a truncation that learners bootstrap
from; every ``eval_every`` episodes it evaluates the greedy policy on the validation
window and keeps the best as the run's policy (model selection sees nothing else); when
training ends it evaluates that policy once on the test window, the ``[scenario]``
window. Evaluations run a window as one continuous stretch (batteries start at
``soc_init`` once and carry their charge over every midnight).

Run directory ``runs/NAME/``::

    manifest.json     scenario, algorithm, seed, versions, command
    metrics.csv       one row per training episode
    eval.csv          one row per evaluation on the validation window
    best.state        the selected policy (best validation team reward)
    test.csv          that policy on the test window (the number a report uses)
    tb/               the same scalars for TensorBoard, with the critic (and estimator)
                      losses, the critics' disagreement, and the run's hyper-parameters
                      beside its validation and test results (HParams tab)
    exchange.json     consensus algorithms: messages and bytes the exchange sent, per
                      directed link and in total (the wire encoding's size)
    checkpoint.state  learners, optimisers, replay buffer, random states, episode:
                      `--resume` continues exactly where the run stopped

Both state files load without running code (``agents.statefile``); a run of an older
peergrid (``best.pt``/``checkpoint.pt``, pickles) is refused, not unpickled.
"""

from __future__ import annotations

import csv
import json
import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from peergrid.agents.learners.config import ONLINE_ALGORITHMS, LearnerConfig  # noqa: F401
from peergrid.agents.exchange import Encoded, GroupExchange, StepLog, halves, segments_of
from peergrid.agents.learners.consensus import (cooperative_update, critic_disagreement,
                                                estimator_disagreement)
from peergrid.agents.learners.maddpg import MADDPG
from peergrid.agents.learners.ppo import PPOGroup, SeparateLearners
from peergrid.agents import statefile
from peergrid.agents.learners.portable import from_portable, to_portable
from peergrid.agents.poisoning import Attack, Liar
from peergrid.agents.records import RoundRecord
from peergrid.agents.spaces import ACTION_DIM, OBS_DIM
from peergrid.agents.topology import build_graph, metropolis_weights
from peergrid.comms.messages import Critic, layout_hash
from peergrid.comms.wire import Header, encoded_size
from peergrid.grid.feeders import build_feeder
from peergrid.grid.powerflow import topology_of
from peergrid.scenarios.commands.report import grid_violations
from peergrid.scenarios.runtime.community import prosumer_spec
from peergrid.scenarios.runtime.env import PeerGridEnv
from peergrid.scenarios.definition.errors import ScenarioError
from peergrid.scenarios.definition.loader import in_window
from peergrid.scenarios.runtime.logs import (IN_PROCESS_BUFFER_ROUNDS, RunWriter, check_format,
                                             read_manifest, write_manifest)
from peergrid.scenarios.commands.arguments import count
from peergrid.scenarios.definition.schema import ALGORITHMS, Scenario
from peergrid.agents.seeding import stream

PPO_MODES = {"consensus": "networked", "consensus-critic": "own", "ippo": "own",
             "mappo": "central"}
"""The critic each PPO-based algorithm uses (agents.learners.ppo)."""
CONSENSUS = ("consensus", "consensus-critic")
"""The algorithms whose agents average parameters with their graph neighbours."""
Actions = dict[str, np.ndarray]


def learner_config(s: Scenario, algo: str) -> LearnerConfig:
    """The hyper-parameters of ``algo``: ``[algo]`` with its ``[algo.overrides.<algo>]``."""
    a = s.algo.for_algorithm(algo)
    return LearnerConfig(
        hidden_sizes=list(a.hidden_sizes), gamma=a.gamma, lr_actor=a.lr_actor,
        lr_critic=a.lr_critic, gae_lambda=a.gae_lambda, clip=a.clip, epochs=a.epochs,
        minibatch=a.minibatch, entropy_coef=a.entropy_coef, init_log_std=a.init_log_std,
        consensus_period=a.consensus_period, buffer_size=a.buffer_size,
        batch_size=a.batch_size, tau=a.tau, update_every=a.update_every,
        noise_start=a.noise_start, noise_end=a.noise_end,
        noise_decay_steps=a.episodes * 24 // 2,
    )


def learner_dims(s: Scenario) -> dict[str, int]:
    """Input sizes of the critics and estimators (agents.public): the public state, the
    estimator's input (state and outcome), MAPPO's global state."""
    from peergrid.agents.public import public_state_dim
    from peergrid.scenarios.runtime.community import feeder_nodes

    public = public_state_dim(len(feeder_nodes(s)))
    return {"public_dim": public, "estimator_dim": 2 * public - 4,
            "global_dim": len(s.agents) * OBS_DIM + public}


def shared_seed(seed: int) -> int:
    """The one initialisation of the networked learners' critics and estimators."""
    return int(stream(seed, "consensus-init").integers(2**31))


def training_window(s: Scenario) -> Scenario:
    return in_window(s, "train")


def reward_scales(s: Scenario, algo: str = "ippo") -> dict[str, float]:
    """Reward unit per agent: its size x the highest retail price x the round length
    (from the scenario alone: no profiles need loading). Algorithms that learn the team's
    reward (consensus, mappo) use one unit for all, the mean of those, so that the team
    reward they estimate is the community's and not a weighted one."""
    price_ref = max(s.tariff.hourly()[0])
    dt_h = s.scenario.step_min / 60.0
    own = {a.id: prosumer_spec(a).p_ref_kw * price_ref * dt_h for a in s.agents}
    if PPO_MODES.get(algo) in ("networked", "central"):
        common = float(np.mean(list(own.values())))
        return {a: common for a in own}
    return own


def communication_graph(s: Scenario, agent_ids: list[str]):
    edges: tuple[tuple[str, str], ...] = ()
    if s.comms.topology == "feeder":  # only this topology needs the network itself
        edges = topology_of(build_feeder(s.feeder.name)).edges
    return build_graph(
        s.comms.topology, agent_ids, seed=int(stream(s.scenario.seed, "comms").integers(2**31)),
        agent_bus={a.id: a.bus for a in s.agents}, feeder_edges=edges,
        allow_disconnected=s.comms.allow_disconnected,
    )


def graph_halves(s: Scenario, graph) -> dict[str, int]:
    """The two halves a ``[comms.faults]`` partition cuts apart: a property of the
    scenario's graph, the same for every training seed."""
    return halves(graph, [a.id for a in s.agents],
                  seed=int(stream(s.scenario.seed, "graph-halves").integers(2**31)))


BEST, CHECKPOINT, EXCHANGE = "best.state", "checkpoint.state", "exchange.json"


def write_state(path: Path, state: dict[str, Any]) -> None:
    """A run's state file, written whole then renamed (a crash leaves the old one)."""
    tmp = path.with_name(path.name + ".tmp")
    statefile.save(tmp, to_portable(state))
    tmp.replace(path)


def read_state(path: Path) -> dict[str, Any]:
    """A run's state file; a run of an older peergrid (a pickle) is refused unread."""
    if not path.is_file() and path.with_suffix(".pt").is_file():
        raise statefile.StateFileError(
            f"{path.with_suffix('.pt')}: a run of an older peergrid (torch pickles, which "
            "could run code when loaded): not read; train it again with this version")
    return from_portable(statefile.load(path))


@dataclass
class Traffic:
    """What a run's consensus exchange put on the wire."""

    steps: int = 0
    sent: int = 0
    """Messages sent (each to one neighbour)."""
    used: int = 0
    """Messages that arrived and were averaged."""
    bytes_total: int = 0
    link_bytes: dict[str, int] = field(default_factory=dict)
    """Bytes per directed link, ``"a01->a02"``."""

    def add(self, sender: str, receivers: tuple[str, ...], size: int) -> None:
        for b in receivers:
            key = f"{sender}->{b}"
            self.link_bytes[key] = self.link_bytes.get(key, 0) + size
        self.sent += len(receivers)
        self.bytes_total += size * len(receivers)

    def summary(self) -> dict[str, Any]:
        links = max(len(self.link_bytes), 1)
        return {"consensus_steps": self.steps, "messages_sent": self.sent,
                "messages_used": self.used, "bytes_total": self.bytes_total,
                "links": len(self.link_bytes),
                "bytes_per_link_per_step": self.bytes_total / links / max(self.steps, 1),
                "link_bytes": dict(sorted(self.link_bytes.items()))}


class TrainingDiverged(RuntimeError):
    """The learners' parameters are no longer finite (e.g. poisoned by a lying neighbour)."""


class Team:
    """All agents' learners of one algorithm behind one in-process interface."""

    def __init__(self, algo: str, scenario: Scenario, seed: int, stacked: bool = True,
                 attack: Attack | None = None) -> None:
        if algo not in ALGORITHMS:
            raise ValueError(f"algo = {algo!r}: unknown (choose from {', '.join(ALGORITHMS)})")
        self.algo, self.cfg = algo, learner_config(scenario, algo)
        self.ids = [a.id for a in scenario.agents]
        self.rollout_days = scenario.algo.for_algorithm(algo).rollout_days
        scales = reward_scales(scenario, algo)
        seeds = [int(stream(seed, "learner", i).integers(2**31)) for i in range(len(self.ids))]
        self.weights: np.ndarray | None = None
        self.exchange: GroupExchange | None = None
        self.scenario_id = scenario.scenario.id
        self.traffic = Traffic()
        if algo == "maddpg":
            self.maddpg = MADDPG(self.ids, OBS_DIM, ACTION_DIM, self.cfg, seeds, scales,
                                 seed=int(stream(seed, "maddpg").integers(2**31)))
        else:
            kind = PPOGroup if stacked else SeparateLearners
            self.group = kind(self.ids, OBS_DIM, ACTION_DIM, self.cfg, seeds,
                              [scales[a] for a in self.ids], mode=PPO_MODES[algo],
                              shared_seed=shared_seed(seed), **learner_dims(scenario))
            if algo in CONSENSUS:
                graph = communication_graph(scenario, self.ids)
                self.weights = metropolis_weights(graph, self.ids)
                layout = self.group.consensus_layout()
                self.layout = layout_hash(layout)
                self.exchange = GroupExchange(
                    scenario.comms.exchange(seed, graph_halves(scenario, graph)), self.ids,
                    self.weights, segments_of(layout))
                size = self.group.consensus_parameters(self.ids[0]).size
                self._exact = Encoded.exact(np.zeros(size, np.float32))
        self.aggregation = scenario.comms.aggregation_rule()
        self.liar = None
        if attack is not None:
            if self.weights is None:
                raise ValueError(f"an attack on consensus needs a consensus algorithm, not {algo}")
            self.liar = Liar(attack, stream(seed, "attack"))
        self.honest = [a for a in self.ids if attack is None or a != attack.agent]
        self.episodes_in_rollout = 0
        self.updates = 0  # the consensus period counts epochs over the whole run
        self.lr_anneal = scenario.algo.lr_anneal
        self.maddpg_critic_losses: list[float] = []  # since the last end_episode

    def _optimisers(self) -> list[tuple[torch.optim.Optimizer, float]]:
        core = self.maddpg if self.algo == "maddpg" else self.group
        return [(opt, base) for g in getattr(core, "groups", [core])
                for opt, base in ((g.opt_actor, self.cfg.lr_actor),
                                  (g.opt_critic, self.cfg.lr_critic))]

    def set_progress(self, fraction: float) -> None:
        """Anneal step sizes linearly to 0 as training goes from 0 to 1 (if enabled)."""
        if not self.lr_anneal:
            return
        for opt, base in self._optimisers():
            for g in opt.param_groups:
                g["lr"] = base * max(1.0 - fraction, 0.0)

    def act(self, obs: Mapping[str, np.ndarray], greedy: bool = False) -> Actions:
        if self.algo == "maddpg":
            return self.maddpg.act(obs, greedy)
        acts = self.group.act(np.stack([obs[a] for a in self.ids]), greedy)
        return dict(zip(self.ids, acts, strict=True))

    def act_one(self, agent: str, obs: np.ndarray) -> np.ndarray:
        """One agent's greedy action from its own observation (decentralised execution)."""
        others = {a: np.zeros_like(obs) for a in self.ids}
        return self.act({**others, agent: obs}, greedy=True)[agent]

    def observe(self, obs, actions, rewards, next_obs, terminated: bool, truncated: bool,
                public: Mapping[str, np.ndarray] | None = None) -> None:
        """One round's transition of every agent; ``public``: the env's
        ``infos[agent]["public"]`` (the networked learners' and MAPPO's critic inputs)."""
        if self.algo == "maddpg":
            stats = self.maddpg.observe(obs, actions, rewards, next_obs, terminated, truncated)
            if stats is not None:  # an update ran: its loss for the episode's metrics
                self.maddpg_critic_losses.append(stats["critic_loss"])
            return
        own = np.stack([obs[a] for a in self.ids])
        nxt = np.stack([next_obs[a] for a in self.ids])
        global_state = None
        if self.algo == "mappo":  # every observation and the public state: training only
            global_state = {"state": np.concatenate([own.ravel(), public["state"]]),
                            "next_state": np.concatenate([nxt.ravel(), public["next_state"]])}
        self.group.observe(np.array([rewards[a] for a in self.ids]), nxt, terminated,
                           truncated, public, global_state)

    def end_episode(self) -> dict[str, float]:
        """Called after each training day; runs the on-policy update when it is due."""
        if self.algo == "maddpg":  # it updates every few rounds: the episode's mean loss
            losses, self.maddpg_critic_losses = self.maddpg_critic_losses, []
            return {"critic_loss": float(np.mean(losses))} if losses else {}
        self.episodes_in_rollout += 1
        if self.episodes_in_rollout < self.rollout_days:
            return {}
        self.episodes_in_rollout = 0
        try:
            before = self.traffic.bytes_total, self.traffic.sent - self.traffic.used
            stats = cooperative_update(self.group, self.cfg.epochs, self.weights,
                                       self.cfg.consensus_period, self.updates * self.cfg.epochs,
                                       self.aggregation, self.liar, self.exchange, self._count)
        except ValueError as err:  # torch refuses a policy with non-finite parameters
            if self._finite():
                raise
            raise TrainingDiverged(f"update {self.updates + 1}: {err}"[:300]) from None
        self.updates += 1
        if not self._finite():
            raise TrainingDiverged(f"update {self.updates}: non-finite parameters")
        # among the honest agents: a liar's own parameters say nothing of consensus
        if self.algo != "mappo":
            stats["critic_disagreement"] = critic_disagreement(self.group, self.honest)
        if self.algo == "consensus":
            stats["estimator_disagreement"] = estimator_disagreement(self.group, self.honest)
        if self.exchange is not None:
            stats["consensus_bytes"] = self.traffic.bytes_total - before[0]
            stats["consensus_lost"] = self.traffic.sent - self.traffic.used - before[1]
        return stats

    def _count(self, epoch: int, step: int, log: StepLog) -> None:
        """The bytes each message of a consensus step takes on the wire: its encoding as
        a deployed node would send it (the socket counts the same, tested)."""
        for a, (enc, to) in log.sent.items():
            if enc is None:  # the stacked step: exact float32 vectors of one size
                enc = self._exact
            size = encoded_size(Header(self.scenario_id, self.updates, epoch, a, "critic"),
                                Critic.of(self.updates, epoch, self.layout, enc))
            self.traffic.add(a, to, size)
        self.traffic.steps += 1
        self.traffic.used += len(log.used)

    def _finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for opt, _ in self._optimisers()
                   for group in opt.param_groups for p in group["params"])

    def state_dict(self) -> dict[str, Any]:
        core = self.maddpg.state_dict() if self.algo == "maddpg" else self.group.state_dict()
        state = {"algo": self.algo, "core": core,
                 "episodes_in_rollout": self.episodes_in_rollout, "updates": self.updates}
        if self.exchange is not None:
            state["exchange"] = self.exchange.state_dict()
            state["traffic"] = asdict(self.traffic)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["algo"] != self.algo:
            raise ValueError(f"checkpoint is for {state['algo']!r}, not {self.algo!r}")
        if self.algo == "maddpg":
            self.maddpg.load_state_dict(state["core"])
        else:
            self.group.load_state_dict(state["core"])
        self.episodes_in_rollout = state["episodes_in_rollout"]
        self.updates = state.get("updates", 0)
        if self.exchange is not None and "exchange" in state:
            self.exchange.load_state_dict(state["exchange"])
            self.traffic = Traffic(**state["traffic"])


# ---- running days ------------------------------------------------------------------

def run_day(env: PeerGridEnv, day: int, choose: Callable[[dict], Actions],
            team: Team | None = None,
            on_round: Callable[[list[RoundRecord], dict, dict], None] | None = None,
            soc: str = "carry") -> tuple[list[RoundRecord], list[dict]]:
    """One day (episode) of ``env`` starting from ``soc`` (see ``PeerGridEnv.reset``);
    with ``team``, feed it every transition."""
    obs, _ = env.reset(options={"day": day, "soc": soc})
    records: list[RoundRecord] = []
    grid_rows: list[dict] = []
    while env.agents:
        actions = choose(obs)
        next_obs, rewards, term, trunc, infos = env.step(actions)
        if team is not None:
            team.observe(obs, actions, rewards, next_obs, all(term.values()),
                         all(trunc.values()), infos[env.possible_agents[0]]["public"])
        day_records = [infos[a]["record"] for a in env.possible_agents]
        records += day_records
        grid_rows.append(env.last_grid)
        if on_round is not None:
            on_round(day_records, env.last_market, env.last_grid)
        obs = next_obs
    return records, grid_rows


def window_metrics(records: list[RoundRecord], grid_rows: list[dict], s: Scenario,
                   detail: bool = False) -> dict[str, float]:
    """Totals over the evaluated rounds (team reward: mean over agents of summed reward;
    violations counted from the grid's node voltages, see ``grid_violations``); with
    ``detail``, per bus (violating rounds) and per agent (penalties charged) too."""
    df = pd.DataFrame([r.as_dict() for r in records])
    grid = pd.DataFrame(grid_rows)
    n_agents = df.agent.nunique()
    per_agent = df.groupby("agent")
    details = {}
    if detail:
        penalty = per_agent.voltage_penalty.sum() + per_agent.line_penalty.sum()
        details = {f"penalty.{a}": float(v) for a, v in penalty.items()}
    return {
        "team_reward": float(df.reward.sum() / n_agents),
        "community_cost": float(df.payment.sum()),
        "voltage_penalty": float(df.voltage_penalty.sum()),
        "line_penalty": float(df.line_penalty.sum()),
        **grid_violations(grid, s.feeder.vm_min_pu, s.feeder.vm_max_pu, per_bus=detail,
                          feeder=s.feeder.name,
                          agent_buses=tuple(sorted({a.bus for a in s.agents}))),
        "p2p_kwh": float(df.p2p_sold_kwh.sum()),
        "curtailed_kwh": float(df.curtailed_kw.sum() * s.scenario.step_min / 60.0),
        **{f"reward.{a}": float(v) for a, v in per_agent.reward.sum().items()},
        **details,
    }


def evaluate_choice(scenario: Scenario, choose: Callable[[dict], Actions],
                    env: PeerGridEnv | None = None, writer: RunWriter | None = None,
                    detail: bool = False) -> dict[str, float]:
    """Run the scenario window with ``choose`` as one continuous stretch (batteries at
    their initial charge once, then carried over midnight); metrics over the window."""
    env = env or PeerGridEnv(scenario)
    records, grid_rows = [], []
    for day in range(env.community.days):
        r, g = run_day(env, day, choose, on_round=writer.write_round if writer else None,
                       soc="initial" if day == 0 else "carry")
        records += r
        grid_rows += g
    return window_metrics(records, grid_rows, scenario, detail)


# ---- training ----------------------------------------------------------------------

class _Csv:
    """Rows of a run's CSV file; ``write`` rewrites it (at every checkpoint, so that the
    file always matches what ``--resume`` continues from)."""

    def __init__(self, path: Path, keep_until_episode: int | None) -> None:
        self.path = path
        rows: list[dict] = []
        if keep_until_episode is not None and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["episode"]) <= keep_until_episode]
        self.rows = rows

    def append(self, row: dict[str, Any], write: bool = True) -> None:
        self.rows.append(row)
        if write:
            self.write()

    def write(self) -> None:
        fields = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(self.rows)


TB_LEARNER_TAGS = {
    "critic_loss": "losses/critic",
    "estimator_loss": "losses/estimator",
    "critic_disagreement": "consensus/critic_disagreement",
    "estimator_disagreement": "consensus/estimator_disagreement",
    "consensus_bytes": "consensus/bytes",
    "consensus_lost": "consensus/messages_lost",
}
"""TensorBoard tag of each learner statistic ``Team.end_episode`` returns (CleanRL's
namespaces). The disagreements are ``agents.learners.consensus.disagreement``: the largest
distance of an agent's critic (estimator) parameters from the agents' mean, after the
update's last consensus step; independent learners report it too, as the contrast."""


def tb_hparams(scenario: Scenario, source: str, algo: str, seed: int, cfg: LearnerConfig,
               episodes: int) -> dict[str, int | float | str | bool]:
    """What a run was trained with, as TensorBoard's HParams tab compares runs: the
    learner's hyper-parameters and what chose the data (scenario, seed, episodes)."""
    a = scenario.algo
    learner = {k: "x".join(map(str, v)) if isinstance(v, list) else v
               for k, v in asdict(cfg).items()}
    return {"algo": algo, "scenario": scenario.scenario.id, "scenario_file": str(source),
            "feeder": scenario.feeder.name, "agents": len(scenario.agents), "seed": seed,
            "episodes": episodes, "rollout_days": a.for_algorithm(algo).rollout_days,
            "lr_anneal": a.lr_anneal, "episode_start": a.episode_start,
            "topology": scenario.comms.topology, **learner}


def tb_outcome(best: Mapping[str, float], test: Mapping[str, Any]) -> dict[str, float]:
    """The run's result metrics for the HParams tab: the selected policy's validation team
    reward and its test-window team reward, cost and violations (those that are finite:
    a run that diverged before its first evaluation has none)."""
    values = {"hparam/validation_team_reward": best.get("team_reward"),
              **{f"hparam/test_{k}": test.get(k)
                 for k in ("team_reward", "community_cost", "voltage_violations")}}
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and np.isfinite(v)}


def validation_window(s: Scenario) -> Scenario:
    return in_window(s, "validation")


def window_problems(s: Scenario) -> list[str]:
    """Training and validation must stay off the test window, or the report leaks."""
    test_end = s.scenario.start + dt.timedelta(days=s.scenario.days)
    return [f"algo.{name} window {start} + {days} days overlaps the test window "
            f"[scenario] {s.scenario.start} + {s.scenario.days} days"
            for name, start, days in (("train", s.algo.train_start, s.algo.train_days),
                                      ("validation", s.algo.validation_start,
                                       s.algo.validation_days))
            if start < test_end and s.scenario.start < start + dt.timedelta(days=days)]


def train(scenario: Scenario, source: str, algo: str, seed: int, out: str | Path,
          episodes: int | None = None, resume: bool = False, progress: bool = True,
          tensorboard: bool = True, attack: Attack | None = None) -> Path:
    """Train ``algo`` with ``seed`` (``attack``: one agent lies at every consensus step,
    the poisoning experiment); every ``eval_every`` episodes evaluate the greedy
    policy on the validation window, keep the best as the run's policy (``best.state``) and
    checkpoint; at the end evaluate that policy once on the test window (``test.csv``)."""
    problems = window_problems(scenario)
    if problems:
        raise ScenarioError("algo", problems)
    torch.set_num_threads(1)
    out = Path(out)
    ckpt_path = out / CHECKPOINT
    episodes = count(episodes, scenario.algo.episodes, "episodes")
    if not resume and out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"--out {out}: not empty; pass --resume to continue that run" if ckpt_path.is_file()
            else f"--out {out}: not empty, and not a training run to resume (no {CHECKPOINT}); "
            "choose another --out")
    if resume and not ckpt_path.is_file():
        raise FileNotFoundError(f"--resume: {out} has no {CHECKPOINT}: not a training run, or "
                                "one stopped before its first checkpoint (train it again)")
    out.mkdir(parents=True, exist_ok=True)

    train_env = PeerGridEnv(training_window(scenario))
    validation = validation_window(scenario)
    val_env = PeerGridEnv(validation)
    team = Team(algo, scenario, seed, attack=attack)
    day_rng = stream(seed, "train-days")
    start_episode, best = 0, {"team_reward": -np.inf, "episode": 0}
    if resume:
        state = read_state(ckpt_path)
        team.load_state_dict(state["team"])
        day_rng.bit_generator.state = state["day_rng"]
        train_env.load_state_dict(state["env"])
        start_episode, best = state["episode"], state["best"]
    else:
        write_manifest(out, source, scenario, runtime="in-process", algo=algo, train_seed=seed,
                       episodes=episodes, attack=asdict(attack) if attack else None)
    metrics = _Csv(out / "metrics.csv", start_episode if resume else None)
    evals = _Csv(out / "eval.csv", start_episode if resume else None)
    tb = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tb"), purge_step=start_episode + 1 if resume else None)

    episode_iter = range(start_episode, episodes)
    if progress:
        from tqdm import tqdm

        episode_iter = tqdm(episode_iter, desc=f"train {algo} seed {seed}", unit="episode",
                            initial=start_episode, total=episodes)
    started = time.perf_counter()
    for episode in episode_iter:
        day = int(day_rng.integers(train_env.community.days))
        # the step-size schedule follows algo.episodes, whatever --episodes stops at,
        # so that a run stopped and resumed is the run that never stopped
        team.set_progress(episode / scenario.algo.episodes)
        records, grid_rows = run_day(train_env, day, lambda o: team.act(o), team,
                                     soc="initial" if episode == 0 else scenario.algo.episode_start)
        try:
            stats = team.end_episode()
        except TrainingDiverged as err:  # kept: the policy selected before it broke
            diverged = {"episode": episode + 1, "reason": str(err)}
            (out / "diverged.json").write_text(json.dumps(diverged))
            metrics.write()
            break
        row = {"episode": episode + 1, "day": day,
               **window_metrics(records, grid_rows, scenario), **stats}
        metrics.append(row, write=False)  # written with every checkpoint
        if tb is not None:
            for k in ("team_reward", "community_cost", "voltage_violations", "p2p_kwh"):
                tb.add_scalar(f"train/{k}", row[k], episode + 1)
            for k, tag in TB_LEARNER_TAGS.items():  # on the episodes an update ran
                if k in stats:
                    tb.add_scalar(tag, stats[k], episode + 1)
        if (episode + 1) % scenario.algo.eval_every == 0 or episode + 1 == episodes:
            ev = {"episode": episode + 1,
                  **evaluate_choice(validation, lambda o: team.act(o, greedy=True), val_env)}
            evals.append(ev)
            if tb is not None:
                for k in ("team_reward", "community_cost", "voltage_violations", "p2p_kwh",
                          "vm_max_pu", "vm_min_pu"):
                    tb.add_scalar(f"validation/{k}", ev[k], episode + 1)
            if ev["team_reward"] > best["team_reward"]:  # model selection: validation only
                best = {"team_reward": ev["team_reward"], "episode": episode + 1}
                policy = {k: v for k, v in team.state_dict().items()
                          if k not in ("exchange", "traffic")}  # a policy, not a run
                write_state(out / BEST, {"team": policy, "algo": algo, "seed": seed,
                                         "episode": episode + 1})
            write_state(ckpt_path, {"team": team.state_dict(),
                                    "day_rng": day_rng.bit_generator.state,
                                    "env": train_env.state_dict(), "episode": episode + 1,
                                    "best": best, "algo": algo, "seed": seed})
            metrics.write()
    if start_episode < episodes:  # the selected policy, once, on the test window
        broke = json.loads((out / "diverged.json").read_text()) if (
            out / "diverged.json").is_file() else None
        row: dict[str, Any] = {"episode": best["episode"],
                               "diverged_episode": broke["episode"] if broke else np.nan}
        if broke is None or (out / BEST).is_file():
            selected, _, _ = load_team(out)
            row |= evaluate_choice(scenario, lambda o: selected.act(o, greedy=True),
                                   detail=True)
        _Csv(out / "test.csv", None).append(row)
    if tb is not None:  # the run's settings beside its outcome (TensorBoard's HParams tab)
        tb.add_hparams(tb_hparams(scenario, source, algo, seed, team.cfg, episodes),
                       tb_outcome(best, row if start_episode < episodes else {}),
                       run_name=".", global_step=episodes)  # ".": this run, no sub-run
        tb.close()
    if team.exchange is not None:  # what consensus put on the wire (exchange.json)
        (out / EXCHANGE).write_text(json.dumps(team.traffic.summary(), indent=1))
    (out / "timing.txt").write_text(
        f"wall_s {time.perf_counter() - started:.2f}\nepisodes {episodes - start_episode}\n")
    return out


def load_team(run_dir: str | Path) -> tuple[Team, Scenario, dict[str, Any]]:
    """The trained team of a run directory, with its scenario and manifest."""
    from peergrid.scenarios.definition.loader import scenario_from_dump

    manifest = read_manifest(run_dir)
    if not (Path(run_dir) / BEST).is_file() and not (Path(run_dir) / CHECKPOINT).is_file():
        kind = {"mesa": "a `peergrid simulate` run", "zeromq": "a `peergrid deploy` run"}.get(
            manifest.get("run", {}).get("runtime"), "an evaluation or other run")
        raise FileNotFoundError(f"{run_dir}: not a training run ({kind}: no {CHECKPOINT} "
                                f"or {BEST} to take a policy from)")
    scenario = scenario_from_dump(manifest["scenario"])
    # the run's policy is the one model selection kept (best on the validation window)
    path = Path(run_dir) / BEST
    state = read_state(path if path.is_file() else Path(run_dir) / CHECKPOINT)
    team = Team(state["algo"], scenario, state["seed"])
    team.load_state_dict(state["team"])
    return team, scenario, manifest


def evaluate_run(run_dir: str | Path, out: str | Path, force: bool = False,
                 days: int | None = None, fmt: str = "jsonl") -> dict[str, float]:
    """Greedy policy of a trained run on its evaluation days (the first ``days`` of
    them if given), logged like `simulate` (``fmt``: "jsonl" or "parquet")."""
    check_format(fmt)
    from peergrid.scenarios.runtime.rundir import run_directory

    team, scenario, manifest = load_team(run_dir)
    if days is not None:
        meta = scenario.scenario.model_copy(update={"days": days})
        scenario = scenario.model_copy(update={"scenario": meta})
    env = PeerGridEnv(scenario)
    with run_directory(out, force) as staging:
        write_manifest(staging, manifest["scenario_source"], scenario, runtime="in-process",
                       policy=f"{team.algo} ({run_dir})", days=env.community.days,
                       start=env.community.start.isoformat(), soc_carried_over=True)
        with RunWriter(staging, buffer_rounds=IN_PROCESS_BUFFER_ROUNDS, fmt=fmt) as writer:
            return evaluate_choice(scenario, lambda o: team.act(o, greedy=True), env, writer)
