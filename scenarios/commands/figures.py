"""Figures of a run directory, built as matplotlib Figures so tests can inspect them.

Conventions (issue 15), the same in every figure:

- one colour per quantity (``COLOURS``), never reused for another quantity;
- units on every value axis; legends in the figure margin, never over the data;
- a per-round value holds over its round: drawn as a step from the round's start
  (``where="post"``) with the last round closed at its end;
- limits are neutral grey dashed lines; violations are red (shaded rounds, markers)
  where the plot has no colour scale, and black crosses on colour scales (whose red
  already means "high");
- above ``MAX_SERIES`` series, lines give way to a min/median/max band and a
  heatmap (bus x time voltages on a diverging scale centred on 1 pu, agent x time
  state of charge).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np
import pandas as pd

MAX_SERIES = 10
"""More series than this in one axes are not told apart by colour: band + heatmap."""

COLOURS: dict[str, str] = {  # Okabe-Ito, colour-blind safe
    "load": "#000000",
    "pv": "#E69F00",
    "grid_import": "#0072B2",
    "grid_export": "#56B4E9",
    "p2p": "#009E73",
    "battery": "#CC79A7",
    "sdr": "#7F3C8D",
    "retail": "#000000",
    "feed_in": "#8C8C8C",
    "limit": "#595959",
    "violation": "#C0182A",
    "band": "#BDBDBD",
}
VOLTAGE_CMAP = "RdBu_r"
SOC_CMAP = "viridis"
LIMIT_STYLE: dict[str, Any] = {"color": COLOURS["limit"], "ls": "--", "lw": 1.0}


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display; imported only when plotting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8,
                         "axes.spines.top": False, "axes.spines.right": False,
                         "savefig.dpi": 150})
    return plt


# ---- time axes and steps --------------------------------------------------------------

def _days(t: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Matplotlib date numbers (days) of round start times."""
    import matplotlib.dates as mdates

    return mdates.date2num(pd.to_datetime(pd.Series(t)).to_numpy())


def _edges(t_days: np.ndarray, dt_h: float) -> np.ndarray:
    """Round boundaries: every start, and the end of the last round."""
    return np.append(t_days, t_days[-1] + dt_h / 24.0)


def step(ax: Any, t_days: np.ndarray, y: Any, dt_h: float, **kw: Any) -> Any:
    """A per-round value held over its round (the last round drawn to its end)."""
    y = np.asarray(y, dtype=float)
    return ax.step(_edges(t_days, dt_h), np.append(y, y[-1]), where="post", **kw)[0]


def fill_step(ax: Any, t_days: np.ndarray, lo: Any, hi: Any, dt_h: float, **kw: Any) -> Any:
    lo, hi = np.broadcast_arrays(np.asarray(lo, float), np.asarray(hi, float))
    return ax.fill_between(_edges(t_days, dt_h), np.append(lo, lo[-1]), np.append(hi, hi[-1]),
                           step="post", **kw)


def time_axis(ax: Any, label: str = "time (round start)") -> None:
    import matplotlib.dates as mdates

    ax.xaxis_date()
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel(label)


def legend_outside(fig: Any, axes: list[Any]) -> Any:
    """One legend for all ``axes``, in the figure's right margin (constrained layout)."""
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        handles += h
        labels += lab
    return fig.legend(handles, labels, loc="outside right upper", frameon=False)


def shade_rounds(ax: Any, t_days: np.ndarray, mask: np.ndarray, dt_h: float,
                 label: str | None = "violation (round)") -> None:
    """Red background over the rounds where ``mask`` holds (one legend entry)."""
    for k in np.flatnonzero(mask):
        ax.axvspan(t_days[k], t_days[k] + dt_h / 24.0, color=COLOURS["violation"], alpha=0.15,
                   lw=0, label=label)
        label = None


# ---- community energy and prices -------------------------------------------------------

