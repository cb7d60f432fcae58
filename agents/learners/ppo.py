"""PPO learners with a local actor and a local critic per agent, no transport.

Used as is for independent PPO (the paper's naive decentralised baseline) and, with a
consensus step on the critics between update epochs, for the paper's consensus
actor-critic (``agents.learners.consensus``). Each agent solves its own MDP: its own
observation, action and reward (divided by ``reward_scale`` so that agents of
different sizes learn at the same pace).

The critic's input is the agent's own observation in the fixed layout of
``agents.spaces`` (powers in per unit of the agent's own size, then the public
signals), identical across agents, so that averaging critic parameters between
neighbours averages functions of the same input.

``PPOGroup`` holds n agents that act in lockstep (all agents of a community in
process, or one agent in its own process) with their networks stacked
(``agents.learners.stacked``); every agent has its own parameters, optimiser state and
random generator, so its learning does not depend on who else is in the group.
``PPOLearner`` is the one-agent interface: ``act`` → ``observe`` per round;
``begin_update`` (GAE advantages with the current critic), ``update_epoch`` × epochs
(PPO-clip actor step and critic step over shuffled minibatches), ``end_update``;
``critic_parameters`` / ``set_critic_parameters`` are what consensus exchanges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from peergrid.agents.learners.config import LearnerConfig
from peergrid.agents.learners.nets import clip_to_box, initial_action_bias, mlp
from peergrid.agents.learners.stacked import StackedMLP


def gae(rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
        terminated: np.ndarray, gamma: float, lam: float,
        truncated: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimates and returns along axis 0 (time).

    A terminated step has no future (no bootstrap); a truncated one (a day ending in a
    continuing task) bootstraps from its next state's value. Both end the GAE trace,
    since the next step in the rollout belongs to another episode.
    """
    ends = terminated if truncated is None else np.maximum(terminated, truncated)
    adv = np.zeros_like(values, dtype=float)
    last = np.zeros_like(values[0], dtype=float)
    for t in range(len(rewards) - 1, -1, -1):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminated[t]) - values[t]
        last = delta + gamma * lam * (1.0 - ends[t]) * last
        adv[t] = last
    return adv, adv + values


