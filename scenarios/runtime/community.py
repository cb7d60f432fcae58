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

from peergrid.agents.devices import BatterySpec, InverterSpec
from peergrid.agents.policies import INVERTER_CONTROL
from peergrid.agents.prosumer import Prosumer, ProsumerSpec, PublicSignals
from peergrid.agents.public import (GridOutcome, MarketOutcome, PublicOutcome, PublicScale,
                                    initial_outcome)
from peergrid.agents.records import RoundRecord
from peergrid.grid.signal import GridSignal
from peergrid.market.bid import Bid
from peergrid.grid.feeders import bus_phases, feeder_buses
from peergrid.grid.operator import GridOperator, connection_nodes, grid_row
from peergrid.grid.penalty import PenaltyRule, observed_voltage
from peergrid.grid import build as grid_build
from peergrid.grid.build import FeederChoice
from peergrid.grid.powerflow import Solver
from peergrid.market.operator import MarketOperator, MarketResult, market_row
from peergrid.scenarios.definition import profiles
from peergrid.scenarios.definition.schema import AgentConfig, Scenario


def prosumer_spec(a: AgentConfig) -> ProsumerSpec:
    return ProsumerSpec(
        agent_id=a.id, bus=a.bus, load_peak_kw=a.load_peak_kw, power_factor=a.power_factor,
        pv_kwp=a.pv_kwp,
        battery=BatterySpec(
            capacity_kwh=a.battery_kwh, charge_kw_max=a.battery_kw, discharge_kw_max=a.battery_kw,
            eta_charge=a.eta_charge, eta_discharge=a.eta_discharge,
            soc_min=a.soc_min, soc_max=a.soc_max, soc_init=a.soc_init,
        ),
        inverter=InverterSpec(a.pv_inverter_kva or 0.0, a.battery_inverter_kva or 0.0),
        volt_var=a.inverter_control == "volt_var",
    )


def for_policy(scenario: Scenario, policy: str) -> Scenario:
    """The scenario as a reference policy runs it: ``voltvar`` switches every agent's
    inverters to volt-var control (agents.policies.INVERTER_CONTROL)."""
    control = INVERTER_CONTROL.get(policy)
    if control is None:
        return scenario
    agents = [a.model_copy(update={"inverter_control": control}) for a in scenario.agents]
    return scenario.model_copy(update={"agents": agents})


def feeder_choice(scenario: Scenario) -> FeederChoice:
    f = scenario.feeder
    return FeederChoice(f.name, f.model, f.capacitors, f.slack_vm_pu, f.solver)


def make_solver(scenario: Scenario) -> Solver:
    """The scenario's feeder, per phase or balanced, behind its chosen power-flow solver."""
    return grid_build.make_solver(feeder_choice(scenario))


def penalty_rule(scenario: Scenario) -> PenaltyRule:
    f = scenario.feeder
    return PenaltyRule(f.vm_min_pu, f.vm_max_pu, f.voltage_penalty_per_pu,
                       f.line_penalty_per_pu, f.penalty_scope)


class Clock:
    """Times, hours and day/round numbering of a scenario window."""

    def __init__(self, scenario: Scenario, days: int | None = None,
                 start: dt.date | None = None) -> None:
        meta = scenario.scenario
        self.start = start or meta.start
        self.days = meta.days if days is None else days
        if self.days < 1:
            raise ValueError(f"days = {self.days}: must be at least 1")
        self.dt_h = meta.step_min / 60.0
        self.steps_per_day = 24 * 60 // meta.step_min
        self.n_rounds = self.days * self.steps_per_day
        self.times = pd.date_range(pd.Timestamp(self.start), periods=self.n_rounds,
                                   freq=f"{meta.step_min}min")
        # hours run one day past the window: the state after its last round is observed
        observed = pd.date_range(pd.Timestamp(self.start),
                                 periods=self.n_rounds + self.steps_per_day,
                                 freq=f"{meta.step_min}min")
        self.hours = observed.hour.to_numpy()
        self.hour_frac = (observed.hour + observed.minute / 60.0).to_numpy()

    def episode_round(self, k: int) -> tuple[int, int]:
        return k // self.steps_per_day, k % self.steps_per_day


