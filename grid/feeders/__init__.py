"""Feeder registry: builders with one signature, their buses and base loads.

Every builder is ``build(slack_vm_pu=..., with_base_loads=..., with_capacitors=...)``
and returns a balanced pandapower network whose bus names are stable ids; a feeder with
a per-phase model also has ``phases(with_capacitors=...)`` (``grid.threephase``). In a
market scenario the base loads are left out: the agents placed on the feeder are its
load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from peergrid.grid.feeders.ieee13 import BUSES as IEEE13_BUSES
from peergrid.grid.feeders.ieee13 import build_ieee13, phase_feeder
from peergrid.grid.threephase import PhaseFeeder

if TYPE_CHECKING:  # pandapower is imported by the builders, when a network is built:
    import pandapower as pp  # a per-phase run needs none (seconds of start-up)


@dataclass(frozen=True)
class FeederInfo:
    build: Callable[..., pp.pandapowerNet]
    summary: str
    phases: Callable[..., PhaseFeeder] | None = None
    """The per-phase model, for feeders that have one."""
    buses: tuple[str, ...] | None = None
    """Bus names in network order, where known without building the network (a test
    checks they are the built network's)."""


def _case33bw(slack_vm_pu: float, with_base_loads: bool) -> pp.pandapowerNet:
    from peergrid.grid.feeders.case33bw import build_case33bw

    return build_case33bw(slack_vm_pu, with_base_loads)


def _dickert_lv(slack_vm_pu: float, with_base_loads: bool) -> pp.pandapowerNet:
    from peergrid.grid.feeders.dickert_lv import build_dickert_lv

    return build_dickert_lv(slack_vm_pu, with_base_loads)


FEEDERS: dict[str, FeederInfo] = {
    "ieee13": FeederInfo(
        lambda slack_vm_pu=1.0, with_base_loads=False, with_capacitors=False: build_ieee13(
            slack_vm_pu=slack_vm_pu, with_spot_loads=with_base_loads,
            with_capacitors=with_capacitors),
        "IEEE 13-node test feeder, 4.16 kV, 14 buses, per phase or as a balanced equivalent",
        lambda with_capacitors=False: phase_feeder("kersting", with_capacitors=with_capacitors),
        tuple(IEEE13_BUSES)),
    "case33bw": FeederInfo(
        lambda slack_vm_pu=1.0, with_base_loads=False, with_capacitors=False: _case33bw(
            slack_vm_pu, with_base_loads),
        "Baran-Wu 33-bus feeder, 12.66 kV, 32 load buses"),
    "dickert_lv": FeederInfo(
        lambda slack_vm_pu=1.0, with_base_loads=False, with_capacitors=False: _dickert_lv(
            slack_vm_pu, with_base_loads),
        "Dickert LV residential feeder (long, cable), 0.4 kV, 120 load buses"),
}


def build_feeder(name: str, slack_vm_pu: float = 1.0, with_base_loads: bool = False,
                 with_capacitors: bool = False) -> pp.pandapowerNet:
    return FEEDERS[name].build(slack_vm_pu=slack_vm_pu, with_base_loads=with_base_loads,
                               with_capacitors=with_capacitors)


@cache
def bus_phases(name: str, per_phase: bool = True) -> dict[str, str]:
    """The phases each bus has in the feeder's per-phase model ("abc" everywhere for a
    balanced feeder or model)."""
    info = FEEDERS[name]
    if per_phase and info.phases is not None:
        return dict(info.phases().bus_phases)
    return {b: "abc" for b in feeder_buses(name)}


@cache
def bus_groups(name: str, agent_buses: tuple[str, ...] | None = None) -> dict[str, str]:
    """Each bus's electrical node (buses joined by closed switches, and dead ends without
    agents, are one: IEEE 13's "671/680/692"): where a voltage violation is counted and
    charged once (``FeederTopology.bus_groups``). A feeder with a per-phase model takes
    its topology from that model (the same buses, branches and switches; a test checks
    the groups agree), without building the pandapower network."""
    info = FEEDERS[name]
    if info.phases is not None:
        return info.phases().topology().bus_groups(agent_buses)
    from peergrid.grid.powerflow import topology_of

    return topology_of(build_feeder(name)).bus_groups(agent_buses)


@cache
def feeder_buses(name: str) -> tuple[str, ...]:
    """Bus names of a feeder in network order."""
    if FEEDERS[name].buses is not None:
        return FEEDERS[name].buses
    return tuple(str(b) for b in build_feeder(name).bus.name)


@cache
def base_loads(name: str) -> dict[str, tuple[float, float]]:
    """The feeder's own load per bus (kW, kvar), summed per bus, in network order."""
    net = build_feeder(name, with_base_loads=True)
    out: dict[str, tuple[float, float]] = {}
    for row in net.load.itertuples():
        bus = str(net.bus.name.at[row.bus])
        p, q = out.get(bus, (0.0, 0.0))
        out[bus] = (p + row.p_mw * 1000.0, q + row.q_mvar * 1000.0)
    order = {b: i for i, b in enumerate(feeder_buses(name))}
    return dict(sorted(out.items(), key=lambda kv: order[kv[0]]))
