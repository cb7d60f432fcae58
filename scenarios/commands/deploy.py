"""`peergrid deploy`: the scenario as separate processes over ZeroMQ, with faults."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from peergrid.agents.exchange import Exchange
from peergrid.agents.learners.config import ONLINE_ALGORITHMS
from peergrid.comms import spec as S
from peergrid.comms.keys import KEY_DIR, new_pairs
from peergrid.comms.launcher import launch
from peergrid.comms.messages import layout_hash
from peergrid.comms.protocol.prosumer import Learning, Market
from peergrid.scenarios.runtime.community import for_policy
from peergrid.scenarios.definition.errors import ScenarioError
from peergrid.scenarios.definition.loader import fault_name_problems, pydantic_problems
from peergrid.scenarios.runtime.logs import write_manifest
from peergrid.scenarios.definition.schema import Scenario
from peergrid.scenarios.runtime.rundir import run_directory


def with_faults(scenario: Scenario, **overrides: Any) -> Scenario:
    """The scenario with ``[deploy]`` fields replaced (CLI options win over the file)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    if not changes:
        return scenario
    data = scenario.deploy.model_dump()
    data.update(changes)
    try:
        deploy = type(scenario.deploy).model_validate(data)
    except ValidationError as err:
        raise ScenarioError("command line", pydantic_problems(err, ("deploy",),
                                                              type(scenario.deploy))) from None
    s = scenario.model_copy(update={"deploy": deploy})
    problems = fault_name_problems(s)
    if problems:
        raise ScenarioError("command line", problems)
    return s


def check_policy(scenario: Scenario, policy: str, learn: bool) -> None:
    """Refuse, before any process starts, a policy the nodes could not load: otherwise
    every prosumer process would fail on its own and the market trade without them."""
    from peergrid.agents.policies import REFERENCE_POLICIES
    from peergrid.scenarios.commands.train import CHECKPOINT
    from peergrid.scenarios.runtime.logs import read_manifest

    if policy in (*REFERENCE_POLICIES, *ONLINE_ALGORITHMS):
        if learn:
            raise ScenarioError("--learn", [f"--policy {policy}: --learn continues a "
                                            "trained run (--policy runs/NAME)"])
        return
    manifest = read_manifest(policy)  # names the directory if it is not a run
    if not (Path(policy) / CHECKPOINT).is_file():
        raise FileNotFoundError(f"{policy}: no {CHECKPOINT} (is this a training run of this "
                                "peergrid version?)")
    algo = manifest.get("run", {}).get("algo")
    trained = [a["id"] for a in manifest["scenario"].get("agents") or []]
    problems = []
    missing = [a.id for a in scenario.agents if a.id not in trained]
    if missing:
        problems.append(f"{len(missing)} agent(s) of this scenario ({', '.join(missing[:5])}"
                        f"{', ...' if len(missing) > 5 else ''}) have no trained policy here; "
                        f"it was trained for {len(trained)} agents "
                        f"({manifest['scenario_source']})")
    if learn and algo not in ONLINE_ALGORITHMS:
        problems.append(f"--learn continues a decentralised learner "
                        f"({', '.join(ONLINE_ALGORITHMS)}), not {algo}")
    if problems:
        raise ScenarioError(str(policy), problems)


def endpoints_for(agents: list[str], host: str, base_port: int) -> dict[str, str]:
    ep = {"market": f"tcp://{host}:{base_port}", "grid": f"tcp://{host}:{base_port + 1}"}
    ep.update({a: f"tcp://{host}:{base_port + 10 + i}" for i, a in enumerate(agents)})
    return ep


