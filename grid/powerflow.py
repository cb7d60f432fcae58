"""Power flow behind one small interface, so a faster solver can replace pandapower.

A solver is built once from a pandapower network and then solves rounds from the
vector of bus loads (kW, kvar; positive = consumption, negative = injection), in the
order of ``bus_names``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandapower as pp

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PowerFlowResult:
    converged: bool
    vm_pu: np.ndarray
    """Voltage magnitude per bus (NaN when not converged)."""
    va_degree: np.ndarray
    line_loading_pct: np.ndarray


class Solver(Protocol):
    bus_names: list[str]
    line_names: list[str]

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult: ...


def line_names(net: pp.pandapowerNet) -> list[str]:
    """Line names for logs: the network's own, else "line<index>"."""
    return [str(n) if isinstance(n, str) and n else f"line{i}"
            for i, n in zip(net.line.index, net.line.name, strict=True)]


class PandapowerSolver:
    """Reference solver: ``pandapower.runpp`` (Newton-Raphson) on a private copy."""

    def __init__(self, net: pp.pandapowerNet) -> None:
        self.net = copy.deepcopy(net)
        self.bus_names = [str(n) for n in self.net.bus.name]
        self.line_names = line_names(self.net)
        self._load_idx = np.array(
            [pp.create_load(self.net, bus, p_mw=0.0, q_mvar=0.0, name=f"agents@{name}")
             for bus, name in zip(self.net.bus.index, self.bus_names, strict=True)]
        )

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult:
        n = len(self.bus_names)
        if p_kw.shape != (n,) or q_kvar.shape != (n,):
            raise ValueError(f"injections must have shape ({n},), got {p_kw.shape}, {q_kvar.shape}")
        self.net.load.loc[self._load_idx, "p_mw"] = p_kw / 1000.0
        self.net.load.loc[self._load_idx, "q_mvar"] = q_kvar / 1000.0
        try:
            pp.runpp(self.net, numba=False, max_iteration=30)
        except pp.LoadflowNotConverged:
            logger.warning("power flow did not converge (total load %.1f kW)", p_kw.sum())
            nan = np.full(n, np.nan)
            return PowerFlowResult(False, nan, nan.copy(), np.full(len(self.net.line), np.nan))
        return PowerFlowResult(
            True,
            self.net.res_bus.vm_pu.to_numpy(copy=True),
            self.net.res_bus.va_degree.to_numpy(copy=True),
            self.net.res_line.loading_percent.to_numpy(copy=True),
        )
