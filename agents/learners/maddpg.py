"""MADDPG (Lowe et al., 2017): centralised critics, decentralised deterministic actors.

During training each agent's critic Q_i sees every agent's observation and action and
is fitted to its own (scaled) reward; each actor μ_i(o_i) ascends Q_i with the other
agents' actions taken from the replay buffer. At execution an actor needs only its own
observation. Target networks move by Polyak averaging (``tau``); exploration is
Gaussian noise on the actor output, decaying linearly from ``noise_start`` to
``noise_end`` over ``noise_decay_steps`` rounds.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from peergrid.agents.learners.config import LearnerConfig
from peergrid.agents.learners.nets import (ACTION_HIGH, ACTION_LOW, initial_action_bias, mlp,
                                           squash_to_box)
from peergrid.agents.learners.stacked import StackedMLP


class ReplayBuffer:
    """Joint transitions of all agents, in fixed-size arrays (oldest overwritten)."""

    def __init__(self, size: int, n_agents: int, obs_dim: int, act_dim: int) -> None:
        self.obs = np.zeros((size, n_agents, obs_dim), np.float32)
        self.act = np.zeros((size, n_agents, act_dim), np.float32)
        self.rew = np.zeros((size, n_agents), np.float32)
        self.next_obs = np.zeros((size, n_agents, obs_dim), np.float32)
        self.done = np.zeros(size, np.float32)
        self.size, self.count, self.pos = size, 0, 0

    def add(self, obs, act, rew, next_obs, done) -> None:
        i = self.pos
        self.obs[i], self.act[i], self.rew[i], self.next_obs[i], self.done[i] = (
            obs, act, rew, next_obs, done)
        self.pos = (self.pos + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, torch.Tensor]:
        idx = rng.integers(self.count, size=batch)
        return {k: torch.as_tensor(getattr(self, k)[idx])
                for k in ("obs", "act", "rew", "next_obs", "done")}


def _agent_networks(n_agents: int, obs_dim: int, act_dim: int, cfg: LearnerConfig, seed: int):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        actor = mlp(obs_dim, cfg.hidden_sizes, act_dim)
        critic = mlp(n_agents * (obs_dim + act_dim), cfg.hidden_sizes, 1)
    with torch.no_grad():  # start at the neutral action, as the PPO learners do
        actor[-1].weight.mul_(0.1)
        actor[-1].bias.copy_(initial_action_bias(squashed=True))
    return actor, critic


class MADDPG:
    """All agents' actors and centralised critics, stacked (``agents.learners.stacked``)."""

    def __init__(self, agent_ids: Sequence[str], obs_dim: int, act_dim: int,
                 cfg: LearnerConfig, seeds: Sequence[int],
                 reward_scales: Mapping[str, float] | None = None, seed: int = 0) -> None:
        self.ids, self.cfg = list(agent_ids), cfg
        n = len(self.ids)
        nets = [_agent_networks(n, obs_dim, act_dim, cfg, s) for s in seeds]
        self.actor = StackedMLP([a for a, _ in nets])
        self.critic = StackedMLP([c for _, c in nets])
        self.actor_target = copy.deepcopy(self.actor)
        self.critic_target = copy.deepcopy(self.critic)
        self.opt_actor = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor, foreach=True)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr_critic,
                                           foreach=True)
        self.critic_input_dim = n * (obs_dim + act_dim)
        self.scales = np.array([(reward_scales or {}).get(a, 1.0) for a in self.ids], np.float32)
        self.buffer = ReplayBuffer(cfg.buffer_size, n, obs_dim, act_dim)
        self.rng = np.random.default_rng(seed)
        self.steps = 0
        self.updates = 0

    # ---- networks ----------------------------------------------------------------

    def policies(self, obs: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Every agent's action for joint observations (B, N, obs) → (B, N, act)."""
        net = self.actor_target if target else self.actor
        return squash_to_box(net(obs.transpose(0, 1))).transpose(0, 1)

    def q_all(self, obs: torch.Tensor, act: torch.Tensor, target: bool = False) -> torch.Tensor:
        """Every agent's Q of joint observations and actions: (B, N, ·) → (N, B)."""
        x = torch.cat([obs.flatten(1), act.flatten(1)], dim=1)
        net = self.critic_target if target else self.critic
        return net(x.expand(len(self.ids), *x.shape))[..., 0]

    def q(self, i: int, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Agent i's centralised critic Q_i(o_1..o_N, a_1..a_N), shape (B,)."""
        return self.q_all(obs, act)[i]

    # ---- acting ------------------------------------------------------------------

    def noise_std(self) -> float:
        frac = min(self.steps / max(self.cfg.noise_decay_steps, 1), 1.0)
        return self.cfg.noise_start + frac * (self.cfg.noise_end - self.cfg.noise_start)

    def act(self, obs: Mapping[str, np.ndarray], greedy: bool = False) -> dict[str, np.ndarray]:
        o = torch.as_tensor(np.stack([obs[a] for a in self.ids]), dtype=torch.float32)
        with torch.no_grad():
            mu = self.policies(o[None])[0].numpy()
        if not greedy:
            mu = mu + self.noise_std() * self.rng.standard_normal(mu.shape)
        mu = np.clip(mu, ACTION_LOW.numpy(), ACTION_HIGH.numpy()).astype(np.float32)
        return dict(zip(self.ids, mu, strict=True))

    def observe(self, obs, actions, rewards, next_obs, terminated: bool,
                truncated: bool = False) -> dict[str, float] | None:
        """Store one joint transition; update every ``update_every`` rounds."""
        stack = lambda d: np.stack([d[a] for a in self.ids])  # noqa: E731
        self.buffer.add(stack(obs), stack(actions),
                        np.array([rewards[a] for a in self.ids]) / self.scales,
                        stack(next_obs), float(terminated))  # truncation bootstraps
        self.steps += 1
        if self.steps % self.cfg.update_every or self.buffer.count < self.cfg.batch_size:
            return None
        return self.update()

    # ---- learning ----------------------------------------------------------------

    def update(self) -> dict[str, float]:
        b = self.buffer.sample(self.rng, self.cfg.batch_size)
        n = len(self.ids)
        with torch.no_grad():
            next_act = self.policies(b["next_obs"], target=True)
            y = b["rew"].T + self.cfg.gamma * (1 - b["done"]) * self.q_all(
                b["next_obs"], next_act, target=True)
        critic_loss = ((self.q_all(b["obs"], b["act"]) - y) ** 2).mean(1)
        self.opt_critic.zero_grad()
        critic_loss.sum().backward()
        self.opt_critic.step()

        # agent i's actor ascends Q_i with its own action replaced, the others' from replay
        mu = squash_to_box(self.actor(b["obs"].transpose(0, 1)))  # (N, B, act)
        idx = torch.arange(n)
        act = b["act"].expand(n, *b["act"].shape).clone()  # (N, B, N, act)
        act[idx, :, idx] = mu
        x = torch.cat([b["obs"].flatten(1).expand(n, -1, -1), act.flatten(2)], dim=2)
        actor_loss = -self.critic(x)[..., 0].mean(1)
        self.opt_actor.zero_grad()
        actor_loss.sum().backward()
        self.opt_actor.step()

        tau = self.cfg.tau
        with torch.no_grad():
            for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                for p, tp in zip(net.parameters(), tgt.parameters(), strict=True):
                    tp.mul_(1 - tau).add_(tau * p)
        self.updates += 1
        return {"critic_loss": critic_loss.mean().item(), "actor_loss": actor_loss.mean().item()}

    # ---- checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k).state_dict() for k in (
                "actor", "critic", "actor_target", "critic_target", "opt_actor", "opt_critic")},
            "buffer": {k: getattr(self.buffer, k).copy() for k in (
                "obs", "act", "rew", "next_obs", "done")} | {
                "count": self.buffer.count, "pos": self.buffer.pos},
            "rng": self.rng.bit_generator.state, "steps": self.steps, "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("actor", "critic", "actor_target", "critic_target", "opt_actor", "opt_critic"):
            getattr(self, k).load_state_dict(state[k])
        for k, v in state["buffer"].items():
            setattr(self.buffer, k, v.copy() if isinstance(v, np.ndarray) else v)
        self.rng.bit_generator.state = state["rng"]
        self.steps, self.updates = state["steps"], state["updates"]


