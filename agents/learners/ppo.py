"""PPO learners with a local actor per agent and one of three kinds of critic.

Every agent's actor reads its own observation (``agents.spaces``) and is trained by
PPO-clip on advantages; what differs is where the advantage comes from (``mode``):

* ``"own"``: each agent's critic reads its own observation and is fitted to its own
  reward; the advantage is its own. Independent PPO, and with a consensus step on the
  critics the ``consensus-critic`` ablation (``agents.learners.consensus``).
* ``"networked"``: the paper's networked actor-critic (Zhang et al. 2018, Algorithm 2):
  each agent keeps a critic V(x; v_i) of the public state x and a team-reward estimator
  r̄(x, y; λ_i) of the public state and the round's public outcome y
  (``agents.public``), both fitted locally to the agent's **own** reward and averaged
  with its neighbours' by consensus; the actor's advantage is built from the
  **estimated team reward** and the averaged critic:
  δ_t = r̄(x_t, y_t) + γ V(x_t+1) − V(x_t), summed by GAE. Critic and estimator start from
  one shared initialisation (a design-time agreement, like their architecture), so that
  averaging parameters of networks averages functions.
* ``"central"``: MAPPO, the centralised-training reference: one critic on the global
  state (every agent's observation and the public state), fitted to the team reward
  (the mean of all agents' rewards); every actor's advantage is the team's.

The team modes divide rewards by one common scale (so the team reward they estimate is
the community's, in one unit); ``"own"`` divides each agent's by its own size.

``PPOGroup`` holds n agents that act in lockstep with their networks stacked
(``agents.learners.stacked``); every agent has its own parameters, optimiser state and
random generator, so its learning does not depend on who else is in the group.
``PPOLearner`` is the one-agent interface a prosumer process uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from peergrid.agents.learners.config import LearnerConfig, LearnerInit
from peergrid.agents.learners.nets import clip_to_box, initial_action_bias, mlp
from peergrid.agents.learners.stacked import StackedMLP

MODES = ("own", "networked", "central")


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


def _actor_and_critic(obs_dim: int, act_dim: int, cfg: LearnerConfig, seed: int
                      ) -> tuple[torch.nn.Sequential, torch.nn.Sequential]:
    """An agent's actor and own-observation critic, initialised from its own seed only;
    the actor starts at the neutral action with little dependence on the observation
    (as PPO implementations do)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        actor = mlp(obs_dim, cfg.hidden_sizes, act_dim)
        critic = mlp(obs_dim, cfg.hidden_sizes, 1)
    with torch.no_grad():
        actor[-1].weight.mul_(0.01)
        actor[-1].bias.copy_(initial_action_bias(squashed=False))
    return actor, critic


def _value_net(in_dim: int, cfg: LearnerConfig, seed: int) -> torch.nn.Sequential:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return mlp(in_dim, cfg.hidden_sizes, 1)


