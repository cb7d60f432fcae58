"""Build the actors of a scenario and run one round in explicit stages.

Both in-process drivers (the mesa model and the PettingZoo env) call these stages in
the same fixed order, so there is one implementation of a round:

    observe → decide (prosumers act, bids) → clear (market) → solve (grid) → conclude
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from peergrid.agents.devices import BatterySpec
from peergrid.agents.prosumer import Prosumer, ProsumerSpec, PublicSignals
from peergrid.agents.records import RoundRecord
from peergrid.comms.messages import Bid, GridSignal
from peergrid.grid.feeders import build_feeder
from peergrid.grid.operator import GridOperator
from peergrid.grid.powerflow import PandapowerSolver, Solver
from peergrid.grid.zbus import ZBusSolver
from peergrid.market.operator import MarketOperator, MarketResult
from peergrid.scenarios import profiles
from peergrid.scenarios.schema import AgentConfig, Scenario


def prosumer_spec(a: AgentConfig) -> ProsumerSpec:
    return ProsumerSpec(
        agent_id=a.id, bus=a.bus, load_peak_kw=a.load_peak_kw, power_factor=a.power_factor,
        pv_kwp=a.pv_kwp,
        battery=BatterySpec(
            capacity_kwh=a.battery_kwh, charge_kw_max=a.battery_kw, discharge_kw_max=a.battery_kw,
            eta_charge=a.eta_charge, eta_discharge=a.eta_discharge,
            soc_min=a.soc_min, soc_max=a.soc_max, soc_init=a.soc_init,
        ),
    )


def make_solver(scenario: Scenario) -> Solver:
    """The scenario's feeder behind its chosen power-flow solver."""
    feeder = scenario.feeder
    net = build_feeder(feeder.name, slack_vm_pu=feeder.slack_vm_pu)
    return ZBusSolver(net) if feeder.solver == "fast" else PandapowerSolver(net)


class Clock:
    """Times, hours and day/round numbering of a scenario window."""

    def __init__(self, scenario: Scenario, days: int | None = None,
                 start: dt.date | None = None) -> None:
        meta = scenario.scenario
        self.start = start or meta.start
        self.days = days or meta.days
        self.dt_h = meta.step_min / 60.0
        self.steps_per_day = 24 * 60 // meta.step_min
        self.n_rounds = self.days * self.steps_per_day
        self.times = pd.date_range(pd.Timestamp(self.start), periods=self.n_rounds,
                                   freq=f"{meta.step_min}min")
        self.hours = self.times.hour.to_numpy()
        self.hour_frac = (self.times.hour + self.times.minute / 60.0).to_numpy()

    def episode_round(self, k: int) -> tuple[int, int]:
        return k // self.steps_per_day, k % self.steps_per_day


def build_prosumer(scenario: Scenario, a: AgentConfig, clock: Clock) -> Prosumer:
    """One agent's prosumer actor with its profile window (what a prosumer node builds)."""
    step_min = scenario.scenario.step_min
    retail, feed_in = scenario.tariff.hourly()
    load = a.load_peak_kw * profiles.window(
        profiles.load_factor(a.load_profile, step_min), clock.start, clock.days)
    pv = np.zeros_like(load) if a.pv_profile is None else a.pv_kwp * profiles.window(
        profiles.pv_factor(a.pv_profile, step_min), clock.start, clock.days)
    initial = PublicSignals(feed_in[0], retail[0], 1.0, scenario.feeder.slack_vm_pu)
    return Prosumer(prosumer_spec(a), load, pv, clock.dt_h, initial)


def market_row(key: dict[str, Any], market: MarketResult) -> dict[str, Any]:
    """The market.jsonl row of one round."""
    c = market.clearing
    return {
        **key, "tsp_kwh": c.tsp_kwh, "tbp_kwh": c.tbp_kwh, "sdr": c.sdr,
        "p2p_kwh": c.p2p_kwh, "sell_price": c.sell_price_per_kwh,
        "buy_price": c.buy_price_per_kwh,
        "retail_price": c.tariff.retail_price_per_kwh,
        "feed_in_price": c.tariff.feed_in_price_per_kwh,
    }