def energy_figure(records: pd.DataFrame, dt_h: float) -> Any:
    """Community power per round: load, PV used, battery, P2P traded, grid exchange."""
    plt = pyplot()
    per = records.assign(pv_used_kw=records.pv_kw - records.curtailed_kw).groupby("time")[
        ["load_kw", "pv_used_kw", "curtailed_kw", "battery_kw", "p2p_sold_kwh",
         "grid_import_kwh", "grid_export_kwh"]].sum()
    t = _days(per.index)
    fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
    fill_step(ax, t, 0.0, per.pv_used_kw, dt_h, color=COLOURS["pv"], alpha=0.3, lw=0)
    step(ax, t, per.pv_used_kw, dt_h, color=COLOURS["pv"], lw=1.4, label="PV used")
    if per.curtailed_kw.gt(0).any():
        step(ax, t, per.pv_used_kw + per.curtailed_kw, dt_h, color=COLOURS["pv"], lw=1,
             ls=":", label="PV available")
    step(ax, t, per.load_kw, dt_h, color=COLOURS["load"], lw=1.4, label="load")
    step(ax, t, per.grid_import_kwh / dt_h, dt_h, color=COLOURS["grid_import"], lw=1.4,
         label="grid import")
    step(ax, t, per.grid_export_kwh / dt_h, dt_h, color=COLOURS["grid_export"], lw=1.4,
         label="grid export")
    step(ax, t, per.p2p_sold_kwh / dt_h, dt_h, color=COLOURS["p2p"], lw=1.8, label="P2P traded")
    if per.battery_kw.abs().gt(0).any():
        step(ax, t, per.battery_kw, dt_h, color=COLOURS["battery"], lw=1.2,
             label="battery (+ charging)")
        ax.axhline(0.0, color="0.6", lw=0.6)
    ax.set_ylabel("community power (kW,\nround average)")
    time_axis(ax)
    ax.set_title("Community power per round")
    legend_outside(fig, [ax])
    return fig


def prices_figure(market: pd.DataFrame, dt_h: float) -> Any:
    """Tariffs and the P2P prices per round, and the supply-demand ratio behind them."""
    plt = pyplot()
    t = _days(market.time)
    fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
    step(ax, t, market.retail_price, dt_h, color=COLOURS["retail"], lw=1.2,
         label="retail price λ_buy")
    step(ax, t, market.feed_in_price, dt_h, color=COLOURS["feed_in"], lw=1.2,
         label="feed-in price λ_sell")
    step(ax, t, market.buy_price, dt_h, color=COLOURS["p2p"], lw=1.8, label="P2P buy price")
    step(ax, t, market.sell_price, dt_h, color=COLOURS["p2p"], lw=1.8, ls="--",
         label="P2P sell price")
    ax.set_ylabel("price (currency/kWh)")
    ax2 = ax.twinx()
    sdr = pd.to_numeric(market.sdr, errors="coerce").replace(np.inf, np.nan).clip(upper=3.0)
    step(ax2, t, sdr, dt_h, color=COLOURS["sdr"], lw=1.0, alpha=0.7,
         label="supply-demand ratio (clipped at 3)")
    ax2.spines["right"].set_visible(True)
    ax2.set_ylabel("supply-demand ratio TSP/TBP (–)")
    ax2.set_ylim(bottom=0)
    time_axis(ax)
    ax.set_title("P2P prices and supply-demand ratio")
    legend_outside(fig, [ax, ax2])
    return fig


# ---- batteries -------------------------------------------------------------------------

def soc_figure(records: pd.DataFrame, dt_h: float, soc_init: Mapping[str, float],
               max_series: int = MAX_SERIES) -> Any:
    """Each battery's state of charge: lines (few agents) or an agent x time heatmap.

    The record's ``soc`` is at the end of the round, and a round's battery power is
    constant, so lines join the ends of rounds, starting from the initial charge."""
    plt = pyplot()
    moved = records.groupby("agent").battery_kw.apply(lambda s: s.abs().sum() > 0)
    agents = [a for a in moved.index if moved[a]]
    fig, ax = plt.subplots(figsize=(8, 3.4 if len(agents) <= max_series else 4.2),
                           layout="constrained")
    ax.set_title("Battery state of charge")
    if not agents:
        ax.text(0.5, 0.5, "no battery moved in this run", ha="center", transform=ax.transAxes)
        ax.set_ylabel("state of charge (fraction)")
        time_axis(ax)
        return fig
    soc = records[records.agent.isin(agents)].pivot(index="time", columns="agent",
                                                     values="soc")[agents]
    t = _days(soc.index)
    if len(agents) <= max_series:
        ends = _edges(t, dt_h)
        for i, a in enumerate(agents):
            ax.plot(ends, np.append(soc_init.get(a, soc[a].iloc[0]), soc[a].to_numpy()), color=f"C{i}", lw=1.2,
                    label=a)
        ax.set_ylabel("state of charge (fraction)")
        ax.set_ylim(0, 1)
        legend_outside(fig, [ax])
    else:
        mesh = ax.pcolormesh(_edges(t, dt_h), np.arange(len(agents) + 1), soc.to_numpy().T,
                             cmap=SOC_CMAP, vmin=0.0, vmax=1.0, shading="flat")
        _category_ticks(ax, agents)
        ax.set_ylabel(f"agent ({len(agents)} with a battery)")
        fig.colorbar(mesh, ax=ax, label="state of charge at end of round (fraction)")
    time_axis(ax)
    return fig


