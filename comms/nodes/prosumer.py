"""The prosumer process: comms.protocol.prosumer behind a socket."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from peergrid.comms.deployment import Deployment
from peergrid.comms.messages import SettlementMessage, layout_hash
from peergrid.comms.nodes.loop import Checkpoints, apply, serve
from peergrid.comms.protocol.market import Window
from peergrid.comms.protocol.prosumer import Learning, Market, ProsumerProtocol, ProsumerTiming
from peergrid.comms.runlog import RunWriter
from peergrid.comms.runtime import open_node


def build_agent_policy(dep: Deployment, scenario, index: int, prosumer):
    """(act(obs) → action, learner or None, the learner's algorithm or None) for agent
    ``index``."""
    from peergrid.agents.policies import REFERENCE_POLICIES, make_policy

    if dep.policy in REFERENCE_POLICIES:
        policy = make_policy(dep.policy, prosumer.spec, prosumer.dt_h)
        return (lambda obs: policy(obs)), None, None
    from peergrid.agents.learners.ppo import PPOLearner
    from peergrid.agents.spaces import ACTION_DIM, OBS_DIM
    from peergrid.scenarios.seeding import stream
    from peergrid.scenarios.train import (ONLINE_ALGORITHMS, PPO_MODES, learner_config,
                                          learner_dims, load_team, reward_scales, shared_seed)

    agent_id = prosumer.spec.agent_id
    if dep.policy in ONLINE_ALGORITHMS:
        algo = dep.policy
        seed = int(stream(dep.seed, "learner", index).integers(2**31))
        dims = learner_dims(scenario)
        learner = PPOLearner(agent_id, OBS_DIM, ACTION_DIM, learner_config(scenario, algo), seed,
                             reward_scales(scenario, algo)[agent_id], mode=PPO_MODES[algo],
                             public_dim=dims["public_dim"], estimator_dim=dims["estimator_dim"],
                             shared_seed=shared_seed(dep.seed))
        return (lambda obs: learner.act(obs)), learner, algo
    team, _, _ = load_team(dep.policy)  # the run's algorithm, not the scenario file's
    if team.algo in ("maddpg", "mappo"):  # decentralised actors, centralised training
        if dep.learn:
            raise ValueError(f"--learn continues a decentralised learner, not {team.algo}")
        return (lambda obs: team.act_one(agent_id, obs)), None, None
    learner = team.group.extract(agent_id, reward_scales(scenario, team.algo)[agent_id])
    if dep.learn:
        return (lambda obs: learner.act(obs)), learner, team.algo
    return (lambda obs: learner.act(obs, greedy=True)), None, None


def run_prosumer(dep: Deployment, agent_id: str, incarnation: int = 0,
                 finish: bool = False) -> None:
    """Serve one agent until the market says stop (or falls silent). ``finish``: the run
    is over and this agent was down at its end: book what remains from its checkpoint
    and the market's ledger file, then exit."""
    from peergrid.agents.topology import metropolis_weights
    from peergrid.scenarios.community import (Clock, agent_connections, build_prosumer,
                                              feeder_nodes, penalty_rule, public_scale)
    from peergrid.scenarios.train import CONSENSUS, communication_graph

    scenario, node = open_node(dep, agent_id)
    d = scenario.deploy
    clock = Clock(scenario, dep.days)
    window = Window(clock.steps_per_day, [int(h) for h in clock.hours],
                    [t.isoformat() for t in clock.times])
    index = dep.agents.index(agent_id)
    prosumer = build_prosumer(scenario, scenario.agents[index], clock)
    retail, feed_in = scenario.tariff.hourly()
    rule = penalty_rule(scenario)
    market = Market(retail, feed_in, [float(x) for x in clock.hour_frac],
                    public_scale(scenario), agent_connections(scenario)[agent_id],
                    feeder_nodes(scenario), rule.vm_min_pu, rule.vm_max_pu)
    act, learner, algo = build_agent_policy(dep, scenario, index, prosumer)
    learning = None
    if learner is not None:
        cfg = scenario.algo.for_algorithm(algo)
        neighbours, row, layout = (), {}, ""
        if algo in CONSENSUS:
            weights = metropolis_weights(communication_graph(scenario, dep.agents), dep.agents)
            row = {b: float(weights[index, j]) for j, b in enumerate(dep.agents)
                   if weights[index, j] > 0}
            neighbours = tuple(b for b in row if b != agent_id)
            layout = layout_hash(learner.consensus_layout())
        learning = Learning(cfg.rollout_days, cfg.epochs, cfg.consensus_period, neighbours,
                            row, layout)
    timing = ProsumerTiming(d.signal_timeout_ms / 1e3, d.consensus_timeout_ms / 1e3,
                            d.down_after_ms / 1e3, d.idle_exit_ms / 1e3)
    writer = RunWriter(Path(dep.out))
    record_file = f"agents/{agent_id}.jsonl"
    checkpoints = Checkpoints(Path(dep.out) / "checkpoints" / f"{agent_id}.pkl", writer,
                              [record_file])
    state = checkpoints.load() if incarnation > 0 or finish else None
    proto = ProsumerProtocol(agent_id, prosumer, act, window, market, timing, learner, learning,
                             incarnation=incarnation, state=state, finish=finish,
                             pid=os.getpid())
    if finish:
        apply(proto.start(time.monotonic()), node, writer, checkpoints)
        open_k = proto.pending["k"] if proto.pending is not None else None
        owed = _from_ledger(Path(dep.out), agent_id, open_k) if open_k is not None else None
        apply(proto.finish_from_ledger(owed, time.monotonic()), node, writer, checkpoints)
        writer.close()
        node.close()
        return
    serve(node, proto, writer, checkpoints)


def _from_ledger(out: Path, agent_id: str, k: int) -> SettlementMessage | None:
    """The settlement the market left in its ledger file for an agent down at the end."""
    path = out / "ledger.json"
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get(agent_id, {}).get(str(k))
    return SettlementMessage(**entry) if entry is not None else None