def _with_next_day(series: pd.Series, start: dt.date, days: int) -> np.ndarray:
    """The window's values and one day more: the state after the window's last round is
    real (learners bootstrap from it). At the end of the profile year the last day is
    repeated."""
    values = profiles.window(series, start, days)
    try:
        return np.concatenate([values, profiles.window(series, start + dt.timedelta(days=days), 1)])
    except ValueError:
        return np.concatenate([values, values[-len(values) // days:]])


def feeder_nodes(scenario: Scenario) -> list[str]:
    """The feeder's power-flow nodes in solver order, from the scenario alone (a
    prosumer process needs them without building the network)."""
    f = scenario.feeder
    if f.model == "per_phase":
        return [f"{b}.{p}" for b, phases in bus_phases(f.name).items() for p in phases]
    return list(feeder_buses(f.name))


def public_scale(scenario: Scenario) -> PublicScale:
    """The units of the public state (agents.public), the same for every agent."""
    dt_h = scenario.scenario.step_min / 60.0
    return PublicScale(max(scenario.tariff.hourly()[0]),
                       sum(prosumer_spec(a).p_ref_kw for a in scenario.agents) * dt_h)


def market_outcome(market: MarketResult) -> MarketOutcome:
    c = market.clearing
    return MarketOutcome(c.sdr, c.sell_price_per_kwh, c.buy_price_per_kwh, c.tsp_kwh,
                         c.tbp_kwh, market.net_import_kwh)


def grid_outcome(vm_pu: Mapping[str, float], nodes: list[str], max_line_loading_pct: float,
                 converged: bool) -> GridOutcome:
    return GridOutcome(tuple(float(vm_pu[n]) for n in nodes), float(max_line_loading_pct),
                       bool(converged))


def build_prosumer(scenario: Scenario, a: AgentConfig, clock: Clock) -> Prosumer:
    """One agent's prosumer actor with its profile window (what a prosumer node builds)."""
    step_min = scenario.scenario.step_min
    retail, feed_in = scenario.tariff.hourly()
    load = a.load_peak_kw * _with_next_day(
        profiles.load_factor(a.load_profile, step_min), clock.start, clock.days)
    pv = np.zeros_like(load) if a.pv_profile is None else a.pv_kwp * _with_next_day(
        profiles.pv_factor(a.pv_profile, step_min), clock.start, clock.days)
    initial = PublicSignals(feed_in[0], retail[0], 1.0, scenario.feeder.slack_vm_pu)
    public = initial_outcome(len(feeder_nodes(scenario)), retail[0], feed_in[0],
                             scenario.feeder.slack_vm_pu)
    return Prosumer(prosumer_spec(a), load, pv, clock.dt_h, initial, public)


def agent_connections(scenario: Scenario) -> dict[str, list[str]]:
    """Each agent's power-flow nodes (grid.operator.connection_nodes)."""
    f = scenario.feeder
    phases = bus_phases(f.name) if f.model == "per_phase" else None
    return {a.id: connection_nodes(a.bus, a.phases, phases) for a in scenario.agents}


def make_grid_operator(scenario: Scenario, dt_h: float) -> GridOperator:
    return grid_build.make_grid_operator(feeder_choice(scenario),
                                         {a.id: a.bus for a in scenario.agents}, dt_h,
                                         penalty_rule(scenario), agent_connections(scenario))


@dataclass(frozen=True)
class RoundOutcome:
    records: list[RoundRecord]
    market: dict[str, Any]
    grid: dict[str, Any]
    public: PublicOutcome


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
        self.agent_nodes = [self.grid.agent_nodes[a] for a in self.agent_ids]
        self.nodes = feeder_nodes(scenario)
        if self.nodes != list(self.grid.solver.node_names):
            raise RuntimeError(f"feeder {scenario.feeder.name}: node order differs from the solver's")
        self.public_scale = public_scale(scenario)

    # ---- clock ---------------------------------------------------------------------

    def episode_round(self, k: int) -> tuple[int, int]:
        return self.clock.episode_round(k)

    def reset(self, soc: Mapping[str, float] | None = None) -> None:
        """Every prosumer back to its initial state (or the given states of charge)."""
        for p in self.prosumers:
            p.reset(None if soc is None else soc[p.spec.agent_id])

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

    def public_state(self, k: int) -> np.ndarray:
        """The public state before round ``k`` (agents.public): the same for every agent,
        read from the first prosumer's copy."""
        tariff = self.market.tariff(int(self.hours[k]))
        return self.prosumers[0].public_state(float(self.hour_frac[k]), tariff.retail_price_per_kwh,
                                              tariff.feed_in_price_per_kwh, self.public_scale)

    def outcome(self, market: MarketResult, signal: GridSignal) -> PublicOutcome:
        """The round's public outcome, as every agent hears it."""
        return PublicOutcome(market_outcome(market),
                             grid_outcome(signal.vm_pu, self.nodes, signal.max_line_loading_pct,
                                          signal.converged))

    def conclude(self, i: int, k: int, market: MarketResult, signal: GridSignal,
                 public: PublicOutcome | None = None) -> RoundRecord:
        p = self.prosumers[i]
        aid = p.spec.agent_id
        episode, rnd = self.episode_round(k)
        tariff = market.clearing.tariff
        f = self.scenario.feeder
        return p.conclude(
            episode, rnd, self.times[k].isoformat(), market.settlements[aid],
            tariff.retail_price_per_kwh, tariff.feed_in_price_per_kwh,
            observed_voltage(signal.vm_pu, self.agent_nodes[i], f.vm_min_pu, f.vm_max_pu),
            signal.voltage_penalty[aid], signal.line_penalty[aid],
            signal.volt_var_q_kvar.get(aid, 0.0), public,
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
        public = self.outcome(market, signal)
        records = [self.conclude(i, k, market, signal, public)
                   for i in range(len(self.prosumers))]
        market_row, grid_row = self.round_tables(k, market, signal)
        return RoundOutcome(records, market_row, grid_row, public)


def finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None
