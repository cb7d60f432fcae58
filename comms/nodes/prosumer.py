"""The prosumer process: one household's actor and learner behind a socket.

Per round: on ``round_start`` observe, act and send the bid; on the settlement and the
grid signal, conclude the round and write its record. Defined behaviour under faults:

* no settlement within ``signal_timeout_ms`` after the bid deadline: the agent asks the
  market to ``resend`` it (up to 5 times, ``signal_timeout_ms`` apart); a bid that
  missed the deadline comes back as a grid-only settlement (``grid_only``); if nothing
  arrives, the round is booked as grid-only trading (``no_settlement``);
* no grid signal within ``signal_timeout_ms`` of the settlement: the last known voltage
  is kept (``stale_voltage``) and the penalty is the one it implies at the agent's bus;
* the next ``round_start`` arrives first: the open round is concluded as above;
* a ``round_start`` never arrived (or the process was down): that round is booked with
  the battery idle, trading with the grid only (``no_round_start`` / ``down``), so the
  log holds every round of the window exactly once;
* late or duplicated messages are recognised by their header and never applied twice.

Learners (consensus / independent PPO) keep learning online: at the end of every
``rollout_days`` days they update, and consensus agents exchange critic parameters with
their graph neighbours after every ``consensus_period`` epochs, averaging over the
critics that arrived within ``consensus_timeout_ms`` (weights renormalised).

State (prosumer, learner, round) is checkpointed after every round; a restarted process
resumes from it.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from peergrid.comms.deployment import Deployment
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
    team, _, _ = load_team(dep.policy)
    if team.algo in ("maddpg", "mappo"):  # decentralised actors, centralised training
        if dep.learn:
            raise ValueError(f"--learn continues a decentralised learner, not {team.algo}")
        return (lambda obs: team.act_one(agent_id, obs)), None, None
    learner = team.group.extract(agent_id, reward_scales(scenario, team.algo)[agent_id])
    if dep.learn:
        return (lambda obs: learner.act(obs)), learner, team.algo
    return (lambda obs: learner.act(obs, greedy=True)), None, None


def run_prosumer(dep: Deployment, agent_id: str, incarnation: int = 0) -> None:
    from peergrid.agents.learners.ppo import PPOLearner  # noqa: F401  (preloaded)
    from peergrid.agents.spaces import ACTION_DIM
    from peergrid.agents.topology import consensus_average, metropolis_weights
    from peergrid.market.sdr import Tariff
    from peergrid.market.settlement import Settlement, grid_only_settlement
    from peergrid.grid.penalty import observed_voltage, stale_voltage_penalty
    from peergrid.agents.public import MarketOutcome, estimator_input
    from peergrid.scenarios.community import (Clock, agent_connections, build_prosumer,
                                              feeder_nodes, grid_outcome, penalty_rule,
                                              public_scale)
    from peergrid.scenarios.train import CONSENSUS, communication_graph

    scenario, node = open_node(dep, agent_id)
    d = scenario.deploy
    clock = Clock(scenario, dep.days)
    index = dep.agents.index(agent_id)
    cfg = scenario.agents[index]
    prosumer = build_prosumer(scenario, cfg, clock)
    rule = penalty_rule(scenario)
    nodes = agent_connections(scenario)[agent_id]
    retail, feed_in = scenario.tariff.hourly()
    price_ref = max(retail)
    act, learner, algo = build_agent_policy(dep, scenario, index, prosumer)
    consensus = learner is not None and algo in CONSENSUS
    learning = scenario.algo.for_algorithm(algo) if algo else scenario.algo
    scale = public_scale(scenario)
    all_nodes = feeder_nodes(scenario)
    row: dict[str, float] = {}
    if consensus:
        weights = metropolis_weights(communication_graph(scenario, dep.agents), dep.agents)
        row = {b: weights[index, j] for j, b in enumerate(dep.agents) if weights[index, j] > 0}
    neighbours = [b for b in row if b != agent_id]

    out = Path(dep.out)
    ckpt = out / "checkpoints" / f"{agent_id}.pkl"
    record_path = out / "agents" / f"{agent_id}.jsonl"
    record_path.parent.mkdir(parents=True, exist_ok=True)
    records = open(record_path, "a", encoding="utf-8")  # noqa: SIM115
    state: dict[str, Any] = {"next_k": 0, "episodes": 0, "updates": 0}
    if incarnation > 0 and ckpt.is_file():
        with open(ckpt, "rb") as f:  # our own file, written below: not from the network
            saved = pickle.load(f)
        prosumer.soc, prosumer.signals = saved["soc"], saved["signals"]
        prosumer.public = saved["public"]
        if learner is not None:
            learner.load_state_dict(saved["learner"])
        state = saved["state"]
        node.log.event("resumed", from_round=state["next_k"], incarnation=incarnation)
    node.send("market", "hello", incarnation, -1, {"pid": os.getpid()}, control=True)

    pending: dict[str, Any] | None = None
    updating = False  # inside a learner update (which receives messages itself)
    deferred: list[tuple[Any, dict]] = []
    critics: dict[tuple[int, int, str], np.ndarray] = {}

    def conclude() -> None:
        nonlocal pending
        p, pending = pending, None
        k, episode, rnd = p["k"], p["episode"], p["round"]
        flags = list(p.get("flags", []))
        tariff_retail, tariff_feed_in = retail[int(clock.hours[k])], feed_in[int(clock.hours[k])]
        s = p.get("settlement")
        if s is None:
            flags.append("no_settlement")
            settlement = grid_only_settlement(p["bid"].surplus_kwh,
                                              Tariff(tariff_retail, tariff_feed_in),
                                              prosumer.signals.sdr)
        else:
            if not s["traded"]:
                flags.append("grid_only")
                if not np.isfinite(s["sdr"]):
                    s = {**s, "sdr": prosumer.signals.sdr}
            settlement = Settlement(**{f: s[f] for f in Settlement.__dataclass_fields__})
        g = p.get("signal")
        if g is None:
            flags.append("stale_voltage")
            vm = prosumer.signals.vm_pu
            penalty, line_penalty = stale_voltage_penalty(rule, vm), 0.0
        else:
            vm = observed_voltage(g["vm_pu"], nodes, rule.vm_min_pu, rule.vm_max_pu)
            penalty, line_penalty = g["voltage_penalty"][agent_id], g["line_penalty"][agent_id]
        droop_q = g["volt_var_q_kvar"].get(agent_id, 0.0) if g is not None else 0.0
        # the round's public outcome as this agent heard it (a part it missed: the last)
        heard_market = (MarketOutcome(s["sdr"], s["sell_price_per_kwh"], s["buy_price_per_kwh"],
                                      s["tsp_kwh"], s["tbp_kwh"], s["net_import_kwh"])
                        if s is not None and s["traded"] else None)
        heard_grid = (grid_outcome(g["vm_pu"], all_nodes, g["max_line_loading_pct"],
                                   g["converged"]) if g is not None else None)
        public = prosumer.public.updated(heard_market, heard_grid)
        record = prosumer.conclude(episode, rnd, clock.times[k].isoformat(), settlement,
                                   tariff_retail, tariff_feed_in, vm, penalty, line_penalty,
                                   droop_q, public)
        records.write(_json(record.as_dict()) + "\n")
        records.flush()
        day_end = rnd == clock.steps_per_day - 1
        if learner is not None and p.get("learned", True):
            # the state after the window's last round is real too (data of the next day)
            nxt = _observe(prosumer, clock, k + 1, retail, feed_in, price_ref)
            x_next = _public_state(prosumer, clock, k + 1, retail, feed_in, scale)
            learner.observe(record.reward, nxt, terminated=False, truncated=day_end, public={
                "state": p["public_state"], "next_state": x_next,
                "estimator_input": estimator_input(p["public_state"], public, scale)})
        if day_end:  # the battery keeps its charge over midnight
            state["episodes"] += 1
            if learner is not None and state["episodes"] % learning.rollout_days == 0:
                update(state["updates"])
                state["updates"] += 1
        node.log.event("round", k=k, episode=episode, round=rnd, flags=flags,
                       bid_to_settlement_s=p.get("latency_s"), links=node.link_counters())
        node.send("market", "round_done", episode, rnd, {"k": k})
        state["next_k"] = k + 1
        _checkpoint(ckpt, prosumer, learner, state)
        while deferred:  # round starts that arrived while this agent was updating
            handle(*deferred.pop(0))

    def update(u: int) -> None:
        nonlocal updating
        updating = True
        learner.begin_update()
        for e in range(learning.epochs):
            learner.update_epoch()
            if consensus and (e + 1) % learning.consensus_period == 0:
                mine = learner.consensus_parameters()  # critic (and team-reward estimator)
                for b in neighbours:
                    node.send(b, "critic", u, e, {"update": u, "step": e, "params": mine})
                deadline = time.monotonic() + d.consensus_timeout_ms / 1e3
                while (any((u, e, b) not in critics for b in neighbours)
                       and time.monotonic() < deadline):
                    for h, body in node.receive(deadline - time.monotonic()):
                        handle(h, body)
                values = {agent_id: mine, **{b: critics.pop((u, e, b)) for b in neighbours
                                             if (u, e, b) in critics}}
                learner.set_consensus_parameters(consensus_average(agent_id, values, row))
                node.log.event("consensus", update=u, step=e, used=sorted(values),
                               missing=sorted(set(neighbours) - set(values)))
        learner.end_update()
        updating = False

    def handle(h, body) -> None:
        nonlocal pending
        if h.kind == "critic":
            critics[(body["update"], body["step"], h.sender)] = body["params"]
        elif h.kind == "settlement" and pending and (h.episode, h.round) == (
                pending["episode"], pending["round"]):
            pending["settlement"] = body
            pending["latency_s"] = time.monotonic() - pending["t0"]
            # the market has cleared: the grid's voltages follow within the timeout
            pending["due"] = min(pending["due"], time.monotonic() + d.signal_timeout_ms / 1e3)
        elif h.kind == "grid_signal" and pending and (h.episode, h.round) == (
                pending["episode"], pending["round"]):
            pending["signal"] = body
        elif h.kind == "round_start" and updating:
            deferred.append((h, body))  # the round being concluded is not booked yet
        elif h.kind == "round_start":
            if time.time() - body["sent_at"] > body["deadline_s"]:
                # queued while this process was down, or delayed past the bid deadline:
                # the market has cleared without us; book it when the next round starts
                node.log.event("stale_round_start", k=body["k"])
                return
            start_round(body["k"], body["deadline_s"])
        elif h.kind == "crash":  # the injected crash: no clean-up at all
            node.log.event("killed", k=body["k"])
            os.kill(os.getpid(), signal.SIGKILL)
        elif h.kind == "stop":
            raise _Stop
        else:
            node.log.event("late", peer=h.sender, kind=h.kind, episode=h.episode, round=h.round)

    resuming = incarnation > 0

    def book_skipped(j: int, flag: str) -> None:
        """A round this agent could not act in: battery idle, grid only, flagged."""
        nonlocal pending
        episode, rnd = clock.episode_round(j)
        obs = _observe(prosumer, clock, j, retail, feed_in, price_ref)
        bid = prosumer.act(j, rnd, np.zeros(ACTION_DIM))
        pending = {"k": j, "episode": episode, "round": rnd, "bid": bid, "obs": obs,
                   "t0": time.monotonic(), "flags": [flag], "learned": False}
        conclude()

    def start_round(k: int, deadline_s: float) -> None:
        nonlocal pending, resuming
        if pending is not None:
            conclude()
        if k < state["next_k"]:
            node.log.event("stale_round_start", k=k)
            return
        while state["next_k"] < k:  # rounds whose start never arrived, or while down
            book_skipped(state["next_k"], "down" if resuming else "no_round_start")
        resuming = False
        node.global_round = k
        episode, rnd = clock.episode_round(k)
        obs = _observe(prosumer, clock, k, retail, feed_in, price_ref)
        public_now = _public_state(prosumer, clock, k, retail, feed_in, scale)
        bid = prosumer.act(k, rnd, act(obs))
        node.send("market", "bid", episode, rnd, {
            "bus": bid.bus, "bid_kwh": bid.bid_kwh, "surplus_kwh": bid.surplus_kwh,
            "q_kvar": bid.q_kvar, "volt_var_kva": bid.volt_var_kva,
            "q_max_kvar": bid.q_max_kvar})
        # the market clears at its bid deadline: a settlement cannot be late before then
        now = time.monotonic()
        pending = {"k": k, "episode": episode, "round": rnd, "bid": bid, "obs": obs,
                   "public_state": public_now, "t0": now,
                   "due": now + deadline_s + d.signal_timeout_ms / 1e3}

    try:
        while True:
            wait = 1.0
            if pending is not None:
                wait = pending["due"] - time.monotonic()
                if "settlement" in pending and "signal" in pending:
                    conclude()
                    continue
                if wait <= 0 and "settlement" not in pending and pending.get("attempt", 0) < 5:
                    # the settlement (or the bid) was lost: ask the market for it again
                    pending["attempt"] = pending.get("attempt", 0) + 1
                    pending["due"] = time.monotonic() + d.signal_timeout_ms / 1e3
                    node.send("market", "resend", pending["episode"], pending["round"], {
                        "k": pending["k"], "surplus_kwh": pending["bid"].surplus_kwh,
                        "attempt": pending["attempt"]})
                    continue
                if wait <= 0:
                    conclude()
                    continue
            for h, body in node.receive(wait):
                handle(h, body)
    except _Stop:
        if pending is not None:
            conclude()
        while state["next_k"] < clock.n_rounds:  # the last round starts were lost
            book_skipped(state["next_k"], "no_round_start")
    node.log.event("links", counters=node.link_counters())
    records.close()
    node.close()


class _Stop(Exception):
    pass


def _observe(prosumer, clock, k: int, retail, feed_in, price_ref) -> np.ndarray:
    h = int(clock.hours[k])
    return prosumer.observation(k, float(clock.hour_frac[k]), retail[h], feed_in[h], price_ref)


def _public_state(prosumer, clock, k: int, retail, feed_in, scale) -> np.ndarray:
    h = int(clock.hours[k])
    return prosumer.public_state(float(clock.hour_frac[k]), retail[h], feed_in[h], scale)


def _checkpoint(path: Path, prosumer, learner, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump({"soc": prosumer.soc, "signals": prosumer.signals,
                     "public": prosumer.public, "state": dict(state),
                     "learner": learner.state_dict() if learner is not None else None}, f)
    os.replace(tmp, path)


def _json(row: dict) -> str:
    import json

    return json.dumps(row)