class PPOGroup:
    def __init__(self, agent_ids: Sequence[str], obs_dim: int, act_dim: int,
                 cfg: LearnerConfig, seeds: Sequence[int],
                 reward_scales: Sequence[float] | None = None, mode: str = "own",
                 public_dim: int = 0, estimator_dim: int = 0, global_dim: int = 0,
                 shared_seed: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode = {mode!r}: one of {', '.join(MODES)}")
        self.ids, self.cfg, self.mode = list(agent_ids), cfg, mode
        n = len(self.ids)
        nets = [_actor_and_critic(obs_dim, act_dim, cfg, s) for s in seeds]
        self.actor = StackedMLP([a for a, _ in nets])
        if mode == "own":
            self.critic = StackedMLP([c for _, c in nets])
        elif mode == "networked":
            self.critic = StackedMLP([_value_net(public_dim, cfg, shared_seed)] * n)
            self.estimator = StackedMLP([_value_net(estimator_dim, cfg, shared_seed + 1)] * n)
        else:  # one centralised critic
            self.critic = StackedMLP([_value_net(global_dim, cfg, shared_seed)])
        self.log_std = torch.nn.Parameter(torch.full((n, act_dim), cfg.init_log_std))
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.scales = np.asarray(reward_scales if reward_scales is not None else [1.0] * n)
        self.opt_actor = torch.optim.Adam([*self.actor.parameters(), self.log_std],
                                          lr=cfg.lr_actor, foreach=True)
        value_params = list(self.critic.parameters())
        if mode == "networked":
            value_params += list(self.estimator.parameters())
        self.opt_critic = torch.optim.Adam(value_params, lr=cfg.lr_critic, foreach=True)
        self._rollout: list[dict[str, np.ndarray]] = []
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
                truncated: bool = False, public: Mapping[str, np.ndarray] | None = None,
                global_state: Mapping[str, np.ndarray] | None = None) -> None:
        """Complete the transitions started by the last ``act``. ``public``: the round's
        public ``state``, ``next_state`` and ``estimator_input`` (networked mode);
        ``global_state``: ``state`` and ``next_state`` (central mode)."""
        if self._pending is None:
            raise RuntimeError(f"{self.ids}: observe() without a preceding act()")
        obs, raw, logp = self._pending
        n = len(self.ids)
        step = {"obs": obs, "raw": raw, "logp": logp,
                "rew": np.asarray(rewards, float) / self.scales,
                "term": np.full(n, float(terminated)), "trunc": np.full(n, float(truncated)),
                "next_obs": np.asarray(next_obs, np.float32)}
        if self.mode == "networked":
            if public is None:
                raise ValueError("networked learners need the round's public state")
            step.update(x=np.asarray(public["state"], np.float32),
                        x_next=np.asarray(public["next_state"], np.float32),
                        e=np.asarray(public["estimator_input"], np.float32))
        elif self.mode == "central":
            if global_state is None:
                raise ValueError("a centralised critic needs the global state")
            step.update(x=np.asarray(global_state["state"], np.float32),
                        x_next=np.asarray(global_state["next_state"], np.float32))
        self._rollout.append(step)
        self._pending = None

    def rollout_size(self) -> int:
        return len(self._rollout)

    def values(self, obs: np.ndarray) -> np.ndarray:
        """Critic values (critics, batch) of inputs (critics, batch, in_dim)."""
        with torch.no_grad():
            return self.critic(torch.as_tensor(obs, dtype=torch.float32))[..., 0].numpy()

    def _common(self, x: np.ndarray, k: int) -> np.ndarray:
        """A common input (T, d) as the input of k stacked networks: (k, T, d)."""
        return np.repeat(x[None], k, axis=0)

    # ---- learning ----------------------------------------------------------------

    def begin_update(self) -> None:
        """Advantages and value targets of the rollout, with the current critic."""
        r = {k: np.stack([s[k] for s in self._rollout]) for k in self._rollout[0]}
        n, cfg = len(self.ids), self.cfg
        obs, raw = (np.swapaxes(r[k], 0, 1) for k in ("obs", "raw"))  # (n, T, ...)
        batch: dict[str, np.ndarray] = {"obs": obs, "raw": raw, "logp": r["logp"].T}
        if self.mode == "own":
            values = self.values(obs).T  # (T, n)
            next_values = self.values(np.swapaxes(r["next_obs"], 0, 1)).T
            adv, ret = gae(r["rew"], values, next_values, r["term"], cfg.gamma,
                           cfg.gae_lambda, r["trunc"])
            batch.update(adv=adv.T, ret=ret.T, critic_in=obs)
        elif self.mode == "networked":
            x, x_next, e = (self._common(r[k], n) for k in ("x", "x_next", "e"))
            values, next_values = self.values(x).T, self.values(x_next).T
            with torch.no_grad():
                team_reward = self.estimator(torch.as_tensor(e))[..., 0].numpy().T  # (T, n)
            adv, _ = gae(team_reward, values, next_values, r["term"], cfg.gamma,
                         cfg.gae_lambda, r["trunc"])
            _, ret = gae(r["rew"], values, next_values, r["term"], cfg.gamma, cfg.gae_lambda,
                         r["trunc"])  # the critic's local step: the agent's own reward
            batch.update(adv=adv.T, ret=ret.T, critic_in=x, est_in=e, est_target=r["rew"].T)
        else:
            x, x_next = self._common(r["x"], 1), self._common(r["x_next"], 1)
            values, next_values = self.values(x).T, self.values(x_next).T  # (T, 1)
            team = r["rew"].mean(axis=1, keepdims=True)
            adv, ret = gae(team, values, next_values, r["term"][:, :1], cfg.gamma,
                           cfg.gae_lambda, r["trunc"][:, :1])
            batch.update(adv=np.repeat(adv.T, n, axis=0), ret=ret.T, critic_in=x)
        adv = batch["adv"]
        batch["adv"] = (adv - adv.mean(axis=1, keepdims=True)) / (adv.std(axis=1, keepdims=True)
                                                                   + 1e-8)
        self._batch = {k: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32)
                       for k, v in batch.items()}

    def update_epoch(self) -> dict[str, float]:
        """One pass over the rollout in shuffled minibatches (each agent its own order)."""
        b = self._batch
        if b is None:
            raise RuntimeError("update_epoch() before begin_update()")
        n_steps = b["obs"].shape[1]
        perm = torch.stack([torch.randperm(n_steps, generator=g) for g in self.gens])
        stats = {"actor_loss": 0.0, "critic_loss": 0.0}
        if self.mode == "networked":
            stats["estimator_loss"] = 0.0

        def take(key: str, i: torch.Tensor) -> torch.Tensor:
            v = b[key]
            idx = i[..., None].expand(-1, -1, v.shape[2]) if v.dim() == 3 else i
            return torch.gather(v, 1, idx)

        for start in range(0, n_steps, self.cfg.minibatch):
            i = perm[:, start:start + self.cfg.minibatch]
            obs, raw, logp_old, adv = (take(k, i) for k in ("obs", "raw", "logp", "adv"))
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
            ic = i[:1] if self.mode == "central" else i  # the one critic: the first order
            losses = [((self.critic(take("critic_in", ic))[..., 0] - take("ret", ic)) ** 2
                       ).mean(1)]
            if self.mode == "networked":
                losses.append(((self.estimator(take("est_in", i))[..., 0]
                                - take("est_target", i)) ** 2).mean(1))
            self.opt_critic.zero_grad()
            sum(loss.sum() for loss in losses).backward()
            self.opt_critic.step()
            stats["critic_loss"] += losses[0].mean().item()
            if self.mode == "networked":
                stats["estimator_loss"] += losses[1].mean().item()
        return stats

    def critic_step(self, obs: torch.Tensor, target: torch.Tensor) -> float:
        """One gradient step of every critic towards ``target`` (critics, batch)."""
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

    def estimator_parameters(self, agent: str) -> np.ndarray:
        return self.estimator.agent_vector(self.ids.index(agent))

    def _shared_nets(self) -> list[StackedMLP]:
        return [self.critic] + ([self.estimator] if self.mode == "networked" else [])

    def _shared_tensors(self) -> list[torch.Tensor]:
        """The stacked tensors consensus averages, in ``agent_vector`` order."""
        return [p for net in self._shared_nets()
                for w, b in zip(net.weights, net.biases, strict=True) for p in (w, b)]

    def value_parameters(self, agent: str) -> np.ndarray:
        """The agent's critic, and in networked mode its team-reward estimator after it."""
        i = self.ids.index(agent)
        return np.concatenate([net.agent_vector(i) for net in self._shared_nets()])

    def set_value_parameters(self, agent: str, vector: np.ndarray) -> None:
        i, pos = self.ids.index(agent), 0
        for net in self._shared_nets():
            size = net.agent_size
            net.set_agent_vector(i, vector[pos:pos + size])
            pos += size
        if pos != vector.size:
            raise ValueError(f"parameter vector has {vector.size} values, the networks {pos}")

    def consensus_parameters(self, agent: str) -> np.ndarray:
        """What an agent sends its neighbours: ``value_parameters``, then the optimiser's
        first and second moment estimates of them (Adam's exp_avg, exp_avg_sq).

        Why the moments: Adam scales each agent's step by its own gradient statistics,
        so averaging the parameters alone settles where the *scaled* steps cancel, a
        median-like fit in which an agent with a large reward (a voltage penalty) is
        outvoted (4 agents fitting rewards 0, 0, 0, 40: 0.05 instead of the mean 10).
        With the moments averaged too, every agent steps with the same statistics and
        the fixed point is the mean's, as with Zhang et al.'s plain stochastic steps."""
        i = self.ids.index(agent)
        moments = []
        for key in ("exp_avg", "exp_avg_sq"):
            for p in self._shared_tensors():
                state = self.opt_critic.state.get(p, {})
                moment = state[key][i] if key in state else torch.zeros_like(p[i])
                moments.append(moment.detach().reshape(-1))
        return np.concatenate([self.value_parameters(agent), torch.cat(moments).numpy()])

    def consensus_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        """Names and per-agent shapes of what ``consensus_parameters`` holds, in order
        (sent as a hash with every vector, so another network's vector is refused)."""
        names = ["critic"] + (["estimator"] if self.mode == "networked" else [])
        layout = [(f"{name}.{kind}{j}", tuple(t.shape[1:]))
                  for name, net in zip(names, self._shared_nets(), strict=True)
                  for j, (w, b) in enumerate(zip(net.weights, net.biases, strict=True))
                  for kind, t in (("w", w), ("b", b))]
        return layout + [("moments", (3,))]

    def set_consensus_parameters(self, agent: str, vector: np.ndarray) -> None:
        i = self.ids.index(agent)
        tensors = self._shared_tensors()
        size = sum(net.agent_size for net in self._shared_nets())
        if vector.size != 3 * size:
            raise ValueError(f"consensus vector has {vector.size} values, expected {3 * size} "
                             f"(parameters and two moments of {size})")
        self.set_value_parameters(agent, vector[:size])
        v, pos = torch.as_tensor(vector[size:], dtype=torch.float32), 0
        with torch.no_grad():
            for key in ("exp_avg", "exp_avg_sq"):
                for p in tensors:
                    n = p[i].numel()
                    state = self.opt_critic.state.get(p, {})
                    if key in state:  # before its first step an agent has no moments
                        state[key][i].copy_(v[pos:pos + n].reshape(p[i].shape))
                        if key == "exp_avg_sq":  # a variance: a neighbour's negative
                            state[key][i].clamp_(min=0.0)  # value would make Adam's step NaN
                    pos += n

    def average_shared(self, order: Sequence[str], weights: np.ndarray,
                       sent: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] | None = None
                       ) -> None:
        """A consensus step of every agent at once (in process): each shared parameter
        tensor, and its optimiser moments, becomes W @ tensor over the agent axis; with
        ``sent`` (a ``shared_snapshot``: what the neighbours sent, stale), each agent's
        own term is its current tensor and the others' terms the snapshot's."""
        if list(order) != self.ids:
            raise ValueError(f"consensus order {list(order)} is not the group's {self.ids}")
        w = torch.as_tensor(weights / weights.sum(axis=1, keepdims=True), dtype=torch.float32)
        own = torch.diagonal(w).clone()
        off = w - torch.diag(own)

        def mix(now: torch.Tensor, then: torch.Tensor | None) -> torch.Tensor:
            if then is None:
                return torch.tensordot(w, now, dims=([1], [0]))
            scale = own.reshape(-1, *([1] * (now.dim() - 1)))
            return scale * now + torch.tensordot(off, then, dims=([1], [0]))

        with torch.no_grad():
            for k, p in enumerate(self._shared_tensors()):
                old_p, old_m = sent[k] if sent is not None else (None, None)
                p.copy_(mix(p, old_p))
                state = self.opt_critic.state.get(p, {})
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:  # a moment the snapshot lacks: the current one
                        then = None if old_m is None else old_m.get(key, state[key])
                        state[key].copy_(mix(state[key], then))

    def shared_snapshot(self) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """Copies of every agent's shared tensors and their moments (a stale exchange)."""
        return [(p.detach().clone(), {k: v.clone() for k, v in
                                      self.opt_critic.state.get(p, {}).items()
                                      if k in ("exp_avg", "exp_avg_sq")})
                for p in self._shared_tensors()]

    def extract(self, agent: str, reward_scale: float, actor_only: bool = False) -> PPOLearner:
        """A one-agent learner with ``agent``'s current networks (fresh optimiser state).
        ``actor_only``: its actor alone, in an independent learner (what a deployed node
        of a centralised-critic run acts with; it cannot keep learning)."""
        if self.mode == "central" and not actor_only:
            raise ValueError("a centralised critic cannot be split into one agent's learner")
        i = self.ids.index(agent)
        dims = {"mode": "independent"} if actor_only else self._dims()
        learner = PPOLearner(agent, self.actor.weights[0].shape[1],
                             self.actor.weights[-1].shape[2], self.cfg, seed=0,
                             reward_scale=reward_scale, **dims)
        g = learner.group
        g.actor.set_agent_vector(0, self.actor.agent_vector(i))
        if not actor_only:
            g.set_value_parameters(agent, self.value_parameters(agent))
        with torch.no_grad():
            g.log_std[0] = self.log_std[i]
        g.gens[0].set_state(self.gens[i].get_state())
        return learner

    def _dims(self) -> dict[str, Any]:
        dims: dict[str, Any] = {"mode": self.mode}
        if self.mode == "networked":
            dims.update(public_dim=self.critic.weights[0].shape[1],
                        estimator_dim=self.estimator.weights[0].shape[1])
        return dims

    # ---- checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        state = {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "log_std": self.log_std.detach().clone(),
            "opt_actor": self.opt_actor.state_dict(), "opt_critic": self.opt_critic.state_dict(),
            "gens": [g.get_state() for g in self.gens], "rollout": list(self._rollout),
            "updates": self.updates,
            # an action taken and not yet rewarded: a process restarted between its bid
            # and the round's booking observes the reward for it
            "pending": self._pending,
        }
        if self.mode == "networked":
            state["estimator"] = self.estimator.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        if self.mode == "networked":
            self.estimator.load_state_dict(state["estimator"])
        with torch.no_grad():
            self.log_std.copy_(state["log_std"])
        self.opt_actor.load_state_dict(state["opt_actor"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        for g, s in zip(self.gens, state["gens"], strict=True):
            g.set_state(s)
        self._rollout = list(state["rollout"])
        self.updates = state["updates"]
        self._pending = state.get("pending")


class PPOLearner:
    """One agent's learner (a group of one): the interface a prosumer process uses."""

    def __init__(self, agent_id: str, obs_dim: int, act_dim: int, cfg: LearnerConfig,
                 seed: int, reward_scale: float = 1.0, mode: str = "own",
                 public_dim: int = 0, estimator_dim: int = 0, shared_seed: int = 0) -> None:
        if mode == "central":
            raise ValueError("a centralised critic needs every agent: it is not a one-agent "
                             "learner")
        self.agent_id = agent_id
        self.init = LearnerInit(agent_id, obs_dim, act_dim, cfg, seed, reward_scale, mode,
                                public_dim, estimator_dim, shared_seed)
        self.group = PPOGroup([agent_id], obs_dim, act_dim, cfg, [seed], [reward_scale],
                              mode=mode, public_dim=public_dim, estimator_dim=estimator_dim,
                              shared_seed=shared_seed)

    @classmethod
    def from_init(cls, init: LearnerInit) -> PPOLearner:
        """A fresh learner as ``init`` describes it (a policy file, a deployed node)."""
        return cls(init.agent_id, init.obs_dim, init.act_dim, init.cfg, init.seed,
                   init.reward_scale, init.mode, init.public_dim, init.estimator_dim,
                   init.shared_seed)

    def act(self, obs: np.ndarray, greedy: bool = False) -> np.ndarray:
        return self.group.act(np.asarray(obs)[None], greedy)[0]

    def observe(self, reward: float, next_obs: np.ndarray, terminated: bool,
                truncated: bool = False, public: Mapping[str, np.ndarray] | None = None
                ) -> None:
        self.group.observe(np.array([reward]), np.asarray(next_obs)[None], terminated,
                           truncated, public)

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

    def consensus_parameters(self) -> np.ndarray:
        return self.group.consensus_parameters(self.agent_id)

    def set_consensus_parameters(self, vector: np.ndarray) -> None:
        self.group.set_consensus_parameters(self.agent_id, vector)

    def consensus_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        return self.group.consensus_layout()

    def actor_parameters(self) -> np.ndarray:
        return self.group.actor.agent_vector(0)

    def state_dict(self) -> dict[str, Any]:
        return self.group.state_dict()

    def acting_state(self) -> dict[str, Any]:
        """The part of ``state_dict`` that acting changes (its random streams and the
        action awaiting its reward): all a checkpoint taken after ``act`` needs on top of
        one taken after the last ``observe``."""
        return {"gens": [g.get_state() for g in self.group.gens],
                "pending": self.group._pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.group.load_state_dict(state)


class SeparateLearners:
    """The ``PPOGroup`` interface over one group per agent (no stacking).

    What n prosumer processes compute, in one process: used to measure what stacking
    saves (bench/training.py) and to check that stacking changes nothing.
    """

    def __init__(self, agent_ids: Sequence[str], obs_dim: int, act_dim: int,
                 cfg: LearnerConfig, seeds: Sequence[int],
                 reward_scales: Sequence[float] | None = None, mode: str = "own",
                 public_dim: int = 0, estimator_dim: int = 0, global_dim: int = 0,
                 shared_seed: int = 0) -> None:
        if mode == "central":
            raise ValueError("a centralised critic cannot be split into separate learners")
        self.ids, self.mode = list(agent_ids), mode
        scales = reward_scales if reward_scales is not None else [1.0] * len(self.ids)
        self.groups = [PPOGroup([a], obs_dim, act_dim, cfg, [s], [r], mode=mode,
                                public_dim=public_dim, estimator_dim=estimator_dim,
                                shared_seed=shared_seed)
                       for a, s, r in zip(self.ids, seeds, scales, strict=True)]

    def act(self, obs: np.ndarray, greedy: bool = False) -> np.ndarray:
        return np.concatenate([g.act(obs[i:i + 1], greedy) for i, g in enumerate(self.groups)])

    def observe(self, rewards: np.ndarray, next_obs: np.ndarray, terminated: bool,
                truncated: bool = False, public: Mapping[str, np.ndarray] | None = None,
                global_state: Mapping[str, np.ndarray] | None = None) -> None:
        for i, g in enumerate(self.groups):
            g.observe(rewards[i:i + 1], next_obs[i:i + 1], terminated, truncated, public)

    def begin_update(self) -> None:
        for g in self.groups:
            g.begin_update()

    def update_epoch(self) -> dict[str, float]:
        stats = [g.update_epoch() for g in self.groups]
        return {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}

    def end_update(self) -> None:
        for g in self.groups:
            g.end_update()

    def _group(self, agent: str) -> PPOGroup:
        return self.groups[self.ids.index(agent)]

    def critic_parameters(self, agent: str) -> np.ndarray:
        return self._group(agent).critic_parameters(agent)

    def estimator_parameters(self, agent: str) -> np.ndarray:
        return self._group(agent).estimator_parameters(agent)

    def consensus_parameters(self, agent: str) -> np.ndarray:
        return self._group(agent).consensus_parameters(agent)

    def set_consensus_parameters(self, agent: str, vector: np.ndarray) -> None:
        self._group(agent).set_consensus_parameters(agent, vector)

    def consensus_layout(self) -> list[tuple[str, tuple[int, ...]]]:
        return self.groups[0].consensus_layout()

    def state_dict(self) -> dict[str, Any]:
        return {"groups": [g.state_dict() for g in self.groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for g, s in zip(self.groups, state["groups"], strict=True):
            g.load_state_dict(s)