def _category_ticks(ax: Any, names: list[str], max_labels: int = 40) -> None:
    """Row labels at cell centres, thinned to at most ``max_labels``; first row on top."""
    every = max(1, int(np.ceil(len(names) / max_labels)))
    rows = np.arange(0, len(names), every)
    ax.set_yticks(rows + 0.5, [names[k] for k in rows], fontsize=7 if len(names) > 20 else 8)
    ax.set_ylim(len(names), 0)


# ---- voltages --------------------------------------------------------------------------

def bus_voltages(grid: pd.DataFrame, vm_min_pu: float, vm_max_pu: float) -> pd.DataFrame:
    """(rounds x buses) voltage of each bus's worst phase: the one farthest from the
    middle of the band (as an agent's ``vm_pu``), in feeder order."""
    cols = [c for c in grid.columns if c.startswith("vm_pu.")]
    mid = (vm_min_pu + vm_max_pu) / 2.0
    out: dict[str, np.ndarray] = {}
    for col in cols:
        bus = col.removeprefix("vm_pu.").split(".")[0]
        v = grid[col].to_numpy(dtype=float)
        if bus in out:
            w = out[bus]
            out[bus] = np.where(np.abs(v - mid) > np.abs(w - mid), v, w)
        else:
            out[bus] = v
    return pd.DataFrame(out, index=grid.index)


def worst_round(vm: pd.DataFrame, vm_min_pu: float, vm_max_pu: float) -> int | None:
    """Row of the round whose worst bus is farthest outside (or least inside) the band;
    None if no round has a voltage."""
    v = vm.to_numpy(dtype=float)
    excess = np.fmax(v - vm_max_pu, vm_min_pu - v)
    if np.isnan(excess).all():
        return None
    return int(np.nanargmax(np.nanmax(np.where(np.isnan(excess), -np.inf, excess), axis=1)))


def _voltage_norm(vm: np.ndarray, vm_min_pu: float, vm_max_pu: float) -> Any:
    """Diverging scale centred on 1 pu, wide enough to show both limits and the data."""
    from matplotlib.colors import CenteredNorm

    half = max(float(np.nanmax(np.abs(vm - 1.0))) if np.isfinite(vm).any() else 0.0,
               vm_max_pu - 1.0, 1.0 - vm_min_pu)
    return CenteredNorm(vcenter=1.0, halfrange=1.1 * half)


def _limit_colorbar(fig: Any, mappable: Any, ax: Any, vm_min_pu: float, vm_max_pu: float) -> Any:
    cbar = fig.colorbar(mappable, ax=ax, label="voltage (pu)")
    for lim in (vm_min_pu, vm_max_pu):
        cbar.ax.axhline(lim, color="k", ls="--", lw=1.5)
    cbar.set_ticks([vm_min_pu, 1.0, vm_max_pu],
                   labels=[f"{vm_min_pu:g} limit", "1.00", f"{vm_max_pu:g} limit"])
    return cbar


