"""Perfect-foresight optima over the continuous evaluation window: the physical limit.

P2P payments are transfers inside the community, so with every position bid into the
market the community pays only for its net grid position: import at retail, export at
the feed-in tariff. Knowing every load and PV value of the window, the schedule of
batteries (and, for the voltage-aware optimum, PV curtailment and inverter reactive
power) that minimises that cost is a linear program, solved with scipy's HiGHS:

    min Σ_t dt (λ_buy,t I_t − λ_sell,t X_t)  (+ 1e-6 per kWh of battery throughput, so
                                              that it never charges and discharges at once)
    s.t. Σ_i (pv_it − u_it − load_it − c_it + d_it) = X_t − I_t          (community balance)
         e_it = e_i,t−1 + dt (η_c c_it − d_it / η_d),  e_i,−1 = soc_init · cap
         e_i,T−1 ≥ e_i,−1          (the window ends with at least the charge it began with)
         soc_min · cap ≤ e_it ≤ soc_max · cap,  0 ≤ c_it ≤ c_max,  0 ≤ d_it ≤ d_max
         0 ≤ u_it ≤ pv_it,  |q_it| ≤ the inverters' reactive capability, I_t, X_t ≥ 0

The **voltage-blind** optimum has no network constraint (u = q = 0). The
**voltage-aware** optimum adds, for every round, every node and every line,

    vm_min + m ≤ vm_0 + J_p (x − x_0) + J_q (q − q_0) ≤ vm_max − m,
    loading_0 + L_p (x − x_0) + L_q (q − q_0) ≤ 100 % − m_line,

the AC power flow linearised around the current schedule (x: each agent's net export,
q: its inverters' reactive power; sensitivities by finite differences with the feeder's
own batched solver, per phase on a per-phase feeder). It is solved by successive
linearisation: solve, run the AC power flow on the result, re-linearise there and widen
the margins by any violation the AC flow still shows, until the AC flow has none.
Both schedules are then replayed through the same env as every policy (so costs,
penalties and voltages come from the same code) and the report shows what that replay
measured.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from peergrid.agents.devices import PV_INVERTER_ONLINE_PU, reactive_capability_kvar
from peergrid.scenarios.runtime.community import Community

THROUGHPUT_COST = 1e-6
"""Cost per kWh charged or discharged: breaks the tie that would let the LP charge and
discharge in the same round (the replayed battery takes one net power)."""
REACTIVE_COST = 1e-4
"""Cost per kvarh of inverter reactive power (0.25 % of the cheapest energy price): a
tie-breaker standing for inverter losses, which keeps the optimum from circulating
reactive power it does not need (free in a linear model, not in the AC flow)."""
POLYGON_SIDES = 16
"""Sides of the polygon inscribed in a conductor's current circle |I| <= rating."""


@dataclass
class Schedule:
    """Per round and agent (T x N): battery power (> 0 charging), curtailed PV, inverter
    reactive power (> 0 injected)."""

    battery_kw: np.ndarray
    curtailed_kw: np.ndarray
    q_kvar: np.ndarray
    info: dict[str, float] = field(default_factory=dict)


@dataclass
class _Data:
    """The window's data as arrays (T rounds x N agents)."""

    dt: float
    retail: np.ndarray
    feed_in: np.ndarray
    load: np.ndarray
    pv: np.ndarray
    """PV the inverter can deliver: the output, up to the inverter's rating."""
    q_load: np.ndarray
    q_max: np.ndarray
    """Reactive capability the LP may use: PV inverter at full PV output (while online),
    battery inverter at its full power: never more than the prosumer will allow."""


def _pv_available(p, pv_kw):
    return np.minimum(pv_kw, p.spec.inverter.pv_kva) if p.spec.pv_kwp > 0 else pv_kw * 0.0


