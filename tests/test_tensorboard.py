"""What `peergrid train` writes for TensorBoard, read back with TensorBoard's own reader."""

from __future__ import annotations

import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


@pytest.fixture()
def tiny(ieee13_scenario):
    """One-day windows, small networks, an update every second episode."""
    s = ieee13_scenario
    algo = s.algo.model_copy(update={"eval_every": 2, "rollout_days": 2, "epochs": 2,
                                     "hidden_sizes": [8], "batch_size": 16, "overrides": {}})
    return s.model_copy(update={"algo": algo,
                                "scenario": s.scenario.model_copy(update={"days": 1})})


def read_tb(run) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def hparams_of(acc: EventAccumulator) -> dict[str, object]:
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
            for k, v in start.hparams.items()}


@pytest.mark.parametrize("algo", ["consensus", "maddpg"])
def test_train_logs_critic_loss_disagreement_and_hyperparameters(tiny, algo, tmp_path):
    from peergrid.scenarios.commands.train import train

    out = train(tiny, "q.toml", algo, 3, tmp_path / algo, episodes=4, progress=False)
    acc = read_tb(out)
    tags = set(acc.Tags()["scalars"])
    expected = {"train/team_reward", "validation/team_reward", "losses/critic",
                "hparam/validation_team_reward", "hparam/test_team_reward",
                "hparam/test_community_cost"}
    if algo == "consensus":  # the networked learner: critics and estimators averaged
        expected |= {"losses/estimator", "consensus/critic_disagreement",
                     "consensus/estimator_disagreement", "consensus/bytes"}
    assert expected <= tags, expected - tags
    for tag in expected:
        values = [e.value for e in acc.Scalars(tag)]
        assert values and all(math.isfinite(v) for v in values), tag
    if algo == "consensus":  # an update every second episode of four
        assert [e.step for e in acc.Scalars("losses/critic")] == [2, 4]
    # the hyper-parameters sit in the run's own directory, not in a timestamped sub-run
    assert not [p for p in (out / "tb").iterdir() if p.is_dir()]
    hp = hparams_of(acc)
    assert hp["algo"] == algo and hp["seed"] == 3 and hp["episodes"] == 4
    assert hp["scenario"] == tiny.scenario.id and hp["hidden_sizes"] == "8"
    assert hp["epochs"] == 2 and hp["gamma"] == pytest.approx(tiny.algo.gamma)
