"""What the grid operator reports after the power flow of one round."""

from __future__ import annotations

from dataclasses import dataclass


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