class GreedyActor:
    """One agent's deterministic policy cut out of a trained MADDPG team: what a deployed
    node acts with (no noise, no learning). Its layers are plain arrays, so it goes into
    a state file (``agents.learners.policyfile``) as it is."""

    def __init__(self, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> None:
        self.weights = [np.asarray(w, dtype=np.float32) for w in weights]
        self.biases = [np.asarray(b, dtype=np.float32) for b in biases]
        self._layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @classmethod
    def cut(cls, team: MADDPG, agent: str) -> GreedyActor:
        i = team.ids.index(agent)
        return cls([w[i:i + 1].detach().numpy().copy() for w in team.actor.weights],
                   [b[i:i + 1].detach().numpy().copy() for b in team.actor.biases])

    def act(self, obs: np.ndarray, greedy: bool = True) -> np.ndarray:
        if self._layers is None:
            self._layers = [(torch.from_numpy(w), torch.from_numpy(b))
                            for w, b in zip(self.weights, self.biases, strict=True)]
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))[None, None]
        last = len(self._layers) - 1
        with torch.no_grad():  # StackedMLP.forward for one agent
            for k, (w, b) in enumerate(self._layers):
                x = torch.baddbmm(b, x, w)
                if k < last:
                    x = torch.tanh(x)
            mu = squash_to_box(x)[0, 0].numpy()
        return np.clip(mu, ACTION_LOW.numpy(), ACTION_HIGH.numpy()).astype(np.float32)