"""What the deployment's forkserver does once, so that no node process pays for it.

Importing this module imports the heavy libraries, then runs one tiny PPO update:
torch initialises much lazily, and the first optimizer alone imports ~830 modules
(torch._dynamo, sympy, ...), about 180 MB that every learning process would otherwise
build for itself after the fork. Finally ``gc.freeze()`` moves everything alive into the
permanent generation, so the children's garbage collections never write to (and so
never copy) the shared pages. Measured with bench/deploy.py (docs/deploy.md).
"""

from __future__ import annotations

import gc

import msgpack  # noqa: F401
import numpy as np
import pandapower  # noqa: F401
import torch
import zmq  # noqa: F401

import peergrid.agents.learners.maddpg  # noqa: F401
import peergrid.agents.policies  # noqa: F401
import peergrid.comms.nodes.grid  # noqa: F401
import peergrid.comms.nodes.market  # noqa: F401
import peergrid.comms.nodes.prosumer  # noqa: F401
import peergrid.comms.spec  # noqa: F401
import peergrid.grid.build  # noqa: F401
from peergrid.agents.learners.config import LearnerConfig
from peergrid.agents.learners.ppo import PPOLearner
from peergrid.agents.spaces import ACTION_DIM, OBS_DIM


def _warm_up_torch() -> None:
    """One rollout and update of a throw-away learner; it leaves no state behind that a
    node uses (every learner seeds its own generator)."""
    with torch.random.fork_rng():
        learner = PPOLearner("warm-up", OBS_DIM, ACTION_DIM, LearnerConfig(hidden_sizes=[4]), 0)
        obs = np.zeros(OBS_DIM, np.float32)
        for t in range(8):
            learner.act(obs)
            learner.observe(0.0, obs, t == 7)
        learner.begin_update()
        learner.update_epoch()
        learner.end_update()


_warm_up_torch()
gc.collect()
gc.freeze()
