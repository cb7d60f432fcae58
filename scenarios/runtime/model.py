"""The in-process runtime as a mesa model: prosumer agents, a market and a grid operator.

mesa owns the clock (``steps``) and the seeded generator (``Model(rng=...)``); each
prosumer is a ``mesa.Agent`` holding its policy and actor; the operators belong to
the model. One ``step()`` is one trading round, in fixed stages (agent order is the
scenario file's order, which the market's order-independence makes irrelevant):

    prosumers.do("decide") → market clears → grid solves → prosumers.do("conclude")

The DataCollector's agent reporters read each prosumer's last ``RoundRecord``, so
``datacollector.get_agent_vars_dataframe()`` is the per-agent log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mesa
from mesa.agent import AgentSet
import numpy as np

from peergrid.agents.policies import Policy
from peergrid.agents.records import RECORD_COLUMNS, RoundRecord
from peergrid.grid.signal import GridSignal
from peergrid.market.bid import Bid
from peergrid.market.operator import MarketResult
from peergrid.scenarios.runtime.community import Community
from peergrid.scenarios.definition.schema import Scenario


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


class MarketModel(mesa.Model):
    """A P2P market on a feeder, stepped one round per ``step()``."""

    def __init__(
        self,
        scenario: Scenario,
        policy_factory: Callable[[Any], Policy],
        days: int | None = None,
        on_round: Callable[[list[RoundRecord], dict, dict], None] | None = None,
    ) -> None:
        super().__init__(rng=np.random.default_rng(scenario.scenario.seed))
        self.community = Community(scenario, days=days)
        self.k = 0
        self.on_round = on_round
        self.prosumers = AgentSet(
            [ProsumerAgent(self, i, policy_factory(p)) for i, p in
             enumerate(self.community.prosumers)],
            random=self.random,
        )
        self.datacollector = mesa.DataCollector(
            agent_reporters={c: _reporter(c) for c in RECORD_COLUMNS}
        )

    @property
    def finished(self) -> bool:
        return self.k >= self.community.n_rounds

    def step(self) -> None:
        if self.finished:
            raise RuntimeError("the scenario window is over")
        self.prosumers.do("decide")
        bids = {a.agent_id: a.bid for a in self._ordered()}
        market = self.community.clear(self.k, bids)
        signal = self.community.solve(self.k, bids)
        self.prosumers.do("conclude", market, signal, self.community.outcome(market, signal))
        self.datacollector.collect(self)
        if self.on_round is not None:
            market_row, grid_row = self.community.round_tables(self.k, market, signal)
            self.on_round([a.record for a in self._ordered()], market_row, grid_row)
        self.k += 1

    def _ordered(self) -> list[ProsumerAgent]:
        return sorted(self.prosumers, key=lambda a: a.index)