def voltage_figure(grid: pd.DataFrame, vm_min_pu: float, vm_max_pu: float, dt_h: float,
                   max_series: int = MAX_SERIES) -> Any:
    """Bus voltages against the limits, violating rounds marked: one line per bus for
    a few buses; otherwise a min/median/max band over a bus x time heatmap."""
    plt = pyplot()
    vm = bus_voltages(grid, vm_min_pu, vm_max_pu)
    v = vm.to_numpy(dtype=float)
    out = (v > vm_max_pu) | (v < vm_min_pu)
    failed = ~grid.converged.to_numpy(dtype=bool) if "converged" in grid else np.zeros(len(v), bool)
    bad_round = out.any(axis=1) | failed
    t = _days(grid.time)
    few = vm.shape[1] <= max_series
    if few:
        fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
        axes = [ax]
        for i, bus in enumerate(vm.columns):
            step(ax, t, vm[bus], dt_h, color=f"C{i}", lw=1.1, label=f"bus {bus}")
    else:
        fig, (ax, hm) = plt.subplots(2, 1, figsize=(8, 6.2), sharex=True, layout="constrained",
                                     height_ratios=[1, 2.2])
        axes = [ax]
        with np.errstate(all="ignore"):
            lo, med, hi = np.nanmin(v, 1), np.nanmedian(v, 1), np.nanmax(v, 1)
        fill_step(ax, t, lo, hi, dt_h, color=COLOURS["band"], lw=0,
                  label=f"min–max over {vm.shape[1]} buses")
        step(ax, t, med, dt_h, color="k", lw=1.2, label="median bus")
    for lim in (vm_min_pu, vm_max_pu):
        ax.axhline(lim, **LIMIT_STYLE)
    ax.plot([], [], **LIMIT_STYLE, label=f"limits {vm_min_pu:g} / {vm_max_pu:g} pu")
    shade_rounds(ax, t, bad_round, dt_h)
    rows, cols = np.nonzero(out)
    mid_t = t + dt_h / 48.0
    ax.scatter(mid_t[rows], v[rows, cols], s=14, marker="o", facecolor="none",
               edgecolor=COLOURS["violation"], lw=1.0, zorder=5,
               label="bus out of limits" if len(rows) else None)
    ax.set_ylabel("voltage (pu)")
    ax.set_title("Bus voltages (worst phase of each bus) and limits")
    if not few:
        norm = _voltage_norm(v, vm_min_pu, vm_max_pu)
        mesh = hm.pcolormesh(_edges(t, dt_h), np.arange(vm.shape[1] + 1), v.T, cmap=VOLTAGE_CMAP,
                             norm=norm, shading="flat")
        if len(rows):
            hm.scatter(mid_t[rows], cols + 0.5, marker="x", color="k",
                       s=float(np.clip(900.0 / max(v.shape), 3, 25)), lw=0.8,
                       label="bus out of limits (cell)")
        _category_ticks(hm, [str(b) for b in vm.columns])
        hm.set_ylabel("bus (feeder order)")
        _limit_colorbar(fig, mesh, hm, vm_min_pu, vm_max_pu)
        axes.append(hm)
        time_axis(hm)
        ax.set_xlabel("")
    else:
        time_axis(ax)
    legend_outside(fig, axes)
    return fig


# ---- the feeder ------------------------------------------------------------------------

def tree_layout(g: Any, root: Any) -> dict[Any, tuple[float, float]]:
    """Schematic positions: x = hops from ``root``, one row per leaf, a node level with
    its largest branch (the trunk runs straight). A radial feeder draws without
    crossings; a meshed one draws its BFS tree, the closing branches as extra edges."""
    import networkx as nx

    tree = nx.bfs_tree(g, root)
    depth = nx.single_source_shortest_path_length(tree, root)
    size = {n: len(nx.descendants(tree, n)) for n in tree}
    pos: dict[Any, tuple[float, float]] = {}
    row = 0
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        n, done = stack.pop()
        kids = sorted(tree.successors(n), key=lambda c: -size[c])
        if not kids:
            pos[n] = (float(depth[n]), -float(row))
            row += 1
        elif done:
            pos[n] = (float(depth[n]), pos[kids[0]][1])
        else:
            stack.append((n, True))
            stack.extend((c, False) for c in reversed(kids))
    return pos


@cache
def feeder_layout(feeder: str) -> tuple[dict[str, tuple[float, float]], list[tuple[str, str]],
                                         str | None, str]:
    """(position per bus, branches, slack bus, source of the positions): the feeder's
    geodata where it has some, else a schematic tree from the slack bus. Cached: the
    live view redraws the feeder every round."""
    import networkx as nx
    import pandapower.topology as top

    from peergrid.grid.feeders import build_feeder

    net = build_feeder(feeder)
    names = {int(i): str(n) for i, n in net.bus.name.items()}
    g = nx.Graph(top.create_nxgraph(net, respect_switches=True))
    slack = names[int(net.ext_grid.bus.iloc[0])] if len(net.ext_grid) else None
    edges = [(names[a], names[b]) for a, b in g.edges()]
    geo = net.bus["geo"] if "geo" in net.bus else pd.Series(dtype=object)
    if len(geo) and geo.notna().all():
        pos = {names[int(i)]: tuple(json.loads(s)["coordinates"][:2]) for i, s in geo.items()}
        return pos, edges, slack, "feeder geodata"
    pos_idx: dict[int, tuple[float, float]] = {}
    offset = 0.0
    start = int(net.ext_grid.bus.iloc[0]) if len(net.ext_grid) else min(g.nodes)
    for comp in sorted(nx.connected_components(g), key=lambda c: start not in c):
        sub = tree_layout(g.subgraph(comp), start if start in comp else min(comp))
        pos_idx.update({n: (x, y + offset) for n, (x, y) in sub.items()})
        offset = min(y for _, y in pos_idx.values()) - 1.5
    pos = {names[i]: p for i, p in pos_idx.items()}
    return pos, edges, slack, "schematic, from the slack bus (no geodata)"


