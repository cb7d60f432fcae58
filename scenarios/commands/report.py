"""Summaries and figures of a run directory (any runtime: it reads only the logs)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from peergrid.grid.feeders import bus_groups
from peergrid.scenarios.runtime.logs import read_manifest, read_records, read_table


def node_bus(column: str) -> str:
    """The bus of a ``vm_pu.<node>`` column ("vm_pu.671.a" and "vm_pu.671" → "671")."""
    return column.removeprefix("vm_pu.").split(".")[0]


def bus_violations(grid: pd.DataFrame, vm_min_pu: float, vm_max_pu: float,
                   groups: Mapping[str, str] | None = None
                   ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(buses, over, under): (rounds x buses) masks of a bus above / below the limits
    in a round, whichever of its phases is out. With ``groups`` (bus -> electrical node,
    ``grid.feeders.bus_groups``), buses fused by a switch count once."""
    cols = [c for c in grid.columns if c.startswith("vm_pu.")]
    vm = grid[cols].to_numpy(dtype=float)
    group = (lambda b: groups.get(b, b)) if groups else (lambda b: b)
    buses = list(dict.fromkeys(group(node_bus(c)) for c in cols))
    bus_of = np.array([buses.index(group(node_bus(c))) for c in cols])

    def per_bus(mask: np.ndarray) -> np.ndarray:
        out = np.zeros((mask.shape[0], len(buses)), dtype=bool)
        for j, b in enumerate(bus_of):
            out[:, b] |= mask[:, j]
        return out

    return buses, per_bus(vm > vm_max_pu), per_bus(vm < vm_min_pu)


