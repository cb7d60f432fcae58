"""Fast power flow for radial feeders: a Z-bus fixed-point iteration, batched.

The admittance matrix, bus types, base values and base injections are read from
pandapower's own internal model (``net._ppc["internal"]``) after one ``runpp``, so
this solver and pandapower cannot disagree about the network. With the slack voltage
``v_s`` fixed, the PQ-bus voltages satisfy

    Y_LL v + Y_Ls v_s = conj(s / v)   ⇒   v = w + Z conj(s / v),

where ``Z = inv(Y_LL)`` and ``w = -Z Y_Ls v_s`` (the no-load voltages). On a radial
feeder the map is a contraction for any load it can carry, so a few matrix products
solve a round; a batch of rounds is the same iteration on an (n × B) matrix.

Columns the iteration does not settle fall back to Newton-Raphson (using pandapower's
Jacobian); a column that Newton cannot solve either is reported ``converged=False``
with NaN voltages, never as wrong numbers.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:  # imported where used: importing pandapower takes seconds
    import pandapower as pp

from peergrid.grid.powerflow import PowerFlowResult, line_names, topology_of


@dataclass(frozen=True)
class BatchResult:
    """Results of B power flows; arrays are (B, n_bus) or (B, n_line)."""

    converged: np.ndarray
    vm_pu: np.ndarray
    va_degree: np.ndarray
    line_loading_pct: np.ndarray
    iterations: int

    def __getitem__(self, b: int) -> PowerFlowResult:
        return PowerFlowResult(bool(self.converged[b]), self.vm_pu[b], self.va_degree[b],
                               self.line_loading_pct[b])


class ZBusIteration:
    """The Z-bus fixed point (and its Newton fallback) on any admittance matrix.

    ``ybus`` is the (n x n) admittance matrix in per unit, ``slack`` the indices whose
    voltages ``v_slack`` are held, every other index a constant-power node. Shared by
    the balanced solver (pandapower's own matrix) and the per-phase one
    (``grid.threephase``), so both solve with one implementation.
    """

    def __init__(self, ybus, slack: np.ndarray, v_slack: np.ndarray, tol_pu: float = 1e-11,
                 max_iter: int = 60, newton_max_iter: int = 30) -> None:
        ybus = sp.csr_matrix(ybus)
        n = ybus.shape[0]
        self.n = n
        self.slack = np.asarray(slack, dtype=int)
        self.v_slack = np.asarray(v_slack, dtype=complex)
        self.pq = np.setdiff1d(np.arange(n), self.slack)
        self.tol_pu, self.max_iter, self.newton_max_iter = tol_pu, max_iter, newton_max_iter
        self.ybus = ybus
        dense = ybus.toarray()
        self.z = np.linalg.inv(dense[np.ix_(self.pq, self.pq)])
        self.w = -self.z @ (dense[np.ix_(self.pq, self.slack)] @ self.v_slack)

    def solve(self, s: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Voltages of every node (n, B) for injections ``s`` (n_pq, B), pu, > 0 generation;
        columns not ``valid`` (bad input) or that neither method settles are NaN and False
        in the returned mask."""
        v, settled, iterations = self.fixed_point(s)
        settled &= valid
        for b in np.flatnonzero(~settled & valid):
            v_b = self.newton(s[:, b])
            if v_b is not None:
                v[:, b], settled[b] = v_b, True
        full = np.empty((self.n, s.shape[1]), dtype=complex)
        full[self.slack] = self.v_slack[:, None]
        full[self.pq] = v
        full[:, ~settled] = np.nan
        return full, settled, iterations

    def fixed_point(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Z-bus iteration on all columns; returns (v, settled mask, iterations)."""
        w = self.w[:, None]
        v = np.repeat(w, s.shape[1], axis=1)
        sc = np.conj(s)
        step = np.full(s.shape[1], np.inf)
        k = 0
        with np.errstate(all="ignore"):
            for k in range(1, self.max_iter + 1):
                v_new = w + self.z @ (sc / np.conj(v))
                step = np.abs(v_new - v).max(axis=0)
                v = v_new
                if not step.max() > self.tol_pu:  # also stops when every column is NaN
                    break
        settled = step <= self.tol_pu
        return v, settled, k

    def fixed_point_currents(self, current: Callable[[np.ndarray], np.ndarray]
                             ) -> np.ndarray | None:
        """One column with voltage-dependent loads: ``current(v)`` gives the injected
        current of every node (pu, n) at voltages ``v`` (n); None if not settled."""
        v = np.zeros(self.n, dtype=complex)
        v[self.slack] = self.v_slack
        v[self.pq] = self.w
        with np.errstate(all="ignore"):
            for _ in range(self.max_iter):
                v_new = self.w + self.z @ current(v)[self.pq]
                step = np.max(np.abs(v_new - v[self.pq]))
                v[self.pq] = v_new
                if step <= self.tol_pu:
                    return v
        return None

    def newton(self, s_pq: np.ndarray) -> np.ndarray | None:
        """Newton-Raphson for one column the fixed point did not settle (heavy loading)."""
        pq, n_pq = self.pq, len(self.pq)
        sbus = np.zeros(self.n, dtype=complex)
        sbus[pq] = s_pq
        v = np.zeros(self.n, dtype=complex)
        v[self.slack] = self.v_slack
        v[pq] = self.w
        from pandapower.pypower.dSbus_dV import dSbus_dV

        tol = self.tol_pu * 1e-2
        with np.errstate(all="ignore"):
            for _ in range(self.newton_max_iter):
                mis = (v * np.conj(self.ybus @ v) - sbus)[pq]
                if np.max(np.abs(mis)) < tol:
                    return v[pq]
                ds_dvm, ds_dva = (m.toarray()[np.ix_(pq, pq)] for m in dSbus_dV(self.ybus, v))
                j = np.block([[ds_dva.real, ds_dvm.real], [ds_dva.imag, ds_dvm.imag]])
                try:
                    dx = np.linalg.solve(j, -np.concatenate([mis.real, mis.imag]))
                except np.linalg.LinAlgError:
                    return None
                va = np.angle(v[pq]) + dx[:n_pq]
                vm = np.abs(v[pq]) + dx[n_pq:]
                if not np.isfinite(vm).all() or (vm <= 0).any():
                    return None
                v[pq] = vm * np.exp(1j * va)
        return None


class ZBusSolver:
    """Solves rounds from bus loads (kW, kvar; > 0 consumption) in ``node_names`` order.

    A balanced feeder has one node per bus, so ``node_names`` are its bus names.
    """

    def __init__(self, net: pp.pandapowerNet, tol_pu: float = 1e-11, max_iter: int = 60,
                 newton_max_iter: int = 30) -> None:
        import pandapower as pp

        self.net = copy.deepcopy(net)
        self.bus_names = [str(n) for n in self.net.bus.name]
        self.node_names = list(self.bus_names)
        self.node_bus = list(self.bus_names)
        self.line_names = line_names(self.net)
        self.topology = topology_of(self.net)
        _check_supported(self.net)
        pp.runpp(self.net, numba=False)
        ppci = self.net._ppc["internal"]
        ref, pv, pq = ppci["ref"], ppci["pv"], ppci["pq"]
        if len(ref) != 1 or len(pv) != 0:
            raise ValueError(
                f"feeder {self.net.name!r}: the Z-bus solver needs exactly one slack bus and "
                f"no voltage-controlled buses (found {len(ref)} slack, {len(pv)} PV)"
            )
        self.base_mva = float(ppci["baseMVA"])
        self.core = ZBusIteration(ppci["Ybus"], ref, ppci["V"][ref], tol_pu, max_iter,
                                  newton_max_iter)
        n_int = ppci["Ybus"].shape[0]
        pq = self.core.pq

        # pandapower bus -> internal bus (switch-fused buses share one internal bus)
        lookup = self.net._pd2ppc_lookups["bus"][self.net.bus.index.to_numpy()]
        self._bus_to_int = lookup.astype(int)
        pq_pos = np.full(n_int, -1)
        pq_pos[pq] = np.arange(len(pq))
        # aggregation: S_pq (n_pq,) = A @ S_bus (n_bus,)
        self._agg = np.zeros((len(pq), len(self.bus_names)))
        for j, i_int in enumerate(self._bus_to_int):
            if pq_pos[i_int] >= 0:
                self._agg[pq_pos[i_int], j] = 1.0

        # base injections already in the net (its own loads, sgens), pu, > 0 generation
        bus_tab = ppci["bus"]
        self._s_base = -(bus_tab[pq, 2] + 1j * bus_tab[pq, 3]) / self.base_mva

        # line currents: I_from = Yf V, I_to = Yt V; ppci keeps in-service branches only,
        # an out-of-service line carries nothing (loading 0 %, as pandapower reports)
        start, end = self.net._pd2ppc_lookups["branch"].get("line", (0, 0))
        branch_is = np.asarray(ppci["branch_is"], dtype=bool)
        ppci_row = np.cumsum(branch_is) - 1
        line_is = branch_is[start:end]
        rows = ppci_row[start:end][line_is]
        line = self.net.line
        self._line_is = line_is
        self._yf = ppci["Yf"].toarray()[rows]
        self._yt = ppci["Yt"].toarray()[rows]
        base_kv = bus_tab[:, 9]
        f_bus = ppci["branch"][rows, 0].real.astype(int)
        t_bus = ppci["branch"][rows, 1].real.astype(int)
        i_base_ka = self.base_mva / (math.sqrt(3) * base_kv)
        i_max_ka = (line.max_i_ka * line.df * line.parallel).to_numpy()[line_is]
        self._from_scale = i_base_ka[f_bus] / i_max_ka * 100.0
        self._to_scale = i_base_ka[t_bus] / i_max_ka * 100.0
        self.n_line = end - start

    # ---- public ------------------------------------------------------------------

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> PowerFlowResult:
        return self.solve_batch(*single_column(p_kw, q_kvar, len(self.node_names)))[0]

    def _voltages(self, p_kw: np.ndarray, q_kvar: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, int]:
        p_kw, q_kvar, finite = checked_batch(p_kw, q_kvar, len(self.node_names))
        s_load_mva = (p_kw + 1j * q_kvar) / 1000.0
        s = self._s_base[:, None] - (self._agg @ s_load_mva.T) / self.base_mva  # (n_pq, B)
        return self.core.solve(s, finite)

    def conductor_currents(self, p_kw: np.ndarray, q_kvar: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vm (B, buses), from-end current phasor of every in-service line in % of its
        rating (B, lines in service), the line of each): see ``ThreePhaseSolver``."""
        v_int, _, _ = self._voltages(p_kw, q_kvar)
        return (np.abs(v_int[self._bus_to_int].T), (self._yf @ v_int * self._from_scale[:, None]).T,
                np.flatnonzero(self._line_is))

    def solve_batch(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> BatchResult:
        """B power flows at once; ``p_kw``, ``q_kvar`` are (B, n_bus)."""
        v_int, ok, iterations = self._voltages(p_kw, q_kvar)
        v_bus = v_int[self._bus_to_int].T  # (B, n_bus)
        i_from = np.abs(self._yf @ v_int).T
        i_to = np.abs(self._yt @ v_int).T
        loading = np.zeros((v_int.shape[1], self.n_line))
        loading[:, self._line_is] = np.maximum(i_from * self._from_scale, i_to * self._to_scale)
        loading[~ok] = np.nan
        return BatchResult(ok, np.abs(v_bus), np.degrees(np.angle(v_bus)), loading, iterations)


def single_column(p_kw, q_kvar, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One round's injections as a batch of one, shape-checked."""
    if np.shape(p_kw) != (n,) or np.shape(q_kvar) != (n,):
        raise ValueError(f"injections must have shape ({n},), got {np.shape(p_kw)}, "
                         f"{np.shape(q_kvar)}")
    return np.asarray(p_kw)[None, :], np.asarray(q_kvar)[None, :]


def checked_batch(p_kw, q_kvar, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p, q with non-finite columns zeroed, mask of finite columns) of a (B, n) batch."""
    p_kw, q_kvar = np.asarray(p_kw, dtype=float), np.asarray(q_kvar, dtype=float)
    if p_kw.ndim != 2 or p_kw.shape[1] != n or q_kvar.shape != p_kw.shape:
        raise ValueError(f"injections must have shape (B, {n}), got {p_kw.shape}, "
                         f"{q_kvar.shape}")
    finite = np.isfinite(p_kw).all(axis=1) & np.isfinite(q_kvar).all(axis=1)
    return (np.where(finite[:, None], p_kw, 0.0), np.where(finite[:, None], q_kvar, 0.0),
            finite)


def _check_supported(net: pp.pandapowerNet) -> None:
    """Refuse elements the Z-bus model does not represent, rather than mis-solve them."""
    unsupported = [t for t in ("gen", "storage", "ward", "xward", "impedance", "dcline",
                               "trafo3w", "svc", "tcsc", "ssc", "vsc")
                   if t in net and len(net[t]) and net[t].get("in_service", True).any()]
    if unsupported:
        raise ValueError(f"feeder {net.name!r}: Z-bus solver does not support {unsupported}")
    for col in ("const_z_percent", "const_i_percent", "const_z_p_percent", "const_i_p_percent",
                "const_z_q_percent", "const_i_q_percent"):
        if col in net.load and (net.load[col].fillna(0) != 0).any():
            raise ValueError(f"feeder {net.name!r}: load.{col} != 0; the Z-bus solver "
                             "models constant-power loads only")
    if not net.trafo.in_service.all():
        raise ValueError(f"feeder {net.name!r}: out-of-service transformers are not supported")