def feeder_map_figure(feeder: str, vm_bus: Mapping[str, float], vm_min_pu: float,
                      vm_max_pu: float, when: str,
                      agents_at: Mapping[str, int] | None = None) -> Any:
    """The feeder drawn with each bus coloured by its voltage in one round (``when``
    names it), buses out of limits ringed, the slack bus a square; with ``agents_at``,
    a bus's marker grows with the agents connected there. A bare matplotlib Figure (no
    pyplot), so the live view's server threads can draw it too."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pos, edges, slack, source = feeder_layout(feeder)
    buses = list(pos)
    v = np.array([vm_bus.get(b, np.nan) for b in buses], dtype=float)
    norm = _voltage_norm(v, vm_min_pu, vm_max_pu)
    xy = np.array([pos[b] for b in buses])
    rows = len({y for _, y in pos.values()})
    fig = Figure(figsize=(8, float(np.clip(0.35 * rows + 1.6, 3.6, 6.5))), layout="constrained")
    FigureCanvasAgg(fig)  # drawn and saved like the pyplot figures
    ax = fig.subplots()
    for a, b in edges:
        ax.plot([pos[a][0], pos[b][0]], [pos[a][1], pos[b][1]], color="0.55", lw=1.2, zorder=1)
    base = 90.0 if len(buses) <= 40 else 28.0
    size = np.array([base * (1 + 0.5 * (agents_at or {}).get(b, 0)) for b in buses])
    known = np.isfinite(v)
    sc = ax.scatter(xy[known, 0], xy[known, 1], c=v[known], cmap=VOLTAGE_CMAP, norm=norm,
                    s=size[known], edgecolor="0.3", lw=0.5, zorder=3)
    if (~known).any():
        ax.scatter(xy[~known, 0], xy[~known, 1], s=size[~known], facecolor="white",
                   edgecolor="0.3", lw=0.5, zorder=3, label="no voltage recorded")
    bad = known & ((v > vm_max_pu) | (v < vm_min_pu))
    if bad.any():
        ax.scatter(xy[bad, 0], xy[bad, 1], s=size[bad] * 2.6, facecolor="none", edgecolor="k",
                   lw=1.4, zorder=4, label="bus out of limits")
    if slack in pos:
        ax.scatter(*pos[slack], s=base * 1.8, marker="s", facecolor="none", edgecolor="k",
                   lw=1.2, zorder=4, label=f"slack bus {slack}")
    if len(buses) <= 40:
        for b, (x, y) in zip(buses, xy):
            ax.annotate(b, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.set_axis_off()
    if source == "feeder geodata":
        ax.set_aspect("equal", adjustable="datalim")
    sizes = "; size: agents at the bus" if agents_at else ""
    ax.set_title(f"Bus voltages on {feeder} at {when}\n{source}{sizes}", fontsize=9)
    _limit_colorbar(fig, sc, ax, vm_min_pu, vm_max_pu)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", frameon=False, ncols=3)
    return fig


# ---- one run ---------------------------------------------------------------------------

def run_figures(run_dir: Any, max_series: int = MAX_SERIES) -> dict[str, Any]:
    """Every figure of a run, by file stem: energy, prices_sdr, soc, voltages, feeder_map."""
    from peergrid.scenarios.runtime.logs import read_manifest, read_records, read_table

    manifest = read_manifest(run_dir)
    feeder = manifest["scenario"]["feeder"]
    dt_h = manifest["scenario"]["scenario"]["step_min"] / 60.0
    lo, hi = feeder["vm_min_pu"], feeder["vm_max_pu"]
    records = read_records(run_dir)
    grid = read_table(run_dir, "grid")
    soc_init = {a["id"]: a["soc_init"] for a in manifest["scenario"].get("agents") or []
                if a.get("battery_kwh")}
    figs = {
        "energy": energy_figure(records, dt_h),
        "prices_sdr": prices_figure(read_table(run_dir, "market"), dt_h),
        "soc": soc_figure(records, dt_h, soc_init, max_series),
        "voltages": voltage_figure(grid, lo, hi, dt_h, max_series),
    }
    vm = bus_voltages(grid, lo, hi)
    k = worst_round(vm, lo, hi)
    if k is not None:
        when = pd.Timestamp(grid.time.iloc[k]).strftime("%Y-%m-%d %H:%M")
        figs["feeder_map"] = feeder_map_figure(feeder["name"], vm.iloc[k].to_dict(), lo, hi,
                                               f"the worst round ({when})")
    return figs


def save(fig: Any, path: Any, dpi: int = 150) -> Any:
    """Write a figure and free it."""
    plt = pyplot()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
