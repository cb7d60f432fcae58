"""Learners on small cases with known answers, the communication graph, training runs."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from peergrid.agents.learners.config import LearnerConfig
from peergrid.agents.learners.consensus import (consensus_step, cooperative_update,
                                                critic_disagreement, estimator_disagreement)
from peergrid.agents.learners.maddpg import MADDPG
from peergrid.agents.learners.ppo import PPOGroup, PPOLearner, gae
from peergrid.agents.spaces import ACTION_DIM, OBS_DIM
from peergrid.agents.topology import (
    TopologyError,
    build_graph,
    consensus_average,
    metropolis_weights,
)

# the step sizes these tests were written for (explicit: independent of the defaults)
SMALL = LearnerConfig(hidden_sizes=[16, 16], lr_actor=3e-4, lr_critic=1e-3, epochs=8,
                      minibatch=48)


# ---- communication graph ------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["complete", "ring", "line", "star", "random_geometric"]),
       n=st.integers(2, 12), seed=st.integers(0, 1000))
def test_metropolis_weights_are_doubly_stochastic_on_the_graph(kind, n, seed):
    agents = [f"a{i}" for i in range(n)]
    g = build_graph(kind, agents, seed=seed, radius=0.6, allow_disconnected=True)
    c = metropolis_weights(g, agents)
    assert np.allclose(c.sum(axis=0), 1.0) and np.allclose(c.sum(axis=1), 1.0)
    assert (c >= 0).all()
    for i, a in enumerate(agents):
        for j, b in enumerate(agents):
            if i != j and not g.has_edge(a, b):
                assert c[i, j] == 0.0


def test_disconnected_graph_is_rejected_unless_allowed():
    agents = [f"a{i}" for i in range(6)]
    with pytest.raises(TopologyError, match="connected"):
        build_graph("random_geometric", agents, seed=1, radius=0.05)
    g = build_graph("random_geometric", agents, seed=1, radius=0.05, allow_disconnected=True)
    assert not nx.is_connected(g)


def test_feeder_topology_joins_agents_on_the_same_or_adjacent_buses():
    agents = ["x", "y", "z", "w"]
    bus = {"x": "1", "y": "1", "z": "2", "w": "3"}
    g = build_graph("feeder", agents, agent_bus=bus, feeder_edges=[("1", "2"), ("2", "3")])
    assert set(map(frozenset, g.edges)) == {frozenset(e) for e in
                                            [("x", "y"), ("x", "z"), ("y", "z"), ("z", "w")]}


def test_consensus_average_gives_a_missing_neighbours_weight_to_the_agent_itself():
    values = {"a": np.array([0.0]), "b": np.array([3.0])}
    got = consensus_average("a", values, {"a": 0.5, "b": 0.25, "c": 0.25})
    assert got == pytest.approx([0.75])  # (0.5 + 0.25) * 0 + 0.25 * 3: the row sums to 1


def test_a_lost_link_keeps_the_agents_average():
    # c_ii += c_ij keeps the weights doubly stochastic when a link is lost both ways
    values = {"a": np.array([0.0]), "b": np.array([3.0]), "c": np.array([9.0])}
    w = {x: {y: 1 / 3 for y in values} for x in values}
    heard = {"a": ["a", "b"], "b": ["a", "b", "c"], "c": ["b", "c"]}  # a-c lost both ways
    after = [consensus_average(x, {y: values[y] for y in heard[x]}, w[x]) for x in values]
    assert np.mean(after) == pytest.approx(np.mean(list(values.values())))


# ---- consensus on critics ---------------------------------------------------------

def _group(n: int, cfg: LearnerConfig = SMALL) -> PPOGroup:
    return PPOGroup([f"a{i}" for i in range(n)], OBS_DIM, ACTION_DIM, cfg,
                    seeds=[100 + i for i in range(n)])


@pytest.mark.parametrize("kind", ["ring", "line", "star"])
def test_consensus_drives_critics_to_the_average_of_their_initial_parameters(kind):
    group = _group(6)
    order = group.ids
    c = metropolis_weights(build_graph(kind, order), order)
    initial_mean = np.mean([group.critic_parameters(a) for a in order], axis=0)
    assert critic_disagreement(group, order) > 0.5
    for _ in range(400):
        consensus_step(group, order, c)
        mean = np.mean([group.critic_parameters(a) for a in order], axis=0)
        assert np.max(np.abs(mean - initial_mean)) < 1e-5  # doubly stochastic: mean kept
    for a in order:
        assert np.max(np.abs(group.critic_parameters(a) - initial_mean)) < 1e-4


def test_consensus_exchanges_critics_only():
    group = _group(3)
    actors = [group.actor.agent_vector(i) for i in range(3)]
    consensus_step(group, group.ids, metropolis_weights(build_graph("complete", group.ids),
                                                        group.ids))
    for i in range(3):
        assert np.array_equal(actors[i], group.actor.agent_vector(i))


def test_an_agent_learns_the_same_alone_or_stacked_with_others():
    cfg = LearnerConfig(hidden_sizes=[16], epochs=3, minibatch=8, lr_actor=3e-4, lr_critic=1e-3)
    group = _group(3, cfg)
    alone = PPOLearner("a1", OBS_DIM, ACTION_DIM, cfg, seed=101)
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs = rng.standard_normal((3, OBS_DIM)).astype(np.float32)
        nxt = rng.standard_normal((3, OBS_DIM)).astype(np.float32)
        rew = rng.standard_normal(3)
        assert np.array_equal(group.act(obs)[1], alone.act(obs[1]))
        group.observe(rew, nxt, terminated=False)
        alone.observe(rew[1], nxt[1], terminated=False)
    group.begin_update()
    alone.begin_update()
    for _ in range(cfg.epochs):
        group.update_epoch()
        alone.update_epoch()
    group.end_update()
    alone.end_update()
    np.testing.assert_allclose(group.actor.agent_vector(1), alone.actor_parameters(), atol=1e-6)
    np.testing.assert_allclose(group.critic_parameters("a1"), alone.critic_parameters(),
                               atol=1e-6)


# ---- critic and advantage ------------------------------------------------------------

def test_gae_known_answer():
    adv, ret = gae(np.array([1.0, 1.0, 1.0]), np.zeros(3), np.zeros(3),
                   np.array([0.0, 0.0, 1.0]), gamma=0.5, lam=1.0)
    assert ret == pytest.approx([1.75, 1.5, 1.0])
    assert adv == pytest.approx(ret)


def test_a_truncated_day_bootstraps_from_the_next_state_and_ends_the_trace():
    # the day ends after step 1 (truncated, next state worth 4); step 2 starts another day
    rewards, zeros = np.array([1.0, 1.0, 1.0]), np.zeros(3)
    adv, ret = gae(rewards, zeros, np.array([0.0, 4.0, 2.0]), zeros, gamma=0.5, lam=1.0,
                   truncated=np.array([0.0, 1.0, 0.0]))
    assert ret[1] == pytest.approx(1.0 + 0.5 * 4.0)   # bootstrapped, not terminal
    assert ret[0] == pytest.approx(1.0 + 0.5 * 3.0)   # the trace runs within the day
    assert ret[2] == pytest.approx(1.0 + 0.5 * 2.0)   # ...and not across its end
    terminal, _ = gae(rewards, zeros, np.array([0.0, 4.0, 2.0]), np.array([0.0, 1.0, 0.0]),
                      gamma=0.5, lam=1.0)
    assert terminal[1] == pytest.approx(1.0)


def test_one_td_step_moves_the_critic_towards_its_target_by_the_step_size():
    lr = LearnerConfig(hidden_sizes=[8], lr_critic=1e-3, lr_actor=3e-4, epochs=8, minibatch=48)
    learner = PPOLearner("a", OBS_DIM, ACTION_DIM, lr, seed=3)
    s = np.full(OBS_DIM, 0.2, np.float32)
    before = learner.critic_parameters()
    v0 = learner.value(s)
    learner.critic_step(s, v0 + 1.0)  # TD target r + γV(s') one unit above V(s)
    # Adam's first step moves every parameter with a gradient by lr (sign of the gradient)
    moved = np.abs(learner.critic_parameters() - before)
    assert np.allclose(moved[moved > 0], 1e-3, rtol=1e-3)
    assert learner.value(s) > v0


def test_td_on_a_fixed_self_loop_converges_to_the_discounted_value():
    cfg = LearnerConfig(hidden_sizes=[8], lr_critic=1e-2, gamma=0.5, lr_actor=3e-4, epochs=8,
                        minibatch=48)
    learner = PPOLearner("a", OBS_DIM, ACTION_DIM, cfg, seed=4)
    s = np.full(OBS_DIM, 0.1, np.float32)
    for _ in range(1500):  # V(s) ← r + γ V(s), r = 1: fixed point 1 / (1 − γ) = 2
        learner.critic_step(s, 1.0 + cfg.gamma * learner.value(s))
    assert learner.value(s) == pytest.approx(2.0, abs=1e-2)


def test_ppo_learns_the_best_action_of_a_bandit():
    cfg = LearnerConfig(hidden_sizes=[16], lr_actor=3e-3, epochs=8, minibatch=32, lr_critic=1e-3)
    learner = PPOLearner("a", OBS_DIM, ACTION_DIM, cfg, seed=5)
    obs = np.zeros(OBS_DIM, np.float32)
    best = np.array([-0.4, 0.8, 0.3, 0.4])
    for _ in range(60):
        for _ in range(64):
            a = learner.act(obs)
            learner.observe(-float(np.sum((a - best) ** 2)), obs, terminated=True)
        learner.begin_update()
        for _ in range(cfg.epochs):
            learner.update_epoch()
        learner.end_update()
    assert learner.act(obs, greedy=True) == pytest.approx(best, abs=0.1)


# ---- MADDPG --------------------------------------------------------------------------

def test_maddpg_critic_sees_every_agents_observation_and_action():
    team = MADDPG(["a", "b", "c"], OBS_DIM, ACTION_DIM, SMALL, seeds=[1, 2, 3])
    assert team.critic_input_dim == 3 * (OBS_DIM + ACTION_DIM)
    obs = torch.zeros(1, 3, OBS_DIM)
    act = torch.zeros(1, 3, ACTION_DIM, requires_grad=True)
    team.q(0, obs, act).sum().backward()
    assert act.grad[0, 2].abs().sum() > 0  # agent a's critic depends on agent c's action
    changed = act.detach().clone()
    changed[0, 2, 0] = 1.0
    assert team.q(0, obs, changed).item() != team.q(0, obs, act.detach()).item()


def test_maddpg_actor_needs_only_its_own_observation():
    team = MADDPG(["a", "b"], OBS_DIM, ACTION_DIM, SMALL, seeds=[1, 2])
    assert team.actor.weights[0].shape[1] == OBS_DIM
    obs = {"a": np.zeros(OBS_DIM, np.float32), "b": np.ones(OBS_DIM, np.float32)}
    acts = team.act(obs, greedy=True)
    changed = team.act({"a": obs["a"], "b": -obs["b"]}, greedy=True)
    assert np.array_equal(acts["a"], changed["a"])  # b's observation does not move a's actor
    assert all(-1 <= v[0] <= 1 and 0 <= v[1] <= 1 for v in acts.values())


def test_maddpg_critic_regresses_to_a_constant_reward():
    cfg = LearnerConfig(hidden_sizes=[16], gamma=0.0, batch_size=32, update_every=1,
                        lr_critic=1e-2, lr_actor=3e-4)
    team = MADDPG(["a", "b"], OBS_DIM, ACTION_DIM, cfg, seeds=[1, 2], seed=0)
    o = {"a": np.zeros(OBS_DIM, np.float32), "b": np.zeros(OBS_DIM, np.float32)}
    for _ in range(400):
        acts = team.act(o)
        team.observe(o, acts, {"a": 1.0, "b": -2.0}, o, terminated=True)
    obs = torch.zeros(1, 2, OBS_DIM)
    with torch.no_grad():
        q = team.q_all(obs, team.policies(obs))
    assert q[0].item() == pytest.approx(1.0, abs=0.1)
    assert q[1].item() == pytest.approx(-2.0, abs=0.1)


# ---- training runs -------------------------------------------------------------------

@pytest.fixture()
def quick(ieee13_scenario):
    s = ieee13_scenario
    # small shared settings, without the scenario's tuned per-algorithm overrides (MADDPG's
    # minibatch of 1,024 would never fill in four days: no update to resume from)
    algo = s.algo.model_copy(update={"eval_every": 2, "rollout_days": 2, "epochs": 2,
                                     "hidden_sizes": [16], "batch_size": 16,
                                     "overrides": {}})
    meta = s.scenario.model_copy(update={"days": 1})
    return s.model_copy(update={"algo": algo, "scenario": meta})


@pytest.mark.parametrize("algo", ["consensus", "consensus-critic", "mappo", "maddpg"])
def test_training_resumes_exactly(quick, algo, tmp_path):
    from peergrid.scenarios.commands.train import load_team, train

    train(quick, "q.toml", algo, 7, tmp_path / "straight", episodes=4, progress=False,
          tensorboard=False)
    train(quick, "q.toml", algo, 7, tmp_path / "split", episodes=2, progress=False,
          tensorboard=False)
    train(quick, "q.toml", algo, 7, tmp_path / "split", episodes=4, resume=True,
          progress=False, tensorboard=False)
    a = pd.read_csv(tmp_path / "straight" / "metrics.csv")
    b = pd.read_csv(tmp_path / "split" / "metrics.csv")
    pd.testing.assert_frame_equal(a, b)
    for name in ("eval.csv", "test.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "straight" / name),
                                      pd.read_csv(tmp_path / "split" / name))
    ta, _, _ = load_team(tmp_path / "straight")
    tb, _, _ = load_team(tmp_path / "split")
    obs = {a: np.full(OBS_DIM, 0.3, np.float32) for a in ta.ids}
    for x, y in zip(ta.act(obs, greedy=True).values(), tb.act(obs, greedy=True).values(),
                    strict=True):
        assert np.array_equal(x, y)


def test_consensus_training_ends_each_update_in_agreement_ippo_does_not(quick, tmp_path):
    from peergrid.scenarios.commands.train import train

    # on a complete graph Metropolis weights are 1/n: one consensus step is the exact mean
    complete = quick.model_copy(update={"comms": quick.comms.model_copy(
        update={"topology": "complete"})})
    metrics = {}
    for algo in ("consensus", "consensus-critic", "ippo"):
        train(complete, "q.toml", algo, 1, tmp_path / algo, episodes=4, progress=False,
              tensorboard=False)
        metrics[algo] = pd.read_csv(tmp_path / algo / "metrics.csv")
    for algo in ("consensus", "consensus-critic"):
        gap = metrics[algo].critic_disagreement.dropna()
        assert len(gap) == 2 and gap.max() < 1e-5  # two updates of two episodes each
    assert metrics["consensus"].estimator_disagreement.dropna().max() < 1e-5
    assert metrics["ippo"].critic_disagreement.dropna().min() > 0.1


def test_the_model_the_run_keeps_is_chosen_on_the_validation_window_only(quick, tmp_path):
    from peergrid.scenarios.commands.train import train, window_problems

    out = train(quick, "q.toml", "ippo", 2, tmp_path / "r", episodes=6, progress=False,
                tensorboard=False)
    evals, test = pd.read_csv(out / "eval.csv"), pd.read_csv(out / "test.csv")
    assert len(evals) == 3 and len(test) == 1  # validation every 2 episodes, test once
    assert test.episode.iloc[0] == evals.episode[evals.team_reward.idxmax()]
    leaky = quick.model_copy(update={"algo": quick.algo.model_copy(
        update={"validation_start": quick.scenario.start})})
    assert "overlaps the test window" in window_problems(leaky)[0]


# ---- the networked actor-critic on a cooperative problem ------------------------------

N_TOY = 4


def _ring_cost(a: np.ndarray) -> np.ndarray:
    """Each agent's action helps itself a little and costs its ring neighbour more:
    r_i = 0.2 a_i - a_(i-1). Own-optimal: a = +1; team-optimal (the mean reward is
    -0.8/N * sum of a): a = -1."""
    return 0.2 * a - np.roll(a, 1)


def _one_pays_for_all(a: np.ndarray) -> np.ndarray:
    """Rewards of unequal size: every action earns its agent 0.2 a_i, and agent 0 pays
    1.5 for each of the others' (as the agent at a far bus pays the voltage penalty its
    neighbours' export causes). Team-optimal: a_0 = +1 (d mean / d a_0 = 0.05), the
    others -1 (-0.325); own-optimal: every a = +1."""
    r = 0.2 * a
    r[0] -= 1.5 * a[1:].sum()
    return r


def _cooperative_game(mode: str, consensus: bool, seed: int = 0, iters: int = 30,
                      reward=_ring_cost, topology: str = "ring"):
    """A repeated one-shot game; the public outcome is every action (the joint action's
    footprint, as the bus voltages are on a feeder)."""
    ids = [f"a{i}" for i in range(N_TOY)]
    cfg = LearnerConfig(hidden_sizes=[16], lr_actor=3e-3, lr_critic=1e-2, epochs=8,
                        minibatch=32, gamma=0.0)
    group = PPOGroup(ids, OBS_DIM, ACTION_DIM, cfg, [seed * 10 + i for i in range(N_TOY)],
                     mode=mode, public_dim=2, estimator_dim=2 + N_TOY, shared_seed=seed)
    weights = metropolis_weights(build_graph(topology, ids), ids) if consensus else None
    obs, x = np.zeros((N_TOY, OBS_DIM), np.float32), np.zeros(2, np.float32)
    for _ in range(iters):
        for _ in range(64):
            a = group.act(obs)[:, 0].astype(float)
            group.observe(reward(a), obs, terminated=True, public={
                "state": x, "next_state": x,
                "estimator_input": np.concatenate([x, a]).astype(np.float32)})
        cooperative_update(group, cfg.epochs, weights)
    return group, group.act(obs, greedy=True)[:, 0]


def test_an_agent_with_a_large_penalty_is_not_outvoted_by_the_consensus():
    # with Adam, averaging parameters alone settled on a median-like estimate: the three
    # agents with small rewards outvoted the one that pays, and every agent acted
    # selfishly (a = [0, 1, 1, 1]); averaging the optimiser's moments too gives the mean
    torch.set_num_threads(1)
    group, choice = _cooperative_game("networked", consensus=True, reward=_one_pays_for_all,
                                      topology="complete")
    assert np.all(choice[1:] < -0.9)  # the others stop costing agent 0
    assert choice[0] > 0.5  # agent 0's own gain is also the team's (slope 0.05: slower)
    # every agent's estimate of the team reward has the team's slopes' signs
    e = torch.zeros(N_TOY, 1, 2 + N_TOY)
    base = group.estimator(e)[:, 0, 0]
    for j, sign in enumerate([1, -1, -1, -1]):
        ej = e.clone()
        ej[..., 2 + j] = 1.0
        assert torch.all(sign * (group.estimator(ej)[:, 0, 0] - base) > 0)
    _, selfish = _cooperative_game("own", consensus=False, reward=_one_pays_for_all)
    assert np.all(selfish > 0.9)


def test_the_networked_learner_follows_the_team_and_independent_learners_do_not():
    torch.set_num_threads(1)
    networked, team_choice = _cooperative_game("networked", consensus=True)
    assert np.all(team_choice < -0.9)  # the team optimum, from own rewards and consensus
    assert critic_disagreement(networked, networked.ids) < 0.01
    assert estimator_disagreement(networked, networked.ids) < 0.01
    # the same learner without consensus estimates its own reward: selfish
    assert np.all(_cooperative_game("networked", consensus=False)[1] > 0.9)
    assert np.all(_cooperative_game("own", consensus=False)[1] > 0.9)  # independent PPO
    assert np.all(_cooperative_game("own", consensus=True)[1] > 0.9)  # critic averaging only


def test_networked_critics_and_estimators_start_in_agreement():
    cfg = LearnerConfig(hidden_sizes=[8], lr_actor=3e-4, lr_critic=1e-3, epochs=8, minibatch=48)
    group = PPOGroup(["a", "b", "c"], OBS_DIM, ACTION_DIM, cfg, [1, 2, 3], mode="networked", public_dim=5, estimator_dim=9,
                     shared_seed=11)
    for other in ("b", "c"):
        assert np.array_equal(group.critic_parameters("a"), group.critic_parameters(other))
        assert np.array_equal(group.estimator_parameters("a"), group.estimator_parameters(other))
    assert not np.array_equal(group.actor.agent_vector(0), group.actor.agent_vector(1))
