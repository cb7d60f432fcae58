"""Perfect-foresight optimum: centrally scheduled batteries at least community cost.

P2P payments are transfers inside the community, so with every position bid into
the market the community pays only for its net grid position: import at retail,
export at the feed-in tariff. For one day, knowing every load and PV value, the
battery schedule that minimises that cost is a linear program (solved with scipy's
HiGHS):

    min Σ_t dt (λ_buy,t I_t − λ_sell,t X_t)
    s.t. Σ_i (load_it − pv_it + c_it − d_it) = I_t − X_t            (community balance)
         e_it = e_i,t−1 + dt (η_c c_it − d_it / η_d),  e_i,−1 = soc_init · cap
         soc_min · cap ≤ e_it ≤ soc_max · cap,  0 ≤ c_it ≤ c_max,  0 ≤ d_it ≤ d_max
         I_t, X_t ≥ 0

The day ends with whatever state of charge is optimal (an episode is one day and
the next starts from ``soc_init``, as for the learners). The schedule is then played
through the same env as every policy (battery c − d, bid share 1), so its costs,
rewards and voltages are computed by the same code; the voltage limits are not a
constraint of the LP, and the report says whether the schedule respects them.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import lil_matrix

from peergrid.scenarios.community import Community


def optimal_day_schedule(community: Community, day: int) -> np.ndarray:
    """Battery power (kW, > 0 charging), shape (rounds, agents), for one day."""
    spd, dt = community.steps_per_day, community.dt_h
    k0 = day * spd
    hours = community.hours[k0:k0 + spd]
    retail = np.array([community.market.tariff(int(h)).retail_price_per_kwh for h in hours])
    feed_in = np.array([community.market.tariff(int(h)).feed_in_price_per_kwh for h in hours])
    prosumers = community.prosumers
    batteries = [i for i, p in enumerate(prosumers) if p.spec.battery.present]
    net_kw = sum(p.load_kw[k0:k0 + spd] - p.pv_kw[k0:k0 + spd] for p in prosumers)
    nb, T = len(batteries), spd
    # variable layout: [c (nb*T), d (nb*T), e (nb*T), I (T), X (T)]
    c0, d0, e0, i0, x0 = 0, nb * T, 2 * nb * T, 3 * nb * T, 3 * nb * T + T
    n_var = 3 * nb * T + 2 * T
    cost = np.zeros(n_var)
    cost[i0:i0 + T] = retail * dt
    cost[x0:x0 + T] = -feed_in * dt
    a_eq = lil_matrix((T + nb * T, n_var))
    b_eq = np.zeros(T + nb * T)
    bounds: list[tuple[float, float | None]] = [(0.0, None)] * n_var
    for t in range(T):  # community balance
        for j in range(nb):
            a_eq[t, c0 + j * T + t] = 1.0
            a_eq[t, d0 + j * T + t] = -1.0
        a_eq[t, i0 + t] = -1.0
        a_eq[t, x0 + t] = 1.0
        b_eq[t] = -net_kw[t]
    for j, i in enumerate(batteries):
        b = prosumers[i].spec.battery
        for t in range(T):
            row = T + j * T + t
            a_eq[row, e0 + j * T + t] = 1.0
            a_eq[row, c0 + j * T + t] = -dt * b.eta_charge
            a_eq[row, d0 + j * T + t] = dt / b.eta_discharge
            if t > 0:
                a_eq[row, e0 + j * T + t - 1] = -1.0
            else:
                b_eq[row] = b.soc_init * b.capacity_kwh
            bounds[c0 + j * T + t] = (0.0, b.charge_kw_max)
            bounds[d0 + j * T + t] = (0.0, b.discharge_kw_max)
            bounds[e0 + j * T + t] = (b.soc_min * b.capacity_kwh, b.soc_max * b.capacity_kwh)
    res = linprog(cost, A_eq=a_eq.tocsr(), b_eq=b_eq, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"optimum LP for day {day}: {res.message}")
    schedule = np.zeros((T, len(prosumers)))
    for j, i in enumerate(batteries):
        schedule[:, i] = res.x[c0 + j * T:c0 + (j + 1) * T] - res.x[d0 + j * T:d0 + (j + 1) * T]
    return schedule


def schedule_actions(community: Community, schedule: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Env actions that play a battery schedule with every position bid into P2P."""
    actions = []
    for row in schedule:
        step = {}
        for i, p in enumerate(community.prosumers):
            b = p.spec.battery
            limit = b.charge_kw_max if row[i] >= 0 else b.discharge_kw_max
            frac = row[i] / limit if limit > 0 else 0.0
            step[p.spec.agent_id] = np.array([np.clip(frac, -1.0, 1.0), 1.0])  # float64: exact
        actions.append(step)
    return actions