def deploy_spec(scenario: Scenario, policy: str, out: str | Path, days: int = 1,
                seed: int = 0, learn: bool = False, insecure: bool = False) -> S.DeploySpec:
    """Everything every node needs, from the scenario (what `peergrid deploy` writes to
    deploy.json); a trained run's policies are cut out per agent into ``out/policies``,
    and (unless ``insecure``) every node's CURVE key pair is made into ``out/keys``."""
    from peergrid.agents.learners.maddpg import GreedyActor
    from peergrid.agents.learners.policyfile import save_policy
    from peergrid.agents.learners.ppo import PPOLearner
    from peergrid.agents.policies import REFERENCE_POLICIES
    from peergrid.agents.seeding import stream
    from peergrid.agents.spaces import ACTION_DIM, OBS_DIM
    from peergrid.agents.topology import metropolis_weights
    from peergrid.comms.nodes.market import max_position_kwh
    from peergrid.scenarios.runtime.community import (Clock, agent_connections, build_prosumer,
                                              feeder_choice, feeder_nodes, penalty_rule,
                                              public_scale)
    from peergrid.scenarios.commands.train import (CONSENSUS, PPO_MODES, communication_graph,
                                          graph_halves, learner_config, learner_dims,
                                          load_team, reward_scales, shared_seed)

    out = Path(out)
    agents = [a.id for a in scenario.agents]
    d = scenario.deploy
    clock = Clock(scenario, days)
    retail, feed_in = scenario.tariff.hourly()
    rule = penalty_rule(scenario)
    connections = agent_connections(scenario)
    window = S.WindowSpec(clock.steps_per_day, [int(h) for h in clock.hours],
                          [float(h) for h in clock.hour_frac],
                          [t.isoformat() for t in clock.times])
    prosumers = {a.id: build_prosumer(scenario, a, clock) for a in scenario.agents}

    team, algo, learned_with = None, policy, scenario
    if policy not in (*REFERENCE_POLICIES, *ONLINE_ALGORITHMS):
        # the run's algorithm and learning settings, not the scenario file's
        team, learned_with, _ = load_team(policy)
        algo = team.algo
    learning_algo = algo if (policy in ONLINE_ALGORITHMS or learn) else None
    row_of: dict[str, dict[str, float]] = {}
    exchange = None
    if learning_algo in CONSENSUS:
        graph = communication_graph(scenario, agents)
        weights = metropolis_weights(graph, agents)
        exchange = scenario.comms.exchange(seed, graph_halves(scenario, graph))
        row_of = {a: {b: float(weights[i, j]) for j, b in enumerate(agents) if weights[i, j] > 0}
                  for i, a in enumerate(agents)}
    scales = reward_scales(scenario, algo) if algo not in REFERENCE_POLICIES else {}
    dims = learner_dims(scenario)
    nodes = {}
    layout_of: dict[str, str] = {}
    for i, a in enumerate(scenario.agents):
        p = prosumers[a.id]
        online = None
        if algo in ONLINE_ALGORITHMS:
            online = S.OnlineLearner(
                algo, learner_config(scenario, algo),
                int(stream(seed, "learner", i).integers(2**31)), scales[a.id], PPO_MODES[algo],
                dims["public_dim"], dims["estimator_dim"], shared_seed(seed))
        if policy in REFERENCE_POLICIES:
            pol = S.Policy("reference", name=policy)
        elif team is None:
            pol = S.Policy("online", name=algo, learner=online)
        else:
            file = out / "policies" / f"{a.id}.state"
            file.parent.mkdir(parents=True, exist_ok=True)
            if algo == "maddpg":
                cut = GreedyActor.cut(team.maddpg, a.id)
            else:
                cut = team.group.extract(a.id, scales[a.id], actor_only=algo == "mappo")
            save_policy(file, cut)  # a state file: the node loads it without running code
            if learn:
                layout_of[a.id] = layout_hash(cut.consensus_layout())
            pol = S.Policy("trained", name=algo, file=str(file), learn=learn, learner=online)
        learning = None
        if learning_algo is not None:
            cfg = learned_with.algo.for_algorithm(learning_algo)
            row = row_of.get(a.id, {})
            # every fresh learner of the algorithm has the same layout: probe one, once
            layout = layout_of.get(a.id) or layout_of.get("fresh", "")
            if row and not layout:
                probe = PPOLearner(a.id, OBS_DIM, ACTION_DIM, learner_config(scenario, algo), 0,
                                   mode=PPO_MODES[algo], public_dim=dims["public_dim"],
                                   estimator_dim=dims["estimator_dim"])
                layout = layout_of["fresh"] = layout_hash(probe.consensus_layout())
            learning = Learning(cfg.rollout_days, cfg.epochs, cfg.consensus_period,
                                tuple(b for b in row if b != a.id), row, layout,
                                scenario.comms.aggregation_rule(), exchange or Exchange())
        nodes[a.id] = S.ProsumerNode(
            p.spec, [float(x) for x in p.load_kw], [float(x) for x in p.pv_kw], p.dt_h,
            p.signals, scenario.feeder.slack_vm_pu,
            Market(list(retail), list(feed_in), window.hour_frac, public_scale(scenario),
                   connections[a.id], feeder_nodes(scenario), rule.vm_min_pu, rule.vm_max_pu),
            pol, learning)
    allowance = 0.0
    if learning_algo is not None:
        allowance = 5.0 + learned_with.algo.for_algorithm(learning_algo).epochs \
            * d.consensus_timeout_ms / 1e3
    return S.DeploySpec(
        scenario_id=scenario.scenario.id, out=str(out), days=days, seed=seed, agents=agents,
        endpoints=endpoints_for(agents, d.host, d.base_port), window=window,
        timing=S.Timing(d.bid_deadline_ms / 1e3, d.signal_timeout_ms / 1e3,
                        d.consensus_timeout_ms / 1e3, d.down_after_ms / 1e3,
                        d.idle_exit_ms / 1e3, d.heartbeat_ms / 1e3, d.restart_budget,
                        d.restart_backoff_ms / 1e3),
        links=S.LinkSpec(scenario.scenario.seed, d.latency_ms, d.jitter_ms, d.drop,
                         [(x.a, x.b, x.start_round, x.end_round) for x in d.partitions]),
        kills=[S.Kill(k.agent, k.at_round, k.restart_round) for k in d.kills],
        market=S.MarketNode(list(retail), list(feed_in),
                            {a: max_position_kwh(p) for a, p in prosumers.items()}, allowance),
        grid=S.GridNode(feeder_choice(scenario), {a.id: a.bus for a in scenario.agents},
                        connections, clock.dt_h, rule),
        prosumers=nodes,
        security=None if insecure else S.Security(
            new_pairs(out / KEY_DIR, ["market", "grid", *agents]), KEY_DIR))


