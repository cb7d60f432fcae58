"""PettingZoo ParallelEnv over the same community: the training interface.

One episode is one day of the scenario window (``steps_per_day`` rounds). ``reset``
draws the day from the env's seeded generator unless ``options={"day": d}`` names it.
Batteries are never refilled for free: by default an episode starts from the state of
charge (and public signals) the previous one ended with; ``options={"soc": ...}`` says
otherwise: ``"initial"`` (each battery's ``soc_init``; the first reset always does
this), ``"sample"`` (uniform in [soc_min, soc_max], from the env's seeded generator)
or a mapping agent → state of charge. The day's end is a truncation, never a
termination: the next day's first round is a real state to bootstrap from (also after
the window's last day). Observations, actions and rewards are per agent
(``agents.spaces``); ``infos[agent]["record"]`` holds the agent's round record, the
same row the mesa runtime logs, and ``infos[agent]["public"]`` the round's public state,
the next one and the team-reward estimator's input (``agents.public``; the same for
every agent).
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any

import numpy as np
from pettingzoo import ParallelEnv

from peergrid.agents.prosumer import PublicSignals
from peergrid.agents.public import PublicOutcome, estimator_input
from peergrid.agents.spaces import action_space, observation_space
from peergrid.scenarios.runtime.community import Community
from peergrid.scenarios.definition.schema import Scenario


class PeerGridEnv(ParallelEnv):
    metadata = {"name": "peergrid_v1", "render_modes": []}

    def __init__(self, scenario: Scenario, days: int | None = None) -> None:
        self.scenario = scenario
        self.community = Community(scenario, days=days)
        self.possible_agents = list(self.community.agent_ids)
        self.agents: list[str] = []
        self._rng = np.random.default_rng(scenario.scenario.seed)
        self.day = 0
        self.k = 0
        self.last_market: dict[str, Any] = {}
        self.last_grid: dict[str, Any] = {}
        self._started = False

    @functools.lru_cache(maxsize=None)  # noqa: B019 - spaces are fixed per agent
    def observation_space(self, agent: str):
        return observation_space()

    @functools.lru_cache(maxsize=None)  # noqa: B019
    def action_space(self, agent: str):
        return action_space()

    def _observations(self) -> dict[str, np.ndarray]:
        return {a: self.community.observe(i, self.k) for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        days = self.community.days
        if options and "day" in options:
            day = int(options["day"])
            if not 0 <= day < days:
                raise ValueError(f"options.day = {day}: must be in [0, {days})")
        else:
            day = int(self._rng.integers(days))
        self.day = day
        self.k = day * self.community.steps_per_day
        soc = (options or {}).get("soc", "carry" if self._started else "initial")
        if soc == "initial":
            self.community.reset()
        elif soc == "sample":
            self.community.reset({
                p.spec.agent_id: float(self._rng.uniform(p.spec.battery.soc_min,
                                                          p.spec.battery.soc_max))
                for p in self.community.prosumers})
        elif isinstance(soc, dict):
            self.community.reset(soc)
        elif soc != "carry":
            raise ValueError(f"options.soc = {soc!r}: 'carry', 'initial', 'sample' or a "
                             "mapping agent -> state of charge")
        self._started = True
        self.agents = list(self.possible_agents)
        return self._observations(), {a: {} for a in self.agents}

    def public_state(self) -> np.ndarray:
        """The public state before the current round (agents.public): what the networked
        learners' critics read, the same for every agent."""
        return self.community.public_state(self.k)

    def state_dict(self) -> dict[str, Any]:
        """What the next episode depends on (states of charge, last public signals, the
        day generator), so a resumed training run continues exactly."""
        return {"started": self._started, "rng": self._rng.bit_generator.state,
                "prosumers": {p.spec.agent_id: {"soc": p.soc, "signals": asdict(p.signals),
                                                "public": p.public.as_dict()}
                              for p in self.community.prosumers}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._started = state["started"]
        self._rng.bit_generator.state = state["rng"]
        for p in self.community.prosumers:
            saved = state["prosumers"][p.spec.agent_id]
            p.reset(saved["soc"])
            p.signals = PublicSignals(**saved["signals"])
            p.public = PublicOutcome.from_dict(saved["public"])

    def step(self, actions: dict[str, np.ndarray]):
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"actions: missing for agents {missing}")
        state = self.community.public_state(self.k)
        outcome = self.community.run_round(self.k, actions)
        self.last_market, self.last_grid = outcome.market, outcome.grid
        rewards = {r.agent: float(r.reward) for r in outcome.records}
        self.k += 1
        public = {"state": state, "next_state": self.community.public_state(self.k),
                  "estimator_input": estimator_input(state, outcome.public,
                                                     self.community.public_scale)}
        infos = {r.agent: {"record": r, "public": public} for r in outcome.records}
        done = self.k % self.community.steps_per_day == 0
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        # a truncated day has a real next state (the next day's first round, data loaded
        # one day past the window) that learners bootstrap from
        obs = self._observations()
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos
