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
"""

from __future__ import annotations

import argparse
import time

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


def bench(algo: str, episodes: int, stacked: bool = True) -> dict[str, float]:
    scenario = load_scenario("ieee13")
    env = PeerGridEnv(training_window(scenario))
    team = Team(algo, scenario, seed=0, stacked=stacked)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
