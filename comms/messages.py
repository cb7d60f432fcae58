"""The vocabulary the actors exchange, as frozen dataclasses of primitives.

Imports nothing from peergrid: it is the contract between prosumers, the market
operator and the grid operator in both runtimes.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


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
    """Reactive power drawn by the household (for the AC power flow)."""


@dataclass(frozen=True)
class GridSignal:
    """The grid operator's broadcast after the power flow of one round."""

    round_index: int
    vm_pu: dict[str, float]
    """Voltage magnitude per bus name."""
    converged: bool
    voltage_penalty: dict[str, float]
    """Penalty per agent id (currency) for this round."""
    max_line_loading_pct: float
