"""The prosumer actor: turns an action into a bid, and a settlement into a record.

Pure with respect to its inputs: no clock, no sockets, no global random state. The
same object runs inside the mesa model, the PettingZoo env and (later) a process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from peergrid.agents.devices import (BatterySpec, InverterSpec, reactive_capability_kvar,
                                     step_battery)
from peergrid.agents.public import PublicOutcome, PublicScale, public_state
from peergrid.agents.records import RoundRecord
from peergrid.agents.spaces import (ACTION_DIM, ACTION_HIGH, ACTION_LOW, OBS_BOUND, OBS_DIM,
                                     squash_sdr)
from peergrid.market.bid import Bid
from peergrid.market.settlement import Settlement
from peergrid.agents.statefile import state_class


_BOX = tuple(zip(map(float, ACTION_LOW), map(float, ACTION_HIGH), strict=True))
"""The action box as plain floats (clipping stays in float64)."""

INVERTER_KVA_PER_KW = 1.1
"""Default inverter rating per kW of PV or battery: IEEE 1547-2018 (category B) asks for
0.44 pu reactive power at rated active power, i.e. S >= 1.09 P."""


@dataclass(frozen=True)
class ProsumerSpec:
    """Static description of one household block."""

    agent_id: str
    bus: str
    load_peak_kw: float
    power_factor: float
    pv_kwp: float
    battery: BatterySpec
    inverter: InverterSpec | None = None
    """None: ``INVERTER_KVA_PER_KW`` x the PV kWp and x the battery kW."""
    volt_var: bool = False
    """The inverters follow the IEEE 1547 volt-var curve (settled by the grid operator
    with the power flow, ``grid.inverters``) instead of the reactive-power action."""

    def __post_init__(self) -> None:
        if self.inverter is None:
            object.__setattr__(self, "inverter", InverterSpec(
                INVERTER_KVA_PER_KW * self.pv_kwp,
                INVERTER_KVA_PER_KW * max(self.battery.charge_kw_max,
                                          self.battery.discharge_kw_max)))

    @property
    def p_ref_kw(self) -> float:
        """Power scale of the observation: the largest of the agent's ratings."""
        return max(self.load_peak_kw, self.pv_kwp, self.battery.charge_kw_max, 1e-9)

    @property
    def q_per_p(self) -> float:
        return math.tan(math.acos(self.power_factor))


@dataclass(frozen=True)
class PublicSignals:
    """What every agent learns after a round: market prices and its bus voltage."""

    sell_price_per_kwh: float
    buy_price_per_kwh: float
    sdr: float
    vm_pu: float