def _data(c: Community) -> _Data:
    n = c.n_rounds
    tariffs = [c.market.tariff(int(h)) for h in c.hours[:n]]
    load = np.array([p.load_kw[:n] for p in c.prosumers]).T
    pv = np.array([_pv_available(p, p.pv_kw[:n]) for p in c.prosumers]).T
    q_load = load * np.array([p.spec.q_per_p for p in c.prosumers])
    q_max = np.zeros_like(load)
    for i, p in enumerate(c.prosumers):
        inv, b = p.spec.inverter, p.spec.battery
        online = (inv.pv_kva > 0) & (pv[:, i] >= PV_INVERTER_ONLINE_PU * inv.pv_kva)
        q_max[:, i] = np.where(online, np.sqrt(np.maximum(inv.pv_kva ** 2 - pv[:, i] ** 2, 0.0)),
                               0.0)
        p_batt = max(b.charge_kw_max, b.discharge_kw_max) if b.present else 0.0
        q_max[:, i] += np.sqrt(max(inv.battery_kva ** 2 - p_batt ** 2, 0.0))
    return _Data(c.dt_h, np.array([t.retail_price_per_kwh for t in tariffs]),
                 np.array([t.feed_in_price_per_kwh for t in tariffs]), load, pv, q_load, q_max)


class _Layout:
    """Column indices of the LP's variables."""

    def __init__(self, c: Community, d: _Data, network: bool) -> None:
        T, N = d.load.shape
        self.T, self.N = T, N
        self.batteries = [i for i, p in enumerate(c.prosumers) if p.spec.battery.present]
        self.pvs = [i for i in range(N) if network and d.pv[:, i].max() > 0]
        self.inverters = [i for i in range(N) if network and d.q_max[:, i].max() > 0]
        pos = 0

        def block(k: int) -> np.ndarray:
            nonlocal pos
            out = np.arange(pos, pos + k * T).reshape(k, T)
            pos += k * T
            return out

        nb = len(self.batteries)
        self.c, self.d, self.e = block(nb), block(nb), block(nb)
        self.u = block(len(self.pvs))
        # reactive power q = q_plus - q_minus, so its magnitude can carry a cost
        self.q_plus, self.q_minus = block(len(self.inverters)), block(len(self.inverters))
        self.imp, self.exp = block(1)[0], block(1)[0]
        self.n = pos

    def export_rows(self) -> sp.csr_matrix:
        """A: the controllable part of each agent's net export, x = (pv - load) + A @ z,
        flattened as (t, i) -> t*N + i."""
        T, N = self.T, self.N
        rows, cols, vals = [], [], []
        for j, i in enumerate(self.batteries):
            for t in range(T):
                rows += [t * N + i, t * N + i]
                cols += [self.c[j, t], self.d[j, t]]
                vals += [-1.0, 1.0]
        for j, i in enumerate(self.pvs):
            for t in range(T):
                rows.append(t * N + i)
                cols.append(self.u[j, t])
                vals.append(-1.0)
        return sp.csr_matrix((vals, (rows, cols)), shape=(T * N, self.n))

    def q_rows(self) -> sp.csr_matrix:
        """Q = A @ z (inverter reactive power, flattened (t, i))."""
        T, N = self.T, self.N
        rows = [t * N + i for j, i in enumerate(self.inverters) for t in range(T)]
        plus = [self.q_plus[j, t] for j, _ in enumerate(self.inverters) for t in range(T)]
        minus = [self.q_minus[j, t] for j, _ in enumerate(self.inverters) for t in range(T)]
        return sp.csr_matrix((np.r_[np.ones(len(rows)), -np.ones(len(rows))],
                              (rows + rows, plus + minus)), shape=(T * N, self.n))


