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
from dataclasses import dataclass

import numpy as np
import pandapower as pp
from pandapower.pypower.dSbus_dV import dSbus_dV

from peergrid.grid.powerflow import PowerFlowResult, line_names


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


class ZBusSolver:
    """Solves rounds from bus loads (kW, kvar; > 0 consumption) in ``bus_names`` order."""

    def __init__(self, net: pp.pandapowerNet, tol_pu: float = 1e-11, max_iter: int = 60,
                 newton_max_iter: int = 30) -> None:
        self.net = copy.deepcopy(net)
        self.bus_names = [str(n) for n in self.net.bus.name]
        self.line_names = line_names(self.net)
        self.tol_pu, self.max_iter, self.newton_max_iter = tol_pu, max_iter, newton_max_iter
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
        ybus = ppci["Ybus"].toarray()
        self._ybus = ppci["Ybus"].tocsr()
        self._ref, self._pq = int(ref[0]), np.asarray(pq)
        self._v_slack = complex(ppci["V"][self._ref])
        n_int = ybus.shape[0]
        self._n_int = n_int

        # pandapower bus -> internal bus (switch-fused buses share one internal bus)
        lookup = self.net._pd2ppc_lookups["bus"][self.net.bus.index.to_numpy()]
        self._bus_to_int = lookup.astype(int)
        pq_pos = np.full(n_int, -1)
        pq_pos[self._pq] = np.arange(len(self._pq))
        # aggregation: S_pq (n_pq,) = A @ S_bus (n_bus,)
        self._agg = np.zeros((len(self._pq), len(self.bus_names)))
        for j, i_int in enumerate(self._bus_to_int):
            if pq_pos[i_int] >= 0:
                self._agg[pq_pos[i_int], j] = 1.0
        self._slack_buses = np.flatnonzero(self._bus_to_int == self._ref)

        # base injections already in the net (its own loads, sgens), pu, > 0 generation
        bus_tab = ppci["bus"]
        self._s_base = -(bus_tab[self._pq, 2] + 1j * bus_tab[self._pq, 3]) / self.base_mva

        y_ll = ybus[np.ix_(self._pq, self._pq)]
        y_ls = ybus[self._pq, self._ref]
        self._z = np.linalg.inv(y_ll)
        self._w = -self._z @ (y_ls * self._v_slack)

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
        n = len(self.bus_names)
        if np.shape(p_kw) != (n,) or np.shape(q_kvar) != (n,):
            raise ValueError(f"injections must have shape ({n},), got {np.shape(p_kw)}, "
                             f"{np.shape(q_kvar)}")
        return self.solve_batch(np.asarray(p_kw)[None, :], np.asarray(q_kvar)[None, :])[0]

    def solve_batch(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> BatchResult:
        """B power flows at once; ``p_kw``, ``q_kvar`` are (B, n_bus)."""
        p_kw, q_kvar = np.asarray(p_kw, dtype=float), np.asarray(q_kvar, dtype=float)
        n = len(self.bus_names)
        if p_kw.ndim != 2 or p_kw.shape[1] != n or q_kvar.shape != p_kw.shape:
            raise ValueError(f"injections must have shape (B, {n}), got {p_kw.shape}, "
                             f"{q_kvar.shape}")
        batch = p_kw.shape[0]
        finite = np.isfinite(p_kw).all(axis=1) & np.isfinite(q_kvar).all(axis=1)
        s_load_mva = (np.where(finite[:, None], p_kw, 0.0)
                      + 1j * np.where(finite[:, None], q_kvar, 0.0)) / 1000.0
        s = self._s_base[:, None] - (self._agg @ s_load_mva.T) / self.base_mva  # (n_pq, B)

        v, settled, iterations = self._fixed_point(s)
        for b in np.flatnonzero(~settled & finite):
            v_b = self._newton(s[:, b])
            if v_b is not None:
                v[:, b], settled[b] = v_b, True
        ok = settled & finite

        v_int = np.empty((self._n_int, batch), dtype=complex)
        v_int[self._ref] = self._v_slack
        v_int[self._pq] = v
        v_int[:, ~ok] = np.nan
        v_bus = v_int[self._bus_to_int].T  # (B, n_bus)
        i_from = np.abs(self._yf @ v_int).T
        i_to = np.abs(self._yt @ v_int).T
        loading = np.zeros((batch, self.n_line))
        loading[:, self._line_is] = np.maximum(i_from * self._from_scale, i_to * self._to_scale)
        loading[~ok] = np.nan
        return BatchResult(ok, np.abs(v_bus), np.degrees(np.angle(v_bus)), loading, iterations)

    # ---- iterations --------------------------------------------------------------

    def _fixed_point(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Z-bus iteration on all columns; returns (v, settled mask, iterations)."""
        w = self._w[:, None]
        v = np.repeat(w, s.shape[1], axis=1)
        sc = np.conj(s)
        step = np.full(s.shape[1], np.inf)
        k = 0
        with np.errstate(all="ignore"):
            for k in range(1, self.max_iter + 1):
                v_new = w + self._z @ (sc / np.conj(v))
                step = np.abs(v_new - v).max(axis=0)
                v = v_new
                if not step.max() > self.tol_pu:  # also stops when every column is NaN
                    break
        settled = step <= self.tol_pu
        return v, settled, k

    def _newton(self, s_pq: np.ndarray) -> np.ndarray | None:
        """Newton-Raphson for one column the fixed point did not settle (heavy loading)."""
        pq, n_pq = self._pq, len(self._pq)
        sbus = np.zeros(self._n_int, dtype=complex)
        sbus[pq] = s_pq
        v = np.full(self._n_int, self._v_slack, dtype=complex)
        v[pq] = self._w
        tol = self.tol_pu * 1e-2
        with np.errstate(all="ignore"):
            for _ in range(self.newton_max_iter):
                mis = (v * np.conj(self._ybus @ v) - sbus)[pq]
                if np.max(np.abs(mis)) < tol:
                    return v[pq]
                ds_dvm, ds_dva = (m.toarray()[np.ix_(pq, pq)] for m in dSbus_dV(self._ybus, v))
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
