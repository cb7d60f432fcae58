"""Training speed: env rounds per second with every agent acting and learning.

Run: ``python bench/training.py [--episodes 60] [--threads 1]``. For each algorithm on
the default scenario, trains ``episodes`` one-day episodes in process and reports
rounds per second (one round = all 13 agents act, the market clears, the power flow
runs, all agents learn) and where the time goes: the environment (market, devices,
power flow), acting (forward passes), and updates (backward passes, consensus).
The last line is machine-readable:

    training rounds_per_s consensus=<a> consensus-critic=<b> ippo=<c> mappo=<d> maddpg=<e>

Each algorithm runs with its settings in the scenario (``[algo.overrides.<name>]``:
MADDPG's minibatch of 1,024 costs more per update than PPO's).

``--faults`` measures instead what the consensus exchange's fault model and encodings
cost (agents.exchange): the networked actor-critic with a perfect network, then with
loss 0.3, staleness 4, a time-varying graph (edge_up 0.8), a partition and an outage,
then with each compressed encoding, runs alternated ``--repeats`` times so that load
on the machine hits every variant alike; it prints each variant's rounds/s over the
training without the exchange's bookkeeping, median over repeats:

    faults overhead_pct perfect=<v> faulty=<x> float16=<y> int8=<z> topk=<w>
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from peergrid.scenarios.runtime.env import PeerGridEnv
from peergrid.scenarios.definition.loader import load_scenario
from peergrid.agents.seeding import stream
from peergrid.scenarios.commands.train import ALGORITHMS, Team, training_window


class Timer:
    def __init__(self) -> None:
        self.s = {"env": 0.0, "act": 0.0, "learn": 0.0}

    def add(self, key: str, t0: float) -> float:
        t1 = time.perf_counter()
        self.s[key] += t1 - t0
        return t1


FAULTY = {"loss": 0.3, "staleness": 4, "edge_up": 0.8,
          "partitions": [{"start_step": 20, "end_step": 60}],
          "outages": [{"agent": "a05", "start_step": 0, "end_step": 40}]}
VARIANTS = {"no exchange": None, "perfect": {}, "faulty": {"faults": FAULTY},
            "float16": {"codec": "float16"}, "int8": {"codec": "int8"},
            "topk": {"codec": "topk"}}
"""``no exchange``: the consensus step without the exchange's bookkeeping (what
training was before the fault model: no schedule, no byte counting)."""


def with_comms(scenario, update: dict):
    comms = scenario.comms.model_validate({**scenario.comms.model_dump(), **update})
    return scenario.model_copy(update={"comms": comms})


def bench(algo: str, episodes: int, stacked: bool = True, comms: dict | None = None,
          exchange: bool = True) -> dict[str, float]:
    scenario = with_comms(load_scenario("ieee13"), comms or {})
    env = PeerGridEnv(training_window(scenario))
    team = Team(algo, scenario, seed=0, stacked=stacked)
    if not exchange:
        team.exchange = None
    days = stream(0, "train-days")
    timer = Timer()
    rounds = 0
    start = time.perf_counter()
    for _ in range(episodes):
        obs, _ = env.reset(options={"day": int(days.integers(env.community.days))})
        while env.agents:
            t = time.perf_counter()
            actions = team.act(obs)
            t = timer.add("act", t)
            next_obs, rewards, term, trunc, infos = env.step(actions)
            t = timer.add("env", t)
            team.observe(obs, actions, rewards, next_obs, all(term.values()),
                         all(trunc.values()), infos[env.possible_agents[0]]["public"])
            timer.add("learn", t)
            obs = next_obs
            rounds += 1
        t = time.perf_counter()
        team.end_episode()
        timer.add("learn", t)
    wall = time.perf_counter() - start
    return {"rounds_per_s": rounds / wall, "wall_s": wall,
            **{f"{k}_pct": 100 * v / wall for k, v in timer.s.items()}}


def faults(episodes: int, repeats: int) -> None:
    print(f"consensus on ieee13, {episodes} episodes per run, {repeats} alternated repeats")
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for name, update in VARIANTS.items():
            r = bench("consensus", episodes, comms=update, exchange=update is not None)
            rates[name].append(r["rounds_per_s"])
    print(f"{'variant':<12}{'rounds/s (each repeat)':>32}{'overhead %':>12}")
    overhead = {}
    for name, r in rates.items():
        ratios = [p / x for p, x in zip(rates["no exchange"], r, strict=True)]
        overhead[name] = 100 * (float(np.median(ratios)) - 1)
        print(f"{name:<12}{' '.join(f'{x:7.0f}' for x in r):>32}{overhead[name]:>12.1f}")
    print("faults overhead_pct " + " ".join(f"{n.replace(' ', '_')}={overhead[n]:.1f}"
                                            for n in VARIANTS if n != "no exchange"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--faults", action="store_true",
                        help="the fault model's and the encodings' cost instead")
    parser.add_argument("--repeats", type=int, default=3, help="--faults: alternated runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.faults:
        faults(args.episodes, args.repeats)
        return
    print(f"ieee13, 13 agents, {args.episodes} episodes x 24 rounds, torch threads "
          f"{args.threads}")
    print("stacked: one batched tensor operation for all 13 agents' networks (the default);")
    print("/sep: 13 separate networks, one torch call per agent (as before stacking)")
    print(f"{'algo':<18}{'rounds/s':>10}{'agent-steps/s':>15}{'env %':>8}{'act %':>8}"
          f"{'learn %':>9}")
    results = {}
    runs = [(a, True) for a in ALGORITHMS] + [(a, False) for a in ("consensus", "ippo")]
    for algo, stacked in runs:
        r = bench(algo, args.episodes, stacked)
        label = algo if stacked else f"{algo}/sep"
        if stacked:
            results[algo] = r
        print(f"{label:<18}{r['rounds_per_s']:>10.0f}{13 * r['rounds_per_s']:>15.0f}"
              f"{r['env_pct']:>8.0f}{r['act_pct']:>8.0f}{r['learn_pct']:>9.0f}")
    print("training rounds_per_s " + " ".join(f"{a}={r['rounds_per_s']:.0f}"
                                              for a, r in results.items()))


if __name__ == "__main__":
    main()