def _solve_lp(c: Community, d: _Data, lay: _Layout,
              network_rows: tuple[sp.csr_matrix, np.ndarray] | None = None) -> np.ndarray:
    T, N = lay.T, lay.N
    cost = np.zeros(lay.n)
    cost[lay.imp] = d.retail * d.dt
    cost[lay.exp] = -d.feed_in * d.dt
    cost[lay.c.ravel()] = THROUGHPUT_COST * d.dt
    cost[lay.d.ravel()] = THROUGHPUT_COST * d.dt
    cost[lay.q_plus.ravel()] = REACTIVE_COST * d.dt
    cost[lay.q_minus.ravel()] = REACTIVE_COST * d.dt
    bounds = np.zeros((lay.n, 2))
    bounds[:, 1] = np.inf
    eq_rows: list[sp.csr_matrix] = []
    eq_b: list[np.ndarray] = []
    # community balance: Σ_i x_it − X_t + I_t = −Σ_i (pv − load)_t
    ax = lay.export_rows()
    agg = sp.kron(sp.eye(T), np.ones((1, N)), format="csr")
    bal = agg @ ax
    bal = bal.tolil()
    for t in range(T):
        bal[t, lay.exp[t]] = -1.0
        bal[t, lay.imp[t]] = 1.0
    eq_rows.append(bal.tocsr())
    eq_b.append(-(d.pv - d.load).sum(axis=1))
    for j, i in enumerate(lay.batteries):
        b = c.prosumers[i].spec.battery
        e0 = b.soc_init * b.capacity_kwh
        rows = sp.lil_matrix((T, lay.n))
        rhs = np.zeros(T)
        for t in range(T):
            rows[t, lay.e[j, t]] = 1.0
            rows[t, lay.c[j, t]] = -d.dt * b.eta_charge
            rows[t, lay.d[j, t]] = d.dt / b.eta_discharge
            if t > 0:
                rows[t, lay.e[j, t - 1]] = -1.0
            else:
                rhs[t] = e0
        eq_rows.append(rows.tocsr())
        eq_b.append(rhs)
        bounds[lay.c[j]] = (0.0, b.charge_kw_max)
        bounds[lay.d[j]] = (0.0, b.discharge_kw_max)
        bounds[lay.e[j]] = (b.soc_min * b.capacity_kwh, b.soc_max * b.capacity_kwh)
        bounds[lay.e[j, T - 1], 0] = e0  # the window ends with at least its initial charge
    for j, i in enumerate(lay.pvs):
        bounds[lay.u[j], 1] = d.pv[:, i]
    for j, i in enumerate(lay.inverters):
        bounds[lay.q_plus[j], 1] = d.q_max[:, i]
        bounds[lay.q_minus[j], 1] = d.q_max[:, i]
    a_ub, b_ub = network_rows if network_rows is not None else (None, None)
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=sp.vstack(eq_rows).tocsr(),
                  b_eq=np.concatenate(eq_b), bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"optimum LP over {c.days} days from {c.start}: {res.message}")
    return res.x


def _schedule(lay: _Layout, z: np.ndarray) -> Schedule:
    T, N = lay.T, lay.N
    battery, curtailed, q = np.zeros((T, N)), np.zeros((T, N)), np.zeros((T, N))
    for j, i in enumerate(lay.batteries):
        battery[:, i] = z[lay.c[j]] - z[lay.d[j]]
    for j, i in enumerate(lay.pvs):
        curtailed[:, i] = z[lay.u[j]]
    for j, i in enumerate(lay.inverters):
        q[:, i] = z[lay.q_plus[j]] - z[lay.q_minus[j]]
    return Schedule(battery, np.clip(curtailed, 0.0, None), q)


def blind_schedule(c: Community) -> Schedule:
    """The voltage-blind optimum: batteries only, no network constraint."""
    t0 = time.perf_counter()
    d = _data(c)
    lay = _Layout(c, d, network=False)
    s = _schedule(lay, _solve_lp(c, d, lay))
    s.info = {"solve_s": time.perf_counter() - t0, "iterations": 1}
    return s


# ---- the network, linearised ---------------------------------------------------------

