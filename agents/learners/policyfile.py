"""A trained agent's policy as a file a node loads without running code.

``peergrid deploy --policy runs/NAME`` cuts each agent's policy out of a trained team
into ``policies/<id>.state``; the agent's node loads it from there. The file is a state
file (``agents.statefile``): a PPO learner as what it was built with and its state dict
(tensors as arrays), a MADDPG actor as its layers.
"""

from __future__ import annotations

from pathlib import Path

from peergrid.agents import statefile
from peergrid.agents.learners.maddpg import GreedyActor
from peergrid.agents.learners.portable import from_portable, to_portable
from peergrid.agents.learners.config import LearnerInit
from peergrid.agents.learners.ppo import PPOLearner

Policy = PPOLearner | GreedyActor


def save_policy(path: str | Path, policy: Policy) -> None:
    if isinstance(policy, PPOLearner):
        state = {"kind": "ppo", "init": policy.init,
                 "state": to_portable(policy.state_dict())}
    elif isinstance(policy, GreedyActor):
        state = {"kind": "greedy-actor", "weights": policy.weights, "biases": policy.biases}
    else:
        raise TypeError(f"no policy file for a {type(policy).__name__}")
    statefile.save(path, state)


def load_policy(path: str | Path) -> Policy:
    state = statefile.load(path)
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "ppo" and isinstance(state.get("init"), LearnerInit):
        learner = PPOLearner.from_init(state["init"])
        learner.load_state_dict(from_portable(state["state"]))
        return learner
    if kind == "greedy-actor":
        return GreedyActor(state["weights"], state["biases"])
    raise statefile.StateFileError(f"{path}: not a policy file (kind {kind!r})")
