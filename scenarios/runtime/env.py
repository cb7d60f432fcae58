"""PettingZoo ParallelEnv over the same community: the training interface.

One episode is one day of the scenario window (``steps_per_day`` rounds). ``reset``
draws the day from the env's seeded generator unless ``options={"day": d}`` names it.
Batteries are never refilled for free: by default an episode starts from the state of
charge (and public signals) the previous one ended with; ``options={"soc": ...}`` says
otherwise: ``"initial"`` (each battery's ``soc_init``; the first reset always does
this), ``"sample"`` (uniform in [soc_min, soc_max], from the env's seeded generator)
or a mapping agent → state of charge. The day's end is a truncation, not a termination:
the next day's first round is a real state to bootstrap from (also after the window's
last day); ``day_end="termination"`` treats each day as a finished episode instead. Observations, actions and rewards are per agent
(``agents.spaces``); ``infos[agent]["record"]`` holds the agent's round record, the
same row the mesa runtime logs, and ``infos[agent]["public"]`` the round's public state,
the next one and the team-reward estimator's input (``agents.public``; the same for
every agent).

As PettingZoo's own environments do, the module offers ``parallel_env(...)`` (this
class, from a scenario name, file or loaded ``Scenario``), ``raw_env(...)`` and
``env(...)`` (the AEC form, order enforced); ``state()`` is the global state for
centralised critics (``state_space``), ``render()`` a text summary of the last round
(``render_mode="ansi"``). A bad action raises ``ActionError`` naming the agent and the
value before anything moves; stepping before ``reset()`` or after the day's last round
raises gymnasium's ``ResetNeeded``. docs/pettingzoo.md shows it in SuperSuit's vector
pipeline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, ClassVar

import numpy as np
from gymnasium import logger, spaces
from gymnasium.error import ResetNeeded
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec_wrapper
from pettingzoo.utils.wrappers import OrderEnforcingWrapper

from peergrid.agents.prosumer import PublicSignals
from peergrid.agents.public import PublicOutcome, estimator_input
from peergrid.agents.records import RoundRecord
from peergrid.agents.spaces import (ACTION_DIM, ACTION_FEATURES, action_space, observation_space,
                                    public_state_space)
from peergrid.scenarios.definition.schema import Scenario
from peergrid.scenarios.runtime.community import Community


class ActionError(ValueError):
    """An action the env refuses (wrong shape, not numbers, NaN or inf), naming the
    agent and the value. Raised before any device moves, so the round is not half run."""

    def __init__(self, agent: str, value: Any, reason: str) -> None:
        self.agent, self.value = agent, value
        super().__init__(f"actions[{agent!r}] = {value!r}: {reason}")


DAY_ENDS = ("truncation", "termination")
"""How the day's last round is flagged. ``truncation`` (the default, what peergrid's
learners use): the next day's first round is a real state to bootstrap from.
``termination``: each day is a finished episode, terminated and truncated both set (the
episodic reading many P2P papers take); it is also what SuperSuit 3.11's
``black_death_v3`` needs to see an episode end (it ends one only when every agent is
terminated and truncated at once)."""


class PeerGridEnv(ParallelEnv):
    metadata: ClassVar[dict[str, Any]] = {"name": "peergrid_v1", "render_modes": ["ansi"],
                                          "is_parallelizable": True}

    def __init__(self, scenario: Scenario, days: int | None = None,
                 render_mode: str | None = None, day_end: str = "truncation") -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode = {render_mode!r}: one of "
                             f"{self.metadata['render_modes']} or None")
        if day_end not in DAY_ENDS:
            raise ValueError(f"day_end = {day_end!r}: one of {', '.join(DAY_ENDS)}")
        self.render_mode = render_mode
        self.day_end = day_end
        self.scenario = scenario
        self.community = Community(scenario, days=days)
        self.possible_agents = list(self.community.agent_ids)
        self.agents: list[str] = []
        # one layout for every agent (agents.spaces): SuperSuit's vector pipeline needs it
        obs_space, act_space = observation_space(), action_space()
        self.observation_spaces = {a: obs_space for a in self.possible_agents}
        self.action_spaces = {a: act_space for a in self.possible_agents}
        public = public_state_space(len(self.community.nodes))
        n = len(self.possible_agents)
        self.state_space = spaces.Box(
            low=np.concatenate([np.tile(obs_space.low, n), public.low]),
            high=np.concatenate([np.tile(obs_space.high, n), public.high]), dtype=np.float32)
        self._rng = np.random.default_rng(scenario.scenario.seed)
        self.day = 0
        self.k = 0
        self.last_market: dict[str, Any] = {}
        self.last_grid: dict[str, Any] = {}
        self.last_records: list[RoundRecord] = []
        self._started = False

    def observation_space(self, agent: str) -> spaces.Box:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Box:
        return self.action_spaces[agent]

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
        self.last_market, self.last_grid, self.last_records = {}, {}, []
        return self._observations(), {a: {} for a in self.agents}

    def state(self) -> np.ndarray:
        """The global state before the current round: every agent's observation (in
        ``possible_agents`` order), then the public state (``public_state``).

        Why this and not the public state alone: the public state is what every agent
        hears (prices, SDR, offers, every node's voltage) but holds no battery's charge
        and no agent's load or PV, so it is not Markov; the observations hold exactly
        those private parts. Together they are the whole state the next round depends
        on (with the profiles' next values, which no agent sees either way) and the
        input of MAPPO's central critic in ``peergrid train`` (``Team.observe``).
        """
        if not self._started:
            raise ResetNeeded("state() before reset(): call reset() first")
        obs = self._observations()
        return np.concatenate([*(obs[a] for a in self.possible_agents), self.public_state()])

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

    def _checked(self, actions: Mapping[str, Any]) -> dict[str, Any]:
        """Every live agent's action, refused whole if any is wrong (nothing moves):
        a missing, unknown, wrong-shape, non-numeric or non-finite action raises
        ``ActionError``; finite values outside the box are clipped by the prosumer."""
        if not self.agents:
            when = f"after the episode ended (day {self.day} is over)" if self._started \
                else "before reset()"
            raise ResetNeeded(f"step() {when}: call reset() to start an episode")
        unknown = [a for a in actions if a not in self.agents]
        if unknown:
            raise ActionError(unknown[0], actions[unknown[0]],
                              "not a live agent of this episode")
        layout = f"({ACTION_DIM},): {', '.join(ACTION_FEATURES)}"
        for a in self.agents:
            if a not in actions:
                raise ActionError(a, None, f"missing; every live agent needs an action {layout}")
            raw = np.asarray(actions[a])
            if raw.dtype.kind not in "iuf":  # text, bools, complex, objects: not a setpoint
                raise ActionError(a, actions[a], f"not real numbers (dtype {raw.dtype}); "
                                  f"expected shape {layout}")
            x = raw.astype(np.float64)
            if x.shape != (ACTION_DIM,):
                raise ActionError(a, actions[a], f"shape {x.shape}, expected {layout}")
            if not np.isfinite(x).all():
                bad = [f for f, v in zip(ACTION_FEATURES, x, strict=True) if not math.isfinite(v)]
                raise ActionError(a, actions[a], f"not finite ({', '.join(bad)})")
        return {a: actions[a] for a in self.agents}

    def step(self, actions: dict[str, np.ndarray]):
        actions = self._checked(actions)
        state = self.community.public_state(self.k)
        outcome = self.community.run_round(self.k, actions)
        self.last_market, self.last_grid = outcome.market, outcome.grid
        self.last_records = outcome.records
        rewards = {r.agent: float(r.reward) for r in outcome.records}
        self.k += 1
        public = {"state": state, "next_state": self.community.public_state(self.k),
                  "estimator_input": estimator_input(state, outcome.public,
                                                     self.community.public_scale)}
        infos = {r.agent: {"record": r, "public": public} for r in outcome.records}
        done = self.k % self.community.steps_per_day == 0
        terminations = {a: done and self.day_end == "termination" for a in self.agents}
        truncations = {a: done for a in self.agents}
        # a truncated day has a real next state (the next day's first round, data loaded
        # one day past the window) that learners bootstrap from
        obs = self._observations()
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def render(self) -> str | None:
        """The last round as text (``render_mode="ansi"``): time, market, grid, and one
        line per agent. Without a render mode, gymnasium's convention: warn, return None."""
        if self.render_mode is None:
            logger.warn("render() without a render_mode: pass render_mode='ansi' to the env")
            return None
        if not self.last_records:
            return f"day {self.day}: no round run yet"
        m, g = self.last_market, self.last_grid
        vm = [v for k, v in g.items() if k.startswith("vm_pu.") and math.isfinite(v)]
        f = self.scenario.feeder
        lines = [
            f"{m['time']}  day {self.day} round {m['round']}",
            (f"market: SDR {m['sdr']:.3g}, P2P {m['p2p_kwh']:.3f} kWh, sell "
             f"{m['sell_price']:.4f} / buy {m['buy_price']:.4f} per kWh (retail "
             f"{m['retail_price']:.4f}, feed-in {m['feed_in_price']:.4f})"),
            (f"grid: vm {min(vm):.4f}-{max(vm):.4f} pu (limits {f.vm_min_pu}-{f.vm_max_pu}), "
             f"highest line loading {g['max_line_loading_pct']:.1f} %" if vm
             else "grid: power flow did not converge"),
            (f"{'agent':<8}{'soc':>6}{'battery_kw':>12}{'bid_kwh':>10}{'p2p_kwh':>10}"
             f"{'grid_kwh':>10}{'reward':>10}"),
        ]
        lines += [f"{r.agent:<8}{r.soc:>6.2f}{r.battery_kw:>12.2f}{r.bid_kwh:>10.3f}"
                  f"{r.p2p_sold_kwh - r.p2p_bought_kwh:>10.3f}"
                  f"{r.grid_import_kwh - r.grid_export_kwh:>10.3f}{r.reward:>10.4f}"
                  for r in self.last_records]
        return "\n".join(lines)


def parallel_env(scenario: Scenario | str | os.PathLike[str] = "ieee13", days: int | None = None,
                 render_mode: str | None = None, day_end: str = "truncation") -> PeerGridEnv:
    """The env as a PettingZoo ``ParallelEnv``, as PettingZoo's own modules name it.

    ``scenario``: a shipped scenario's name (``"ieee13"``), a TOML file, or a loaded
    ``Scenario``; ``days``: the first days of its window only; ``day_end``: how the
    day's last round is flagged (``DAY_ENDS``).
    """
    if not isinstance(scenario, Scenario):
        from peergrid.scenarios.definition.loader import load_scenario

        scenario = load_scenario(scenario)
    return PeerGridEnv(scenario, days=days, render_mode=render_mode, day_end=day_end)


def raw_env(scenario: Scenario | str | os.PathLike[str] = "ieee13", days: int | None = None,
            render_mode: str | None = None, day_end: str = "truncation") -> AECEnv:
    """The AEC form (agents act in turn; the round runs when the last one has acted)."""
    return parallel_to_aec_wrapper(parallel_env(scenario, days, render_mode, day_end))


def env(scenario: Scenario | str | os.PathLike[str] = "ieee13", days: int | None = None,
        render_mode: str | None = None, day_end: str = "truncation") -> AECEnv:
    """The AEC form with PettingZoo's order checks, as its own ``env()`` factories return."""
    return OrderEnforcingWrapper(raw_env(scenario, days, render_mode, day_end))
