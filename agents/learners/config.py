"""Learner hyper-parameters, independent of the scenario file format.

The defaults here are the only ones: the scenario schema's ``[algo]`` section takes its
defaults from this class (scenarios.schema), so the two cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LearnerConfig:
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    gamma: float = 0.99
    lr_actor: float = 1e-3
    lr_critic: float = 3e-3
    # PPO (consensus and independent PPO)
    gae_lambda: float = 0.95
    clip: float = 0.2
    epochs: int = 10
    minibatch: int = 32
    entropy_coef: float = 0.0
    init_log_std: float = -0.7
    # consensus: one averaging step after every `consensus_period` critic epochs
    consensus_period: int = 1
    # MADDPG
    buffer_size: int = 50_000
    batch_size: int = 128
    tau: float = 0.01
    update_every: int = 4
    noise_start: float = 0.3
    noise_end: float = 0.05
    noise_decay_steps: int = 20_000


ONLINE_ALGORITHMS = ("consensus", "consensus-critic", "ippo")
"""The decentralised learners a deployment can run online (one learner per process)."""


@dataclass(frozen=True)
class LearnerInit:
    """What ``PPOLearner`` was built with: a policy file rebuilds it from this."""

    agent_id: str
    obs_dim: int
    act_dim: int
    cfg: LearnerConfig
    seed: int
    reward_scale: float
    mode: str
    public_dim: int
    estimator_dim: int
    shared_seed: int