ENGINES = ("local", "ray")


def deploy(scenario: Scenario, source: str, policy: str, out: str | Path, days: int = 1,
           seed: int = 0, learn: bool = False, force: bool = False,
           insecure: bool = False, engine: str = "local",
           address: str | None = None, ray_files: str = "auto") -> tuple[Path, dict]:
    """``engine="local"``: one OS process per node on this machine (comms.launcher);
    ``"ray"``: one Ray actor per node, on a local Ray instance or on the cluster at
    ``address`` (comms.raylaunch: endpoints and keys made by the actors themselves;
    ``ray_files``: where they write, ``comms.raylaunch.FILES``)."""
    if engine not in ENGINES:
        raise ValueError(f"engine = {engine!r}: one of {', '.join(ENGINES)}")
    if engine == "ray":
        from peergrid.comms.raycluster import require_ray

        require_ray()  # one line saying how to install it, before anything is written
        if address is not None and address.startswith("ray://"):
            raise ValueError(f"--address {address}: a deployment's driver runs on a node of "
                             "the cluster (the nodes reach it, and it reads the run "
                             "directory): use HEAD:6379 there, not Ray Client")
    elif address is not None:
        raise ValueError("--address is for --engine ray")
    check_policy(scenario, str(policy), learn)
    scenario = for_policy(scenario, str(policy))
    with run_directory(out, force) as staging:
        # on Ray each actor makes its own key pair where it runs: none is made here
        spec = deploy_spec(scenario, str(policy), staging, days, seed, learn,
                           insecure or engine == "ray")
        write_manifest(staging, source, scenario, runtime="zeromq", policy=str(policy),
                       days=days, start=scenario.scenario.start.isoformat(), train_seed=seed,
                       learn=learn, soc_carried_over=True,
                       links="plain TCP (--insecure)" if insecure else "CURVE",
                       **({"engine": "ray"} if engine == "ray" else {}))
        t0 = time.perf_counter()
        if engine == "ray":
            from peergrid.comms.raylaunch import launch_on_ray

            exits = launch_on_ray(spec, address, secure=not insecure, files=ray_files)
            staging = Path(staging).absolute()  # what the actors were given
        else:
            exits = launch(spec)
        (staging / "timing.txt").write_text(f"wall_s {time.perf_counter() - t0:.2f}\n")
        _relocate(staging / "deploy.json", staging, Path(out).absolute()
                  if engine == "ray" else Path(out))
    return Path(out), exits


def _relocate(config: Path, old: Path, new: Path) -> None:
    """deploy.json names the run directory its nodes write to (and the policy files in
    it); a run written in a staging directory and then swapped in is rewritten to name
    where it now is, so ``peergrid node --config`` on it finds its files."""
    def moved(value: Any) -> Any:
        if isinstance(value, str) and (value == str(old) or value.startswith(f"{old}/")):
            return str(new) + value[len(str(old)):]
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        return value

    if old != new and config.is_file():
        config.write_text(json.dumps(moved(json.loads(config.read_text())), indent=1))
