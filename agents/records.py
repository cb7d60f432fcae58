"""The per-agent, per-round record: the log's row, with units in the names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
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
    battery_kw: float
    """> 0 charging, < 0 discharging (after clipping)."""
    battery_clip_kw: float
    """Requested minus applied battery power."""
    soc: float
    """State of charge at the end of the round."""
    surplus_kwh: float
    """Net position: (pv − load − battery) × round length."""
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
    voltage_penalty: float
    payment: float
    """Currency paid this round (< 0: earned)."""
    grid_only_payment: float
    """What the same position would have cost trading only with the grid."""
    reward: float
    """−payment − voltage_penalty."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RoundRecord))