def _flows(solver, shares: np.ndarray, x: np.ndarray, q_meter: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """(vm (B, nodes), conductor current phasors in % of rating (B, conductors)) for the
    agents' net export x and meter reactive draw q_meter (B, N)."""
    vm, current, _ = solver.conductor_currents(-(x @ shares.T), q_meter @ shares.T)
    if not np.isfinite(vm).all():
        raise RuntimeError("optimum: a power flow of the schedule did not converge")
    return vm, current


def _linearise(solver, shares: np.ndarray, x0: np.ndarray, qm0: np.ndarray, step: float):
    """Per round: node voltages and conductor current phasors at (x0, qm0) and their
    derivatives with respect to each agent's export (kW) and injected reactive power
    (kvar), by forward differences, every round and agent in one batch. Shapes: vm0
    (T, nodes), jv_p, jv_q (T, nodes, N), i0 (T, conductors) complex, ji_p, ji_q."""
    T, N = x0.shape
    eye = np.eye(N) * step
    # columns: the base point, +step export per agent, +step injected Q per agent
    xs = np.concatenate([x0[:, None], x0[:, None] + eye[None], np.repeat(x0[:, None], N, 1)], 1)
    qs = np.concatenate([qm0[:, None], np.repeat(qm0[:, None], N, 1), qm0[:, None] - eye[None]],
                        1)
    vm, cur = _flows(solver, shares, xs.reshape(-1, N), qs.reshape(-1, N))
    vm, cur = vm.reshape(T, 2 * N + 1, -1), cur.reshape(T, 2 * N + 1, -1)
    jv = ((vm[:, 1:] - vm[:, :1]) / step).transpose(0, 2, 1)  # (T, nodes, 2N)
    ji = ((cur[:, 1:] - cur[:, :1]) / step).transpose(0, 2, 1)
    return vm[:, 0], jv[..., :N], jv[..., N:], cur[:, 0], ji[..., :N], ji[..., N:]


def _network_rows(lay: _Layout, lin, x0: np.ndarray, q0: np.ndarray, xfix: np.ndarray,
                  vm_min: float, vm_max: float, margin_v: np.ndarray, margin_l: np.ndarray,
                  watched: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """A_ub z <= b_ub: the linearised limits of every round. A quantity y (a voltage, a
    current phasor) is y0 + J_p (x − x0) + J_q (q − q0) with x = xfix + A_x z and
    q = A_q z; a conductor's current stays inside the polygon inscribed in its rating
    circle (only the ``watched`` (round, conductor) pairs: those loaded enough to matter)."""
    vm0, jvp, jvq, i0, jip, jiq = lin
    T, N = x0.shape
    ax = lay.export_rows()
    aq = lay.q_rows()
    angles = np.exp(-2j * np.pi * np.arange(POLYGON_SIDES) / POLYGON_SIDES)
    inscribed = np.cos(np.pi / POLYGON_SIDES)
    blocks, rhs = [], []
    for t in range(T):
        ax_t, aq_t = ax[t * N:(t + 1) * N], aq[t * N:(t + 1) * N]
        keep = (np.abs(jvp[t]).sum(1) + np.abs(jvq[t]).sum(1)) > 0  # not the slack's nodes
        sp_, sq_ = jvp[t][keep], jvq[t][keep]
        a = sp.csr_matrix(sp_) @ ax_t + sp.csr_matrix(sq_) @ aq_t
        const = vm0[t][keep] + sp_ @ (xfix[t] - x0[t]) - sq_ @ q0[t]
        blocks += [a, -a]
        rhs += [vm_max - margin_v[t] - const, const - vm_min - margin_v[t]]
        k = np.flatnonzero(watched[t])
        if len(k):
            # Re(I e^{-j θ_m}) <= r cos(π/M) for every side m
            gp = (angles[:, None, None] * jip[t][k][None]).real.reshape(-1, N)
            gq = (angles[:, None, None] * jiq[t][k][None]).real.reshape(-1, N)
            base = (angles[:, None] * (i0[t][k] + jip[t][k] @ (xfix[t] - x0[t])
                                       - jiq[t][k] @ q0[t])[None]).real.reshape(-1)
            blocks.append(sp.csr_matrix(gp) @ ax_t + sp.csr_matrix(gq) @ aq_t)
            rhs.append((100.0 - margin_l[t]) * inscribed - base)
    a, b = sp.vstack(blocks).tocsr(), np.concatenate(rhs)
    # scale every row to a largest coefficient of 1: voltage rows are ~1e-5 pu per kW,
    # far below the solver's feasibility tolerance otherwise
    norm = np.maximum(abs(a).max(axis=1).toarray().ravel(), 1e-12)
    return sp.diags(1.0 / norm) @ a, b / norm


def aware_schedule(c: Community, max_iter: int = 15, step_kw: float = 10.0) -> Schedule:
    """The voltage-aware optimum: batteries, curtailment and reactive power with the
    linearised AC limits, re-linearised until the AC power flow shows no violation."""
    t0 = time.perf_counter()
    f = c.scenario.feeder
    d = _data(c)
    lay = _Layout(c, d, network=True)
    solver = c.grid.solver
    shares = c.grid.node_shares(c.agent_ids)
    xfix = d.pv - d.load
    T = lay.T
    start = blind_schedule(c)
    x, q = xfix - start.battery_kw, np.zeros_like(xfix)
    margin_v, margin_l = np.full(T, 1e-3), np.full(T, 1.0)
    watched = None
    for it in range(1, max_iter + 1):
        lin = _linearise(solver, shares, x, d.q_load - q, step_kw)
        loading = np.abs(lin[3])
        watched = (loading > 50.0) if watched is None else (watched | (loading > 50.0))
        rows = _network_rows(lay, lin, x, q, xfix, f.vm_min_pu, f.vm_max_pu, margin_v,
                             margin_l, watched)
        s = _schedule(lay, _solve_lp(c, d, lay, rows))
        x, q = xfix - s.battery_kw - s.curtailed_kw, s.q_kvar
        vm, cur = _flows(solver, shares, x, d.q_load - q)
        v_excess = np.maximum(vm - f.vm_max_pu, f.vm_min_pu - vm).max(axis=1)
        l_excess = np.abs(cur).max(axis=1) - 100.0
        if (v_excess <= 0).all() and (l_excess <= 0).all():
            s.info = {"solve_s": time.perf_counter() - t0, "iterations": it,
                      "vm_max_pu": float(vm.max()), "vm_min_pu": float(vm.min()),
                      "max_line_loading_pct": float(np.abs(cur).max())}
            return s
        margin_v += np.maximum(v_excess, 0.0) * 1.5 + (v_excess > 0) * 2e-4
        margin_l += np.maximum(l_excess, 0.0) * 1.5 + (l_excess > 0) * 0.2
    raise RuntimeError(f"voltage-aware optimum: the AC power flow still shows violations after "
                       f"{max_iter} linearisations (largest {float(v_excess.max()):.2e} pu, "
                       f"line {float(l_excess.max()):.2f} %)")


def schedule_actions(c: Community, s: Schedule) -> list[dict[str, np.ndarray]]:
    """Env actions that play a schedule with every position bid into P2P (inverters in
    set-point mode), in the units of ``agents.spaces``."""
    actions = []
    for t in range(s.battery_kw.shape[0]):
        step = {}
        for i, p in enumerate(c.prosumers):
            b, inv = p.spec.battery, p.spec.inverter
            kw = s.battery_kw[t, i]
            limit = b.charge_kw_max if kw >= 0 else b.discharge_kw_max
            pv = float(p.pv_kw[t])
            pv_out = float(_pv_available(p, pv)) - s.curtailed_kw[t, i]
            curtail = (pv - pv_out) / pv if pv > 0 else 0.0
            q_max = reactive_capability_kvar(inv, pv, pv_out, kw)
            step[p.spec.agent_id] = np.array([  # float64: the schedule, not a rounded copy
                np.clip(kw / limit if limit > 0 else 0.0, -1.0, 1.0), 1.0,
                np.clip(s.q_kvar[t, i] / q_max, -1.0, 1.0) if q_max > 0 else 0.0,
                np.clip(curtail, 0.0, 1.0)])
        actions.append(step)
    return actions
