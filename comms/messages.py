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
    """Net reactive power drawn at the meter: the load's minus the inverters' set-point
    (for the AC power flow)."""
    volt_var_kva: float = 0.0
    """> 0: the inverters follow the volt-var curve (grid.inverters) with this rating,
    their reactive power settled with the power flow; 0: set-point mode."""
    q_max_kvar: float = 0.0
    """Reactive power the inverters can supply next to their active power."""


@dataclass(frozen=True)
class GridSignal:
    """The grid operator's broadcast after the power flow of one round."""

    round_index: int
    vm_pu: dict[str, float]
    """Voltage magnitude per bus name."""
    converged: bool
    voltage_penalty: dict[str, float]
    """Each agent's share of this round's voltage-limit penalty (currency)."""
    line_penalty: dict[str, float]
    """Each agent's share of this round's line-overload penalty (currency)."""
    volt_var_q_kvar: dict[str, float]
    """Reactive power the volt-var inverters settled at (> 0 injected), per agent in
    volt-var mode."""
    max_line_loading_pct: float
