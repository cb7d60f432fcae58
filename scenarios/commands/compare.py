"""Key performance indicators of several runs side by side, normalised against a baseline.

As in CityLearn, every KPI of a run is also given as value / baseline value, so the
baseline run reads 1.0 and a policy that halves the community's cost reads 0.5. The
KPIs, each a total over the whole run and the whole community (``report.summarize``):

- ``cost`` (currency): the community's net energy payment, Σ ``payment`` over agents
  and rounds (earnings count negative). Lower is better.
- ``penalty`` (currency): voltage plus line-loading penalties charged to the agents,
  Σ ``voltage_penalty`` + Σ ``line_penalty``. Lower is better.
- ``violations`` (rounds): rounds in which some bus was out of its voltage limits or the
  power flow failed (``voltage_violations``). Lower is better.
- ``self_sufficiency`` (fraction): 1 − Σ grid import / Σ load. Higher is better.
- ``p2p_kwh`` (kWh): energy traded between peers, Σ ``p2p_sold_kwh`` (= Σ bought).

A ratio whose baseline is 0 is 1.0 when the run's value is 0 too, and undefined (NaN,
shown "n/a") otherwise: a baseline without P2P trade or without violations gives no
scale for those KPIs, and the table keeps the values.

Runs must cover the same feeder, the same rounds (start, length, round duration) and
the same agents: totals over different days differ by the weather and the tariff, not
by the policy, and a per-day average would hide that (a sunny week against a cloudy
one), so such runs are refused with an error naming the difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peergrid.scenarios.commands.report import summarize
from peergrid.scenarios.runtime.logs import read_manifest, read_records


@dataclass(frozen=True)
class Kpi:
    name: str
    label: str
    unit: str
    better: str
    """"lower", "higher" or "" (neither: a description, not a goal)."""


KPIS: tuple[Kpi, ...] = (
    Kpi("cost", "energy cost", "currency", "lower"),
    Kpi("penalty", "voltage + line penalty", "currency", "lower"),
    Kpi("violations", "rounds with a voltage violation", "rounds", "lower"),
    Kpi("self_sufficiency", "self-sufficiency", "fraction", "higher"),
    Kpi("p2p_kwh", "P2P volume", "kWh", ""),
)


class CompareError(ValueError):
    """Runs that cannot be compared: the message names the run, the field, both values."""


def kpis(community: dict[str, Any]) -> dict[str, float]:
    """The KPIs of one run from its community summary (``summarize(run)["community"]``)."""
    ss = community.get("self_sufficiency")
    return {
        "cost": float(community["cost"]),
        "penalty": float(community["voltage_penalty"] + community["line_penalty"]),
        "violations": float(community["voltage_violations"]),
        "self_sufficiency": float("nan") if ss is None else float(ss),
        "p2p_kwh": float(community["p2p_kwh"]),
    }


def ratio(value: float, base: float) -> float:
    """value / base; 1.0 for 0 / 0; NaN when only the base is 0 (no scale)."""
    if not np.isfinite(value) or not np.isfinite(base):
        return float("nan")
    if base == 0.0:
        return 1.0 if value == 0.0 else float("nan")
    return value / base


def _identity(run: Path) -> dict[str, Any]:
    """What two runs must share to be compared."""
    m = read_manifest(run)
    r = read_records(run)
    times = pd.to_datetime(r.time)
    return {
        "feeder": m["scenario"]["feeder"]["name"],
        "first round": str(times.min()),
        "last round": str(times.max()),
        "rounds": int(r[["episode", "round"]].drop_duplicates().shape[0]),
        "round length (min)": m["scenario"]["scenario"]["step_min"],
        "agents": ", ".join(sorted(map(str, r.agent.unique()))),
    }


def _labels(runs: Sequence[Path]) -> list[str]:
    """Run directory names, or their paths where two names are the same."""
    names = [p.name for p in runs]
    return [p.name if names.count(p.name) == 1 else str(p) for p in runs]


def compare(runs: Sequence[str | Path], baseline: str | Path | None = None,
            out: str | Path | None = None) -> tuple[pd.DataFrame, list[Path]]:
    """KPIs of ``runs`` and their ratios to ``baseline`` (default: the first run; a
    baseline not among ``runs`` is added first). With ``out``, writes compare.png there.

    Returns one row per run (the baseline first), columns ``<kpi>`` and
    ``<kpi>_vs_baseline``, and the paths written. Raises ``CompareError`` for runs over
    different feeders, windows or agents."""
    paths = [Path(r) for r in runs]
    if not paths:
        raise CompareError("logs compare: no run given")
    seen: set[Path] = set()
    for p in paths:
        if p.resolve() in seen:
            raise CompareError(f"logs compare: {p} is given twice")
        seen.add(p.resolve())
    base = Path(baseline) if baseline is not None else paths[0]
    paths = [base] + [p for p in paths if p.resolve() != base.resolve()]
    ref = _identity(base)
    for p in paths[1:]:
        other = _identity(p)
        for field, want in ref.items():
            if other[field] != want:
                raise CompareError(
                    f"{p}: {field} is {other[field]!r}, baseline {base} has {want!r}; "
                    "runs are compared over the same feeder, rounds and agents only")
    values = [kpis(summarize(p)["community"]) for p in paths]
    rows = []
    for v in values:
        row: dict[str, float] = dict(v)
        row.update({f"{k.name}_vs_baseline": ratio(v[k.name], values[0][k.name]) for k in KPIS})
        rows.append(row)
    table = pd.DataFrame(rows, index=pd.Index(_labels(paths), name="run"))
    table.attrs["baseline"] = table.index[0]
    written: list[Path] = []
    if out is not None:
        Path(out).mkdir(exist_ok=True)
        written.append(_save_figure(compare_figure(table), Path(out) / "compare.png"))
    return table, written


def format_compare(table: pd.DataFrame) -> str:
    """One line per KPI, one column per run: "value (ratio to the baseline)"."""
    base = table.attrs.get("baseline", table.index[0])
    cols = {}
    for run in table.index:
        cells = []
        for k in KPIS:
            v, r = table.at[run, k.name], table.at[run, f"{k.name}_vs_baseline"]
            value = (f"{v:.1%}" if k.unit == "fraction" else f"{v:,.0f}" if k.unit == "rounds"
                     else f"{v:,.2f}")
            cells.append(f"{value} ({'n/a' if np.isnan(r) else f'{r:.2f}'})")
        cols[f"{run} (baseline)" if run == base else run] = cells
    body = pd.DataFrame(cols, index=[f"{k.label} ({k.unit})" + (f", {k.better} is better"
                                                                 if k.better else "")
                                     for k in KPIS])
    return "\n".join([
        f"KPIs over the whole run, and in brackets value / baseline ({base} = 1.00; "
        "n/a: the baseline's value is 0)",
        body.to_string(),
    ])


def compare_figure(table: pd.DataFrame) -> Any:
    """Grouped bars of each KPI's ratio to the baseline, one colour per run, the
    baseline a dashed line at 1; an undefined ratio is written "n/a"."""
    from peergrid.scenarios.commands.figures import LIMIT_STYLE, pyplot

    plt = pyplot()
    base = table.attrs.get("baseline", table.index[0])
    others = [r for r in table.index if r != base]
    n = max(len(others), 1)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.55 * len(KPIS) * max(n, 2) / 2 + 0.8),
                           layout="constrained")
    height = 0.8 / n
    y0 = np.arange(len(KPIS))
    for i, run in enumerate(others):
        ys = y0 - 0.4 + height * (i + 0.5)
        ratios = np.array([table.at[run, f"{k.name}_vs_baseline"] for k in KPIS], float)
        ax.barh(ys, np.nan_to_num(ratios), height=height * 0.9, color=f"C{i}", label=run)
        for k, y, r in zip(KPIS, ys, ratios):
            text = (f"n/a: baseline 0, this run {table.at[run, k.name]:,.4g} {k.unit}"
                    if np.isnan(r) else f"{r:.2f}")
            ax.annotate(text, (0 if np.isnan(r) else r, y),
                        xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.axvline(1.0, **LIMIT_STYLE, label=f"baseline {base} = 1")
    ax.set_yticks(y0, [f"{k.label}\n({k.better} is better)" if k.better else k.label
                       for k in KPIS])
    ax.set_ylim(len(KPIS) - 0.5, -0.5)
    ax.set_xlabel("value / baseline value (–)")
    ax.set_xlim(left=0)
    ax.set_title("KPIs relative to the baseline run")
    fig.legend(loc="outside right upper", frameon=False)
    return fig


def _save_figure(fig: Any, path: Path) -> Path:
    from peergrid.scenarios.commands.figures import save

    return Path(save(fig, path))