def grid_violations(grid: pd.DataFrame, vm_min_pu: float, vm_max_pu: float,
                    per_bus: bool = False, feeder: str | None = None,
                    agent_buses: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Limit violations over a grid table (grid.jsonl rows): rounds with any node out of
    limits (or no converged power flow), over- and under-voltage separately, in rounds
    and in bus-rounds (a bus counts once per round whichever of its phases is out, and
    buses that are one electrical node of ``feeder`` with agents at ``agent_buses`` count
    as one: ``grid.feeders.bus_groups``), the voltage range and the
    highest line loading; with ``per_bus``, each bus's over- and under-voltage rounds
    too (``over_rounds.<bus>``, ``under_rounds.<bus>``)."""
    vm = grid[[c for c in grid.columns if c.startswith("vm_pu.")]].to_numpy(dtype=float)
    groups = bus_groups(feeder, agent_buses) if feeder else None
    buses, over, under = bus_violations(grid, vm_min_pu, vm_max_pu, groups)
    # a deployed round whose positions never reached the grid has no power flow: its
    # voltages are unknown, counted apart from a power flow that failed
    lost = (grid["positions_lost"].eq(True).to_numpy(dtype=bool)
            if "positions_lost" in grid else np.zeros(len(grid), dtype=bool))
    failed = ~grid.converged.to_numpy(dtype=bool) & ~lost
    loading = grid.max_line_loading_pct.to_numpy(dtype=float)
    return {
        "voltage_violations": int((over.any(1) | under.any(1) | failed).sum()),
        "overvoltage_rounds": int(over.any(1).sum()),
        "undervoltage_rounds": int(under.any(1).sum()),
        "overvoltage_bus_rounds": int(over.sum()),
        "undervoltage_bus_rounds": int(under.sum()),
        "vm_max_pu": float(np.nanmax(vm)),
        "vm_min_pu": float(np.nanmin(vm)),
        "max_line_loading_pct": float(np.nanmax(loading)),
        "line_overload_rounds": int((loading > 100.0).sum()),
        "nonconverged_rounds": int(failed.sum()),
        "voltage_unknown_rounds": int(lost.sum()),
        **({f"over_rounds.{b}": int(over[:, j].sum()) for j, b in enumerate(buses)}
           | {f"under_rounds.{b}": int(under[:, j].sum()) for j, b in enumerate(buses)}
           if per_bus else {}),
    }


def _dt_h(manifest: dict[str, Any]) -> float:
    return manifest["scenario"]["scenario"]["step_min"] / 60.0


def summarize(run_dir: str | Path) -> dict[str, Any]:
    """Per-agent and community totals: cost, P2P volume, self-sufficiency, penalties,
    violations (over and under separately), line loading, curtailment."""
    manifest = read_manifest(run_dir)
    feeder = manifest["scenario"]["feeder"]
    dt_h = _dt_h(manifest)
    r = read_records(run_dir)
    r = r.assign(load_kwh=r.load_kw * dt_h, pv_kwh=r.pv_kw * dt_h,
                 curtailed_kwh=r.curtailed_kw * dt_h,
                 violation=(r.voltage_penalty > 0).astype(int))
    per_agent = r.groupby("agent").agg(
        bus=("bus", "first"), cost=("payment", "sum"), grid_only_cost=("grid_only_payment", "sum"),
        voltage_penalty=("voltage_penalty", "sum"), line_penalty=("line_penalty", "sum"),
        reward=("reward", "sum"), load_kwh=("load_kwh", "sum"), pv_kwh=("pv_kwh", "sum"),
        curtailed_kwh=("curtailed_kwh", "sum"),
        p2p_bought_kwh=("p2p_bought_kwh", "sum"), p2p_sold_kwh=("p2p_sold_kwh", "sum"),
        grid_import_kwh=("grid_import_kwh", "sum"), grid_export_kwh=("grid_export_kwh", "sum"),
        voltage_penalty_rounds=("violation", "sum"),
        min_vm_pu=("vm_pu", "min"), max_vm_pu=("vm_pu", "max"),
    )
    per_agent["self_sufficiency"] = np.where(
        per_agent.load_kwh > 0, 1 - per_agent.grid_import_kwh / per_agent.load_kwh, np.nan)
    grid = read_table(run_dir, "grid")
    load = per_agent.load_kwh.sum()
    community = {
        "policy": manifest["run"].get("policy"),
        "rounds": int(r[["episode", "round"]].drop_duplicates().shape[0]),
        "agents": int(per_agent.shape[0]),
        "cost": float(per_agent.cost.sum()),
        "grid_only_cost": float(per_agent.grid_only_cost.sum()),
        "voltage_penalty": float(per_agent.voltage_penalty.sum()),
        "line_penalty": float(per_agent.line_penalty.sum()),
        "team_reward": float(per_agent.reward.mean()),
        "p2p_kwh": float(per_agent.p2p_sold_kwh.sum()),
        "grid_import_kwh": float(per_agent.grid_import_kwh.sum()),
        "grid_export_kwh": float(per_agent.grid_export_kwh.sum()),
        "load_kwh": float(load),
        "pv_kwh": float(per_agent.pv_kwh.sum()),
        "curtailed_kwh": float(per_agent.curtailed_kwh.sum()),
        "self_sufficiency": float(1 - per_agent.grid_import_kwh.sum() / load) if load else None,
        **grid_violations(grid, feeder["vm_min_pu"], feeder["vm_max_pu"],
                          feeder=feeder["name"], agent_buses=tuple(
                              sorted({a["bus"] for a in manifest["scenario"]["agents"]}))),
        "agent_penalty_rounds": int(per_agent.voltage_penalty_rounds.sum()),
    }
    try:
        market = read_table(run_dir, "market")
    except FileNotFoundError:  # a deployment whose market never wrote a round
        market = pd.DataFrame()
    if len(market):
        if "down" in market:  # a deployment's: the rounds each node was down in
            down: dict[str, list[int]] = {}
            for k, names in enumerate(market["down"]):
                for name in names:
                    down.setdefault(name, []).append(k)
            community["down_rounds"] = down
    status_path = Path(run_dir) / "status.json"  # a deployment's: did it run every round?
    if status_path.is_file():
        community["deployment"] = json.loads(status_path.read_text())
    return {"community": community, "agents": per_agent.reset_index().to_dict(orient="records")}


AGENT_TABLE_MAX = 20
"""Above this many agents the summary shows the extremes, not every agent."""


AGENT_COLUMNS = ["bus", "cost", "grid_only_cost", "voltage_penalty", "line_penalty",
                 "p2p_bought_kwh", "p2p_sold_kwh", "grid_import_kwh", "grid_export_kwh",
                 "curtailed_kwh", "self_sufficiency"]


def agent_tables(summary: dict[str, Any], all_agents: bool = False, top: int = 5
                 ) -> list[tuple[str, pd.DataFrame]]:
    """(caption, table) of the agents to show: every agent in a small community (or with
    ``all_agents``); else the ``top`` with the highest energy cost and the ``top`` with
    the lowest, so a 1,000-agent run prints a screenful, not a thousand lines."""
    agents = pd.DataFrame(summary["agents"]).set_index("agent")[AGENT_COLUMNS]
    if all_agents or len(agents) <= AGENT_TABLE_MAX:
        return [("Per agent (totals over the run; cost in currency, energy in kWh)", agents)]
    by_cost = agents.sort_values("cost", ascending=False, kind="stable")
    return [(f"The {top} agents with the highest cost (of {len(agents)})", by_cost.head(top)),
            (f"The {top} agents with the lowest cost (of {len(agents)})",
             by_cost.tail(top).iloc[::-1])]


def agent_table(summary: dict[str, Any], all_agents: bool = False, top: int = 5) -> list[str]:
    """The per-agent lines of ``format_summary`` (``agent_tables``, and for a large
    community the spread of cost over every agent)."""
    lines = []
    tables = agent_tables(summary, all_agents, top)
    if len(tables) > 1:
        cost = pd.Series([a["cost"] for a in summary["agents"]])
        q = cost.quantile([0.0, 0.25, 0.5, 0.75, 1.0]).to_numpy()
        lines += [f"Per agent: {len(cost)} agents, cost in currency, energy in kWh "
                  "(--all-agents prints every agent)",
                  f"  cost over agents: min {q[0]:,.2f}, quartiles {q[1]:,.2f} / {q[2]:,.2f} / "
                  f"{q[3]:,.2f}, max {q[4]:,.2f}"]
    for caption, table in tables:
        lines += [f"{caption}:", table.to_string(float_format=lambda x: f"{x:,.2f}")]
    return lines


def format_summary(summary: dict[str, Any], all_agents: bool = False) -> str:
    """The summary as text: the agents (``agent_table``), then the community."""
    c = summary["community"]
    lines = [
        *agent_table(summary, all_agents),
        "",
        f"Community ({c['agents']} agents, {c['rounds']} rounds, policy {c['policy']}):",
        f"  energy cost            {c['cost']:,.2f}   (same positions, grid only: {c['grid_only_cost']:,.2f})",
        f"  voltage / line penalty {c['voltage_penalty']:,.2f} / {c['line_penalty']:,.2f}",
        f"  team reward            {c['team_reward']:,.2f}   (mean over agents of summed reward)",
        f"  P2P volume             {c['p2p_kwh']:,.1f} kWh",
        f"  grid import / export   {c['grid_import_kwh']:,.1f} / {c['grid_export_kwh']:,.1f} kWh",
        f"  PV used / curtailed    {c['pv_kwh'] - c['curtailed_kwh']:,.1f} / {c['curtailed_kwh']:,.1f} kWh",
        f"  self-sufficiency       {c['self_sufficiency']:.1%}   (1 - import / load)",
        f"  voltage violations     {c['voltage_violations']} rounds with a bus out of limits: "
        f"over {c['overvoltage_rounds']} rounds ({c['overvoltage_bus_rounds']} bus-rounds), "
        f"under {c['undervoltage_rounds']} rounds ({c['undervoltage_bus_rounds']} bus-rounds)",
        f"  voltage range          {c['vm_min_pu']:.4f} - {c['vm_max_pu']:.4f} pu",
        f"  max line loading       {c['max_line_loading_pct']:.1f} %   "
        f"({c['line_overload_rounds']} rounds above 100 %)",
    ]
    if c["nonconverged_rounds"]:
        lines.append(f"  NON-CONVERGED rounds   {c['nonconverged_rounds']}")
    if c.get("voltage_unknown_rounds"):
        lines.append(f"  voltages unknown       {c['voltage_unknown_rounds']} rounds "
                     "(positions never reached the grid)")
    for name, ks in sorted(c.get("down_rounds", {}).items()):
        lines.append(f"  down                   {name}: rounds {_spans(ks)}")
    dep = c.get("deployment")
    if dep is not None and not dep["complete"]:
        lines.append(f"  INCOMPLETE deployment: {dep['rounds_done']} of {dep['rounds']} rounds "
                     f"run ({dep['reason']})")
    return "\n".join(lines)


def _spans(ks: list[int]) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    spans: list[list[int]] = []
    for k in ks:
        if spans and k == spans[-1][1] + 1:
            spans[-1][1] = k
        else:
            spans.append([k, k])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)


def write_summary(run_dir: str | Path) -> dict[str, Any]:
    summary = summarize(run_dir)
    with open(Path(run_dir) / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def plot(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write energy.png, prices_sdr.png, soc.png, voltages.png and feeder_map.png
    (``figures.run_figures``); return their paths."""
    from peergrid.scenarios.commands import figures

    out = Path(out_dir or run_dir)
    out.mkdir(exist_ok=True)
    return [figures.save(fig, out / f"{name}.png")
            for name, fig in figures.run_figures(run_dir).items()]


def agent_timeline(run_dir: str | Path, agent: str) -> pd.DataFrame:
    """One agent's rounds: its record, and in a deployment what its node saw and did."""
    records = read_records(run_dir)
    if agent not in set(records.agent):
        raise FileNotFoundError(f"{run_dir}: no records for agent {agent!r} "
                                f"(agents: {', '.join(sorted(set(records.agent)))})")
    r = records[records.agent == agent]
    cols = ["episode", "round", "time", "load_kw", "pv_kw", "curtailed_kw", "battery_kw", "soc",
            "q_kvar", "bid_kwh", "p2p_bought_kwh", "p2p_sold_kwh", "grid_import_kwh",
            "grid_export_kwh", "sdr", "vm_pu", "voltage_penalty", "line_penalty", "reward"]
    timeline = r[cols].reset_index(drop=True)
    node_log = Path(run_dir) / "nodes" / f"{agent}.jsonl"
    if node_log.is_file():
        events = pd.read_json(node_log, lines=True)
        rounds = events[events.event == "round"].drop_duplicates(["episode", "round"], keep="last")
        rounds = rounds.assign(
            flags=rounds["flags"].map(lambda f: ",".join(f) or "-"),
            sent=rounds["links"].map(lambda d: sum(v["sent"] for v in d.values())),
            received=rounds["links"].map(lambda d: sum(v["received"] for v in d.values())),
            dropped=rounds["links"].map(lambda d: sum(v["dropped"] for v in d.values())),
        )[["episode", "round", "flags", "bid_to_settlement_s", "sent", "received", "dropped"]]
        timeline = timeline.merge(rounds, on=["episode", "round"], how="left")
        other = events[~events.event.isin(["round", "links"])]
        timeline.attrs["events"] = other.to_dict(orient="records")
    return timeline
