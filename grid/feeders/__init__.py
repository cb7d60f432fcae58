"""Feeder registry: builders with one signature, their buses and base loads.

Every builder is ``build(slack_vm_pu=..., with_base_loads=...)`` and returns a
pandapower network whose bus names are stable ids. In a market scenario the base
loads are left out: the agents placed on the feeder are its load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import pandapower as pp

from peergrid.grid.feeders.case33bw import build_case33bw
from peergrid.grid.feeders.dickert_lv import build_dickert_lv
from peergrid.grid.feeders.ieee13 import build_ieee13


@dataclass(frozen=True)
class FeederInfo:
    build: Callable[..., pp.pandapowerNet]
    summary: str


FEEDERS: dict[str, FeederInfo] = {
    "ieee13": FeederInfo(
        lambda slack_vm_pu=1.0, with_base_loads=False: build_ieee13(
            slack_vm_pu=slack_vm_pu, with_spot_loads=with_base_loads),
        "IEEE 13-node test feeder, balanced equivalent, 4.16 kV, 14 buses"),
    "case33bw": FeederInfo(build_case33bw, "Baran-Wu 33-bus feeder, 12.66 kV, 32 load buses"),
    "dickert_lv": FeederInfo(
        build_dickert_lv, "Dickert LV residential feeder (long, cable), 0.4 kV, 120 load buses"),
}


def build_feeder(name: str, slack_vm_pu: float = 1.0,
                 with_base_loads: bool = False) -> pp.pandapowerNet:
    return FEEDERS[name].build(slack_vm_pu=slack_vm_pu, with_base_loads=with_base_loads)


@cache
def feeder_buses(name: str) -> tuple[str, ...]:
    """Bus names of a feeder in network order."""
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
