"""What a prosumer submits each round: the market clears it, the grid flows it.

A frozen dataclass of primitives, shared by both runtimes and sent on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bid:
    """A prosumer's submission for one round: its bid and its metered position."""

    agent: str
    bus: str
    round_index: int
    bid_kwh: float
    """Signed P2P quantity: > 0 offered for sale, < 0 requested."""
    surplus_kwh: float
    """Metered net position: pv + discharge − load − charge, times the round length."""
    q_kvar: float
    """Net reactive power drawn at the meter: the load's minus the inverters' set-point
    (for the AC power flow)."""
    volt_var_kva: float = 0.0
    """> 0: the inverters follow the volt-var curve (grid.inverters) with this rating,
    their reactive power settled with the power flow; 0: set-point mode."""
    q_max_kvar: float = 0.0
    """Reactive power the inverters can supply next to their active power."""