@state_class  # in a node checkpoint (agents.statefile)
class Prosumer:
    """One agent's devices and the bookkeeping of one round at a time."""

    def __init__(
        self,
        spec: ProsumerSpec,
        load_kw: np.ndarray,
        pv_kw: np.ndarray,
        dt_h: float,
        initial_signals: PublicSignals,
        initial_public: PublicOutcome | None = None,
    ) -> None:
        if load_kw.shape != pv_kw.shape:
            raise ValueError(f"{spec.agent_id}: load and PV series differ in length")
        self.spec = spec
        self.load_kw = load_kw
        self.pv_kw = pv_kw
        self.dt_h = dt_h
        self._initial_signals = initial_signals
        self._initial_public = initial_public
        self.reset()

    def reset(self, soc: float | None = None) -> None:
        """Start a new run (or episode) with the given or the initial state of charge."""
        b = self.spec.battery
        self.soc = (b.soc_init if soc is None else soc) if b.present else 0.0
        self.signals = self._initial_signals
        self.public = self._initial_public
        self._pending: dict[str, float] | None = None

    def observation(self, k: int, hour: float, retail: float, feed_in: float,
                    price_ref: float) -> np.ndarray:
        """Local observation before acting in round ``k`` (layout: agents.spaces)."""
        p_ref = self.spec.p_ref_kw
        s = self.signals
        obs = np.array(
            [
                math.sin(2 * math.pi * hour / 24), math.cos(2 * math.pi * hour / 24),
                self.load_kw[k] / p_ref, self.pv_kw[k] / p_ref, self.soc,
                retail / price_ref, feed_in / price_ref,
                s.sell_price_per_kwh / price_ref, s.buy_price_per_kwh / price_ref,
                squash_sdr(s.sdr), (s.vm_pu - 1.0) * 10.0,
            ],
            dtype=np.float32,
        )
        assert obs.shape == (OBS_DIM,)
        return np.clip(obs, -OBS_BOUND, OBS_BOUND)

    def public_state(self, hour: float, retail: float, feed_in: float,
                     scale: PublicScale) -> np.ndarray:
        """The public state before this agent's next round (agents.public)."""
        return public_state(hour, retail, feed_in, self.public, scale)

    def act(self, k: int, round_index: int, action: np.ndarray) -> Bid:
        """Apply an action for round ``k`` (layout: agents.spaces): curtail PV, run the
        battery, set the inverters' reactive power, form the bid."""
        if np.shape(action) != (ACTION_DIM,):
            raise ValueError(f"{self.spec.agent_id}: action must have shape ({ACTION_DIM},), "
                             f"got {np.shape(action)}")
        battery_frac, bid_share, q_frac, curtail_frac = (
            min(max(float(x), low), high) for x, (low, high) in zip(action, _BOX, strict=True))
        b, inv = self.spec.battery, self.spec.inverter
        limit_kw = b.charge_kw_max if battery_frac >= 0 else b.discharge_kw_max
        soc_before = self.soc
        step = step_battery(b, self.soc, battery_frac * limit_kw, self.dt_h)
        self.soc = step.soc
        load, pv = float(self.load_kw[k]), float(self.pv_kw[k])
        # what the PV inverter lets through: the curtailed share, and its rating
        pv_out = min(pv * (1.0 - curtail_frac), inv.pv_kva) if pv > 0 else 0.0
        q_max = reactive_capability_kvar(inv, pv, pv_out, step.battery_kw)
        q_kvar = 0.0 if self.spec.volt_var else q_frac * q_max
        surplus_kwh = (pv_out - load - step.battery_kw) * self.dt_h
        bid_kwh = bid_share * surplus_kwh
        self._pending = {
            "load_kw": load, "pv_kw": pv, "curtailed_kw": pv - pv_out, "q_kvar": q_kvar,
            "battery_kw": step.battery_kw, "battery_clip_kw": step.clip_kw,
            "soc_start": soc_before, "soc": step.soc, "surplus_kwh": surplus_kwh,
            "bid_kwh": bid_kwh,
        }
        return Bid(
            agent=self.spec.agent_id, bus=self.spec.bus, round_index=round_index,
            bid_kwh=bid_kwh, surplus_kwh=surplus_kwh,
            q_kvar=load * self.spec.q_per_p - q_kvar,
            volt_var_kva=(inv.pv_kva + inv.battery_kva) if self.spec.volt_var else 0.0,
            q_max_kvar=q_max,
        )

    def conclude(
        self,
        episode: int,
        round_index: int,
        time: str,
        settlement: Settlement,
        retail: float,
        feed_in: float,
        vm_pu: float,
        voltage_penalty: float,
        line_penalty: float,
        volt_var_q_kvar: float = 0.0,
        public: PublicOutcome | None = None,
    ) -> RoundRecord:
        """Book the round's settlement and grid signal (with the reactive power the
        volt-var inverters settled at, and the round's public outcome as this agent
        heard it); return its record."""
        if self._pending is None:
            raise RuntimeError(f"{self.spec.agent_id}: conclude() before act()")
        p = self._pending
        self._pending = None
        if public is not None:
            self.public = public
        # what the agent observes next: a signal it did not hear (NaN) keeps its last value
        last = self.signals
        self.signals = PublicSignals(
            *(new if math.isfinite(new) else old for new, old in (
                (settlement.sell_price_per_kwh, last.sell_price_per_kwh),
                (settlement.buy_price_per_kwh, last.buy_price_per_kwh),
                (settlement.sdr, last.sdr), (vm_pu, last.vm_pu))))
        return RoundRecord(
            episode=episode, round=round_index, time=time, agent=self.spec.agent_id,
            bus=self.spec.bus, load_kw=p["load_kw"], pv_kw=p["pv_kw"],
            curtailed_kw=p["curtailed_kw"], q_kvar=p["q_kvar"] + volt_var_q_kvar,
            battery_kw=p["battery_kw"], battery_clip_kw=p["battery_clip_kw"],
            soc=p["soc"], surplus_kwh=p["surplus_kwh"], bid_kwh=p["bid_kwh"],
            p2p_bought_kwh=settlement.p2p_bought_kwh, p2p_sold_kwh=settlement.p2p_sold_kwh,
            grid_import_kwh=settlement.grid_import_kwh,
            grid_export_kwh=settlement.grid_export_kwh,
            retail_price=retail, feed_in_price=feed_in,
            buy_price=settlement.buy_price_per_kwh, sell_price=settlement.sell_price_per_kwh,
            sdr=settlement.sdr, vm_pu=vm_pu, voltage_penalty=voltage_penalty,
            line_penalty=line_penalty, payment=settlement.payment,
            grid_only_payment=settlement.grid_only_payment,
            reward=-settlement.payment - voltage_penalty - line_penalty,
        )
