"""Invariants of a run, as functions over its records.

Used by the tests (on every round of an in-process run) and by ``peergrid logs check``
on any run directory. Each returns a list of problems; an empty list means it holds.
"""

from __future__ import annotations

import pandas as pd

TOL_KWH = 1e-6
TOL_PRICE = 1e-9


def energy_balance_problems(records: pd.DataFrame, dt_h: float) -> list[str]:
    """Per agent: load + charge + curtailed + P2P sold + export = PV + discharge + P2P
    bought + import; per round: community P2P sold = P2P bought; curtailment between 0
    and the PV available."""
    r = records
    problems = []
    charge = r.battery_kw.clip(lower=0) * dt_h
    discharge = (-r.battery_kw).clip(lower=0) * dt_h
    lhs = (r.load_kw + r.curtailed_kw) * dt_h + charge + r.p2p_sold_kwh + r.grid_export_kwh
    rhs = r.pv_kw * dt_h + discharge + r.p2p_bought_kwh + r.grid_import_kwh
    bad_curtail = (r.curtailed_kw < -TOL_KWH) | (r.curtailed_kw > r.pv_kw + TOL_KWH)
    for _, row in r[bad_curtail].head(10).iterrows():
        problems.append(f"episode {row.episode} round {row['round']} agent {row.agent}: "
                        f"curtailed {row.curtailed_kw} kW of {row.pv_kw} kW available")
    bad = (lhs - rhs).abs() > TOL_KWH * (1 + lhs.abs())
    for _, row in r[bad].head(10).iterrows():
        problems.append(
            f"episode {row.episode} round {row['round']} agent {row.agent}: "
            f"uses {lhs[row.name]:.6f} kWh but supplies {rhs[row.name]:.6f} kWh"
        )
    per_round = r.groupby(["episode", "round"])[["p2p_sold_kwh", "p2p_bought_kwh"]].sum()
    gap = (per_round.p2p_sold_kwh - per_round.p2p_bought_kwh).abs()
    for (ep, rnd), row in per_round[gap > TOL_KWH * (1 + per_round.p2p_sold_kwh)].head(10).iterrows():
        problems.append(
            f"episode {ep} round {rnd}: community P2P sold {row.p2p_sold_kwh:.6f} kWh "
            f"!= bought {row.p2p_bought_kwh:.6f} kWh"
        )
    return problems


def price_bound_problems(records: pd.DataFrame) -> list[str]:
    """feed-in ≤ P2P sell ≤ P2P buy ≤ retail, every agent, every round."""
    r = records
    problems = []
    for col in ("sell_price", "buy_price"):
        bad = (r[col] < r.feed_in_price - TOL_PRICE) | (r[col] > r.retail_price + TOL_PRICE)
        for _, row in r[bad].head(10).iterrows():
            problems.append(
                f"episode {row.episode} round {row['round']} agent {row.agent}: {col} = "
                f"{row[col]} outside [{row.feed_in_price}, {row.retail_price}]"
            )
    return problems


def no_worse_than_grid_problems(records: pd.DataFrame) -> list[str]:
    """Nobody pays more for its position than trading it with the grid would cost."""
    bad = records.payment > records.grid_only_payment + 1e-9 * (1 + records.payment.abs())
    return [
        f"episode {row.episode} round {row['round']} agent {row.agent}: paid {row.payment} "
        f"> grid-only {row.grid_only_payment}"
        for _, row in records[bad].head(10).iterrows()
    ]


def completeness_problems(records: pd.DataFrame, agents: list[str], n_rounds: int) -> list[str]:
    """Every agent has exactly one record per round."""
    problems = []
    counts = records.groupby("agent").size()
    for a in agents:
        if counts.get(a, 0) != n_rounds:
            problems.append(f"agent {a}: {counts.get(a, 0)} records, expected {n_rounds}")
    dup = records.duplicated(["episode", "round", "agent"])
    if dup.any():
        problems.append(f"{int(dup.sum())} duplicated (episode, round, agent) records")
    return problems


def all_problems(records: pd.DataFrame, dt_h: float) -> list[str]:
    return (energy_balance_problems(records, dt_h) + price_bound_problems(records)
            + no_worse_than_grid_problems(records))