def grid_row(key: dict[str, Any], signal: GridSignal, grid: GridOperator) -> dict[str, Any]:
    """The grid.jsonl row of one round."""
    result = grid.last_result
    loading = result.line_loading_pct if result is not None else np.array([])
    names = grid.solver.line_names if result is not None else []
    return {
        **key, "converged": signal.converged,
        "max_line_loading_pct": signal.max_line_loading_pct,
        "lines_overloaded": int(np.sum(np.asarray(loading) > 100.0)),
        **{f"vm_pu.{b}": v for b, v in signal.vm_pu.items()},
        **{f"loading_pct.{n}": float(x) for n, x in zip(names, loading, strict=True)},
    }


def make_grid_operator(scenario: Scenario, dt_h: float) -> GridOperator:
    feeder = scenario.feeder
    return GridOperator(
        make_solver(scenario), {a.id: a.bus for a in scenario.agents}, dt_h,
        feeder.vm_min_pu, feeder.vm_max_pu, feeder.voltage_penalty_per_pu, feeder.penalty_scope,
    )


@dataclass(frozen=True)
class RoundOutcome:
    records: list[RoundRecord]
    market: dict[str, Any]
    grid: dict[str, Any]


class Community:
    """Prosumers, the market operator and the grid operator of one scenario window."""

    def __init__(self, scenario: Scenario, days: int | None = None,
                 start: dt.date | None = None) -> None:
        self.scenario = scenario
        self.clock = Clock(scenario, days, start)
        c = self.clock
        self.start, self.days, self.dt_h = c.start, c.days, c.dt_h
        self.steps_per_day, self.n_rounds = c.steps_per_day, c.n_rounds
        self.times, self.hours, self.hour_frac = c.times, c.hours, c.hour_frac

        retail, feed_in = scenario.tariff.hourly()
        self.market = MarketOperator(retail, feed_in)
        self.price_ref = max(retail)
        self.grid = make_grid_operator(scenario, self.dt_h)
        self.prosumers = [build_prosumer(scenario, a, c) for a in scenario.agents]
        self.agent_ids = [p.spec.agent_id for p in self.prosumers]

    # ---- clock ---------------------------------------------------------------------

    def episode_round(self, k: int) -> tuple[int, int]:
        return self.clock.episode_round(k)

    def reset(self) -> None:
        for p in self.prosumers:
            p.reset()

    # ---- stages --------------------------------------------------------------------

    def observe(self, i: int, k: int) -> np.ndarray:
        tariff = self.market.tariff(int(self.hours[k]))
        return self.prosumers[i].observation(
            k, float(self.hour_frac[k]), tariff.retail_price_per_kwh,
            tariff.feed_in_price_per_kwh, self.price_ref,
        )

    def decide(self, i: int, k: int, action: np.ndarray) -> Bid:
        return self.prosumers[i].act(k, self.episode_round(k)[1], action)

    def clear(self, k: int, bids: Mapping[str, Bid]) -> MarketResult:
        return self.market.close_round(self.episode_round(k)[1], int(self.hours[k]), bids)

    def solve(self, k: int, bids: Mapping[str, Bid]) -> GridSignal:
        return self.grid.solve(self.episode_round(k)[1], bids)

    def conclude(self, i: int, k: int, market: MarketResult, signal: GridSignal) -> RoundRecord:
        p = self.prosumers[i]
        aid = p.spec.agent_id
        episode, rnd = self.episode_round(k)
        tariff = market.clearing.tariff
        return p.conclude(
            episode, rnd, self.times[k].isoformat(), market.settlements[aid],
            tariff.retail_price_per_kwh, tariff.feed_in_price_per_kwh,
            signal.vm_pu[p.spec.bus], signal.voltage_penalty[aid],
        )

    def round_tables(self, k: int, market: MarketResult, signal: GridSignal
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Market-wide and grid-wide rows for round ``k`` (market.jsonl, grid.jsonl)."""
        episode, rnd = self.episode_round(k)
        key = {"episode": episode, "round": rnd, "time": self.times[k].isoformat()}
        return market_row(key, market), grid_row(key, signal, self.grid)

    def run_round(self, k: int, actions: Mapping[str, np.ndarray]) -> RoundOutcome:
        """All stages of round ``k`` for the given actions (the env's path)."""
        bids = {aid: self.decide(i, k, actions[aid]) for i, aid in enumerate(self.agent_ids)}
        market = self.clear(k, bids)
        signal = self.solve(k, bids)
        records = [self.conclude(i, k, market, signal) for i in range(len(self.prosumers))]
        market_row, grid_row = self.round_tables(k, market, signal)
        return RoundOutcome(records, market_row, grid_row)


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
