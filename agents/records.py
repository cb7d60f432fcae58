"""The per-agent, per-round record: the log's row, with units in the names."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class RoundRecord:
    """One agent in one round. Natural key: (episode, round, agent)."""

    episode: int
    round: int
    time: str
    agent: str
    bus: str
    load_kw: float
    pv_kw: float
    """PV output available this round (before curtailment)."""
    curtailed_kw: float
    """PV output not used: curtailed by the agent, or above the inverter's rating."""
    q_kvar: float
    """Reactive power of the inverters, > 0 injected (raises voltage), < 0 absorbed."""
    battery_kw: float
    """> 0 charging, < 0 discharging (after clipping)."""
    battery_clip_kw: float
    """Requested minus applied battery power."""
    soc: float
    """State of charge at the end of the round."""
    surplus_kwh: float
    """Net position: (pv − curtailed − load − battery) × round length."""
    bid_kwh: float
    """Signed bid: > 0 offered, < 0 requested."""
    p2p_bought_kwh: float
    p2p_sold_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float
    retail_price: float
    feed_in_price: float
    buy_price: float
    sell_price: float
    sdr: float
    vm_pu: float
    """Voltage at the agent's connection: of its phases, the one farthest from the
    middle of the band."""
    voltage_penalty: float
    """The agent's share of the voltage-limit penalties charged to it: at its electrical
    node and at nodes without agents upstream of it (grid.penalty)."""
    line_penalty: float
    """The agent's share of the overload penalty of lines upstream of it."""
    payment: float
    """Currency paid this round (< 0: earned)."""
    grid_only_payment: float
    """What the same position would have cost trading only with the grid."""
    reward: float
    """−payment − voltage_penalty − line_penalty."""

    def as_dict(self) -> dict[str, Any]:
        # every field is a plain number or string: a shallow copy (dataclasses.asdict
        # deep-copies, ten times slower, and this runs for every agent every round)
        return {name: getattr(self, name) for name in RECORD_COLUMNS}


RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RoundRecord))