def _agent_networks(obs_dim: int, act_dim: int, cfg: LearnerConfig, seed: int):
    """An agent's actor and critic, initialised from its own seed only."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        actor = mlp(obs_dim, cfg.hidden_sizes, act_dim)
        critic = mlp(obs_dim, cfg.hidden_sizes, 1)
    # start at the neutral action (battery idle, half the position bid, no reactive power,
    # no curtailment) with little dependence on the observation, as PPO implementations do
    with torch.no_grad():
        actor[-1].weight.mul_(0.01)
        actor[-1].bias.copy_(initial_action_bias(squashed=False))
    return actor, critic


class PPOGroup:
    def __init__(self, agent_ids: Sequence[str], obs_dim: int, act_dim: int,
                 cfg: LearnerConfig, seeds: Sequence[int],
                 reward_scales: Sequence[float] | None = None) -> None:
        self.ids, self.cfg = list(agent_ids), cfg
        n = len(self.ids)
        nets = [_agent_networks(obs_dim, act_dim, cfg, s) for s in seeds]
        self.actor = StackedMLP([a for a, _ in nets])
        self.critic = StackedMLP([c for _, c in nets])
        self.log_std = torch.nn.Parameter(torch.full((n, act_dim), cfg.init_log_std))
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.scales = np.asarray(reward_scales if reward_scales is not None else [1.0] * n)
        self.opt_actor = torch.optim.Adam([*self.actor.parameters(), self.log_std],
                                          lr=cfg.lr_actor, foreach=True)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr_critic,
                                           foreach=True)
        self._rollout: list[tuple[np.ndarray, ...]] = []
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._batch: dict[str, torch.Tensor] | None = None
        self.updates = 0

    # ---- acting ------------------------------------------------------------------

    def act(self, obs: np.ndarray, greedy: bool = False) -> np.ndarray:
        """Actions (n, act_dim) in the action box for observations (n, obs_dim)."""
        with torch.no_grad():
            mean = self.actor(torch.as_tensor(obs, dtype=torch.float32)[:, None])[:, 0]
            if greedy:
                return clip_to_box(mean.numpy())
            std = self.log_std.exp()
            noise = torch.stack([torch.randn(mean.shape[1], generator=g) for g in self.gens])
            raw = mean + std * noise
            logp = torch.distributions.Normal(mean, std).log_prob(raw).sum(-1)
        self._pending = (np.asarray(obs, np.float32), raw.numpy(), logp.numpy())
        return clip_to_box(raw.numpy())

    def observe(self, rewards: np.ndarray, next_obs: np.ndarray, terminated: bool,
                truncated: bool = False) -> None:
        """Complete the transitions started by the last ``act``."""
        if self._pending is None:
            raise RuntimeError(f"{self.ids}: observe() without a preceding act()")
        obs, raw, logp = self._pending
        n = len(self.ids)
        self._rollout.append((obs, raw, logp, np.asarray(rewards, float) / self.scales,
                              np.full(n, float(terminated)), np.full(n, float(truncated)),
                              np.asarray(next_obs, np.float32)))
        self._pending = None

    def rollout_size(self) -> int:
        return len(self._rollout)

    def values(self, obs: np.ndarray) -> np.ndarray:
        """Critic values (n, batch) of observations (n, batch, obs_dim)."""
        with torch.no_grad():
            return self.critic(torch.as_tensor(obs, dtype=torch.float32))[..., 0].numpy()

    # ---- learning ----------------------------------------------------------------

    def begin_update(self) -> None:
        obs, raw, logp, rew, term, trunc, nxt = (np.stack(x)
                                                 for x in zip(*self._rollout, strict=True))
        # stacked along time first: (T, n, ...) → agent first (n, T, ...)
        obs, raw, nxt = (np.swapaxes(x, 0, 1) for x in (obs, raw, nxt))
        values, next_values = self.values(obs).T, self.values(nxt).T  # (T, n)
        adv, ret = gae(rew, values, next_values, term, self.cfg.gamma, self.cfg.gae_lambda,
                       trunc)
        adv = (adv - adv.mean(axis=0)) / (adv.std(axis=0) + 1e-8)
        self._batch = {
            "obs": torch.as_tensor(obs), "raw": torch.as_tensor(raw),
            "logp": torch.as_tensor(logp.T, dtype=torch.float32),
            "adv": torch.as_tensor(adv.T, dtype=torch.float32),
            "ret": torch.as_tensor(ret.T, dtype=torch.float32),
        }

    def update_epoch(self) -> dict[str, float]:
        """One pass over the rollout in shuffled minibatches (each agent its own order)."""
        b = self._batch
        if b is None:
            raise RuntimeError("update_epoch() before begin_update()")
        n_steps = b["obs"].shape[1]
        perm = torch.stack([torch.randperm(n_steps, generator=g) for g in self.gens])
        stats = {"actor_loss": 0.0, "critic_loss": 0.0}
        for start in range(0, n_steps, self.cfg.minibatch):
            i = perm[:, start:start + self.cfg.minibatch]
            obs = torch.gather(b["obs"], 1, i[..., None].expand(-1, -1, b["obs"].shape[2]))
            raw = torch.gather(b["raw"], 1, i[..., None].expand(-1, -1, b["raw"].shape[2]))
            logp_old, adv, ret = (torch.gather(b[k], 1, i) for k in ("logp", "adv", "ret"))
            mean = self.actor(obs)
            dist = torch.distributions.Normal(mean, self.log_std.exp()[:, None])
            ratio = (dist.log_prob(raw).sum(-1) - logp_old).exp()
            clipped = ratio.clamp(1 - self.cfg.clip, 1 + self.cfg.clip)
            per_agent = -torch.min(ratio * adv, clipped * adv).mean(1)
            per_agent = per_agent - self.cfg.entropy_coef * dist.entropy().sum(-1).mean(1)
            self.opt_actor.zero_grad()
            per_agent.sum().backward()
            self.opt_actor.step()
            stats["actor_loss"] += per_agent.mean().item()
            stats["critic_loss"] += self.critic_step(obs, ret)
        return stats

    def critic_step(self, obs: torch.Tensor, target: torch.Tensor) -> float:
        """One gradient step of every critic towards ``target`` (n, batch), squared error."""
        per_agent = ((self.critic(obs)[..., 0] - target) ** 2).mean(1)
        self.opt_critic.zero_grad()
        per_agent.sum().backward()
        self.opt_critic.step()
        return per_agent.mean().item()

    def end_update(self) -> None:
        self._rollout.clear()
        self._batch = None
        self.updates += 1

    # ---- what consensus exchanges -----------------------------------------------

    def critic_parameters(self, agent: str) -> np.ndarray:
        return self.critic.agent_vector(self.ids.index(agent))

    def set_critic_parameters(self, agent: str, vector: np.ndarray) -> None:
        self.critic.set_agent_vector(self.ids.index(agent), vector)

    def extract(self, agent: str, reward_scale: float) -> PPOLearner:
        """A one-agent learner with ``agent``'s current networks (fresh optimiser state)."""
        i = self.ids.index(agent)
        cfg = self.cfg
        learner = PPOLearner(agent, self.actor.weights[0].shape[1],
                             self.actor.weights[-1].shape[2], cfg, seed=0,
                             reward_scale=reward_scale)
        learner.group.actor.set_agent_vector(0, self.actor.agent_vector(i))
        learner.group.critic.set_agent_vector(0, self.critic.agent_vector(i))
        with torch.no_grad():
            learner.group.log_std[0] = self.log_std[i]
        learner.group.gens[0].set_state(self.gens[i].get_state())
        return learner

    # ---- checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "log_std": self.log_std.detach().clone(),
            "opt_actor": self.opt_actor.state_dict(), "opt_critic": self.opt_critic.state_dict(),
            "gens": [g.get_state() for g in self.gens], "rollout": list(self._rollout),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        with torch.no_grad():
            self.log_std.copy_(state["log_std"])
        self.opt_actor.load_state_dict(state["opt_actor"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        for g, s in zip(self.gens, state["gens"], strict=True):
            g.set_state(s)
        self._rollout = list(state["rollout"])
        self.updates = state["updates"]


class PPOLearner:
    """One agent's learner (a group of one): the interface a prosumer process uses."""

    def __init__(self, agent_id: str, obs_dim: int, act_dim: int, cfg: LearnerConfig,
                 seed: int, reward_scale: float = 1.0) -> None:
        self.agent_id = agent_id
        self.group = PPOGroup([agent_id], obs_dim, act_dim, cfg, [seed], [reward_scale])

    def act(self, obs: np.ndarray, greedy: bool = False) -> np.ndarray:
        return self.group.act(np.asarray(obs)[None], greedy)[0]

    def observe(self, reward: float, next_obs: np.ndarray, terminated: bool,
                truncated: bool = False) -> None:
        self.group.observe(np.array([reward]), np.asarray(next_obs)[None], terminated,
                           truncated)

    def value(self, obs: np.ndarray) -> float:
        return float(self.group.values(np.asarray(obs, np.float32)[None, None])[0, 0])

    def critic_step(self, obs: np.ndarray, target: float) -> float:
        o = torch.as_tensor(obs, dtype=torch.float32)[None, None]
        return self.group.critic_step(o, torch.tensor([[float(target)]]))

    def begin_update(self) -> None:
        self.group.begin_update()

    def update_epoch(self) -> dict[str, float]:
        return self.group.update_epoch()

    def end_update(self) -> None:
        self.group.end_update()

    def critic_parameters(self) -> np.ndarray:
        return self.group.critic_parameters(self.agent_id)

    def set_critic_parameters(self, vector: np.ndarray) -> None:
        self.group.set_critic_parameters(self.agent_id, vector)

    def actor_parameters(self) -> np.ndarray:
        return self.group.actor.agent_vector(0)

    def state_dict(self) -> dict[str, Any]:
        return self.group.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.group.load_state_dict(state)


class SeparateLearners:
    """The ``PPOGroup`` interface over one group per agent (no stacking).

    What n prosumer processes compute, in one process: used to measure what stacking
    saves (bench/training.py) and to check that stacking changes nothing.
    """

    def __init__(self, agent_ids: Sequence[str], obs_dim: int, act_dim: int,
                 cfg: LearnerConfig, seeds: Sequence[int],
                 reward_scales: Sequence[float] | None = None) -> None:
        self.ids = list(agent_ids)
        scales = reward_scales if reward_scales is not None else [1.0] * len(self.ids)
        self.groups = [PPOGroup([a], obs_dim, act_dim, cfg, [s], [r])
                       for a, s, r in zip(self.ids, seeds, scales, strict=True)]

    def act(self, obs: np.ndarray, greedy: bool = False) -> np.ndarray:
        return np.concatenate([g.act(obs[i:i + 1], greedy) for i, g in enumerate(self.groups)])

    def observe(self, rewards: np.ndarray, next_obs: np.ndarray, terminated: bool,
                truncated: bool = False) -> None:
        for i, g in enumerate(self.groups):
            g.observe(rewards[i:i + 1], next_obs[i:i + 1], terminated, truncated)

    def begin_update(self) -> None:
        for g in self.groups:
            g.begin_update()

    def update_epoch(self) -> dict[str, float]:
        stats = [g.update_epoch() for g in self.groups]
        return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}

    def end_update(self) -> None:
        for g in self.groups:
            g.end_update()

    def critic_parameters(self, agent: str) -> np.ndarray:
        return self.groups[self.ids.index(agent)].critic_parameters(agent)

    def set_critic_parameters(self, agent: str, vector: np.ndarray) -> None:
        self.groups[self.ids.index(agent)].set_critic_parameters(agent, vector)

    def state_dict(self) -> dict[str, Any]:
        return {"groups": [g.state_dict() for g in self.groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.groups, state["groups"], strict=True):
            g.load_state_dict(s)
