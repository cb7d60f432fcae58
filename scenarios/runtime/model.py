"""The in-process runtime as a mesa model: prosumer agents, a market and a grid operator.

mesa owns the clock (``steps``) and the seeded generator (``Model(rng=...)``); each
prosumer is a ``mesa.Agent`` holding its policy and actor; the operators belong to
the model. One ``step()`` is one trading round, in fixed stages (agent order is the
scenario file's order, which the market's order-independence makes irrelevant):

    prosumers.do("decide") → market clears → grid solves → prosumers.do("conclude")

The DataCollector follows mesa's convention: one row before the first round (Step 0,
no round played: the round reporters are NaN) and one after every round, so Step ``s``
is the state after ``s`` rounds. Its agent reporters read each prosumer's last
``RoundRecord``, so ``datacollector.get_agent_vars_dataframe()`` is the per-agent log
(Steps 1..n); its model reporters (``MODEL_REPORTERS``) are the round's market and grid
outcome, so ``get_model_vars_dataframe()`` is the community's per-round log.

``mesa.batch_run(MarketModel, {"seed": [...], "policy": [...], "days": 1})`` drives it
by keywords; the model stops itself (``running = False``) after the window's last round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mesa
from mesa.agent import AgentSet
import numpy as np

from peergrid.agents.policies import REFERENCE_POLICIES, Policy, make_policy
from peergrid.agents.prosumer import Prosumer
from peergrid.agents.records import RECORD_COLUMNS, RoundRecord
from peergrid.grid.signal import GridSignal
from peergrid.market.bid import Bid
from peergrid.market.operator import MarketResult
from peergrid.scenarios.definition.loader import load_scenario
from peergrid.scenarios.definition.schema import Scenario
from peergrid.scenarios.runtime.community import Community, for_policy

PolicyFactory = Callable[[Prosumer], Policy]
"""Builds one prosumer's policy (a learner's actor, a reference policy, ...)."""


class ProsumerAgent(mesa.Agent):
    """A prosumer in the mesa model: policy + actor, one bid per round."""

    def __init__(self, model: MarketModel, index: int, policy: Policy) -> None:
        super().__init__(model)
        self.index = index
        self.agent_id = model.community.agent_ids[index]
        self.policy = policy
        self.bid: Bid | None = None
        self.record: RoundRecord | None = None

    def decide(self) -> None:
        k = self.model.k
        obs = self.model.community.observe(self.index, k)
        self.bid = self.model.community.decide(self.index, k, self.policy(obs))

    def conclude(self, market: MarketResult, signal: GridSignal, public) -> None:
        self.record = self.model.community.conclude(self.index, self.model.k, market, signal,
                                                    public)


def _reporter(column: str) -> Callable[[ProsumerAgent], Any]:
    return lambda agent: getattr(agent.record, column)


def _market(column: str) -> Callable[[MarketModel], float]:
    return lambda m: math.nan if m.market_row is None else float(m.market_row[column])


def _grid(column: str) -> Callable[[MarketModel], float]:
    return lambda m: math.nan if m.grid_row is None else float(m.grid_row[column])


MODEL_REPORTERS: dict[str, Callable[[MarketModel], Any]] = {
    "time": lambda m: None if m.market_row is None else m.market_row["time"],
    "sell_price_per_kwh": _market("sell_price"),
    "buy_price_per_kwh": _market("buy_price"),
    "retail_price_per_kwh": _market("retail_price"),
    "feed_in_price_per_kwh": _market("feed_in_price"),
    "sdr": _market("sdr"),
    "p2p_kwh": _market("p2p_kwh"),
    "vm_min_pu": lambda m: m.vm_range_pu[0],
    "vm_max_pu": lambda m: m.vm_range_pu[1],
    "voltage_violations": lambda m: m.voltage_violations,
    "lines_overloaded": _grid("lines_overloaded"),
    "max_line_loading_pct": _grid("max_line_loading_pct"),
}
"""The round's community outcome. Prices are the P2P clearing prices (sell: what sellers
get, buy: what buyers pay on average) beside the grid's retail and feed-in tariff that
bound them; ``voltage_violations`` counts buses (an electrical node once, whichever of
its phases is out) outside the scenario's limits, as ``logs`` reports do;
``lines_overloaded`` counts lines above 100 % of their rating. NaN before the first
round."""


def _reference(name: str) -> PolicyFactory:
    return lambda p: make_policy(name, p.spec, p.dt_h)


def _seeded(scenario: Scenario, seed: int | None) -> Scenario:
    if seed is None:
        return scenario
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed = {seed!r}: must be a non-negative integer")
    meta = scenario.scenario.model_copy(update={"seed": int(seed)})
    return scenario.model_copy(update={"scenario": meta})


class MarketModel(mesa.Model):
    """A P2P market on a feeder, stepped one round per ``step()``.

    Args:
        scenario: a ``Scenario`` or a scenario name/path (``load_scenario``), so that
            ``batch_run`` and SolaraViz can re-create the model from plain keywords.
        policy: a reference policy name (``agents.policies.REFERENCE_POLICIES``; with
            ``voltvar`` the agents' inverters switch to volt-var, ``for_policy``) or a
            factory building each prosumer's policy (used as given).
        days: the window's length (default: the scenario's).
        seed: replaces the scenario's root seed (``scenario.seed``), which seeds mesa's
            generator; a scenario's generated agents were placed when it was loaded,
            so they stay who they are. Default: the scenario's seed.
        on_round: called after every round with the agents' records and the market and
            grid rows (the run writer).

    When the last round of the window has been played, ``running`` turns False: mesa's
    drivers (``batch_run``, ``run_model``, SolaraViz's play loop) stop on it. Stepping
    past the end is a no-op that leaves ``steps`` at the number of rounds played, since
    a SolaraViz step button with a render interval > 1 steps on without looking at
    ``running``, and mesa models end by ``running``, not by raising.
    """

    def __init__(
        self,
        scenario: Scenario | str = "ieee13",
        policy: str | PolicyFactory = "rule",
        days: int | None = None,
        seed: int | None = None,
        *,
        on_round: Callable[[list[RoundRecord], dict, dict], None] | None = None,
    ) -> None:
        if isinstance(policy, str) and policy not in REFERENCE_POLICIES:
            raise ValueError(f"policy = {policy!r}: unknown (choose from "
                             f"{', '.join(REFERENCE_POLICIES)})")
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        scenario = _seeded(scenario, seed)
        if isinstance(policy, str):
            scenario = for_policy(scenario, policy)
            policy = _reference(policy)
        super().__init__(rng=np.random.default_rng(scenario.scenario.seed))
        self.community = Community(scenario, days=days)
        self.k = 0
        self.on_round = on_round
        self.market_row: dict[str, Any] | None = None
        self.grid_row: dict[str, Any] | None = None
        self.vm_range_pu = (math.nan, math.nan)
        self.voltage_violations = math.nan
        self._node_bus = self._electrical_nodes()
        self.datacollector = mesa.DataCollector(
            model_reporters=dict(MODEL_REPORTERS),
            agent_reporters={c: _reporter(c) for c in RECORD_COLUMNS},
        )
        # Step 0 (before any round) is collected before the agents exist, so the agent
        # table holds played rounds only while model and agent rows share Step numbers
        self.datacollector.collect(self)
        self.prosumers = AgentSet(
            [ProsumerAgent(self, i, policy(p)) for i, p in
             enumerate(self.community.prosumers)],
            random=self.random,
        )

    def _electrical_nodes(self) -> dict[str, str]:
        """Power-flow node ("671.a") → electrical node, where a violation counts once."""
        grid = self.community.grid
        return {n: grid.bus_groups[b]
                for n, b in zip(grid.solver.node_names, grid.solver.node_bus, strict=True)}

    @property
    def finished(self) -> bool:
        return self.k >= self.community.n_rounds

    def step(self) -> None:
        if self.finished:
            self.running = False
            self.steps -= 1  # mesa counted it before calling: no round was played
            return
        self.prosumers.do("decide")
        bids = {a.agent_id: a.bid for a in self._ordered()}
        market = self.community.clear(self.k, bids)
        signal = self.community.solve(self.k, bids)
        self.prosumers.do("conclude", market, signal, self.community.outcome(market, signal))
        self.market_row, self.grid_row = self.community.round_tables(self.k, market, signal)
        self._grid_summary(signal)
        self.datacollector.collect(self)
        if self.on_round is not None:
            self.on_round([a.record for a in self._ordered()], self.market_row, self.grid_row)
        self.k += 1
        self.running = not self.finished

    def _grid_summary(self, signal: GridSignal) -> None:
        f = self.community.scenario.feeder
        vm = {n: v for n, v in signal.vm_pu.items() if math.isfinite(v)}
        values = list(vm.values())
        self.vm_range_pu = (min(values), max(values)) if values else (math.nan, math.nan)
        out = {self._node_bus[n] for n, v in vm.items() if not f.vm_min_pu <= v <= f.vm_max_pu}
        self.voltage_violations = len(out)

    def _ordered(self) -> list[ProsumerAgent]:
        return sorted(self.prosumers, key=lambda a: a.index)
