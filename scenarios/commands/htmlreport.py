"""One self-contained HTML page per run: its summary tables and every figure.

The page needs nothing beside itself (figures are base64 PNG data URIs, the style is
inline, no scripts, no links), so it can be mailed, attached to an issue or opened
from an archive years later. ``peergrid logs report RUN`` writes ``RUN/report.html``.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import pandas as pd

from peergrid.scenarios.commands.report import agent_tables, summarize
from peergrid.scenarios.runtime.logs import read_manifest

CAPTIONS = {
    "energy": "Community power per round: load, PV used, battery, P2P traded and grid "
              "exchange (each round's value holds over the round).",
    "prices_sdr": "Retail and feed-in tariffs, the P2P buy and sell prices, and the "
                  "supply-demand ratio that sets them.",
    "soc": "Battery state of charge at the end of each round.",
    "voltages": "Bus voltages (each bus's worst phase) against the limits; rounds with a "
                "bus out of limits are marked.",
    "feeder_map": "The feeder at the round whose worst bus is farthest outside (or least "
                  "inside) the limits.",
}
_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1.5em 0; } img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #555; }
.meta td, .meta th { text-align: left; }
"""


def community_rows(c: dict[str, Any]) -> list[tuple[str, str]]:
    """(quantity with unit, value) of the community summary."""
    ss = c.get("self_sufficiency")
    rows = [
        ("agents", f"{c['agents']}"), ("rounds", f"{c['rounds']}"),
        ("policy", f"{c['policy']}"),
        ("energy cost (currency)", f"{c['cost']:,.2f}"),
        ("same positions, grid only (currency)", f"{c['grid_only_cost']:,.2f}"),
        ("voltage penalty (currency)", f"{c['voltage_penalty']:,.2f}"),
        ("line penalty (currency)", f"{c['line_penalty']:,.2f}"),
        ("team reward (currency, mean over agents of summed reward)", f"{c['team_reward']:,.2f}"),
        ("P2P volume (kWh)", f"{c['p2p_kwh']:,.1f}"),
        ("grid import / export (kWh)",
         f"{c['grid_import_kwh']:,.1f} / {c['grid_export_kwh']:,.1f}"),
        ("PV used / curtailed (kWh)",
         f"{c['pv_kwh'] - c['curtailed_kwh']:,.1f} / {c['curtailed_kwh']:,.1f}"),
        ("self-sufficiency (1 − import / load)", "n/a" if ss is None else f"{ss:.1%}"),
        ("rounds with a bus out of voltage limits", f"{c['voltage_violations']}"),
        ("over- / under-voltage rounds", f"{c['overvoltage_rounds']} / {c['undervoltage_rounds']}"),
        ("voltage range (pu)", f"{c['vm_min_pu']:.4f} – {c['vm_max_pu']:.4f}"),
        ("highest line loading (%)", f"{c['max_line_loading_pct']:.1f}"),
        ("rounds with a line above 100 %", f"{c['line_overload_rounds']}"),
        ("non-converged power flows (rounds)", f"{c['nonconverged_rounds']}"),
    ]
    return rows


def _table(rows: list[tuple[str, str]], cls: str = "") -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                   for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def png_data_uri(fig: Any, dpi: int = 110) -> str:
    """The figure as an inline PNG (and closed)."""
    from peergrid.scenarios.commands.figures import pyplot

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def report_html(run: str | Path, out: str | Path | None = None, all_agents: bool = False) -> Path:
    """Write ``out`` (default ``RUN/report.html``): run facts, the community summary,
    the agents (every one, or the extremes of a large community: ``report.agent_tables``)
    and every figure of ``figures.run_figures``; return its path."""
    from peergrid.scenarios.commands.figures import run_figures

    run = Path(run)
    manifest = read_manifest(run)
    summary = summarize(run)
    sc = manifest["scenario"]
    title = f"peergrid run {run.name}"
    facts = [
        ("scenario", f"{sc['scenario']['id']} ({manifest.get('scenario_source', '')})"),
        ("feeder", f"{sc['feeder']['name']}, limits {sc['feeder']['vm_min_pu']}–"
                   f"{sc['feeder']['vm_max_pu']} pu"),
        ("window", f"{manifest['run'].get('start', sc['scenario']['start'])}, "
                   f"{manifest['run'].get('days', sc['scenario']['days'])} days of "
                   f"{sc['scenario']['step_min']}-minute rounds"),
        ("policy / runtime", f"{manifest['run'].get('policy')} / {manifest['run'].get('runtime')}"),
        ("seed", f"{manifest.get('seed')}"),
        ("created (UTC)", f"{manifest.get('created_utc', '')}"),
        ("peergrid / git commit", f"{manifest.get('versions', {}).get('peergrid', '?')} / "
                                  f"{manifest.get('git_commit') or '?'}"),
        ("command", " ".join(manifest.get("command", []))),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>", _table(facts, "meta"),
        "<h2>Community (totals over the run)</h2>", _table(community_rows(summary["community"])),
        "<h2>Agents</h2>",
    ]
    for caption, table in agent_tables(summary, all_agents):
        parts += [f"<h3>{html.escape(caption)}</h3>",
                  _frame_html(table)]
    parts.append("<h2>Figures</h2>")
    for name, fig in run_figures(run).items():
        parts.append(f'<figure id="{name}"><img alt="{html.escape(name)}" '
                     f'src="{png_data_uri(fig)}"><figcaption>'
                     f"{html.escape(CAPTIONS.get(name, name))}</figcaption></figure>")
    parts.append("</body></html>")
    path = Path(out) if out is not None else run / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _frame_html(table: pd.DataFrame) -> str:
    return table.to_html(float_format=lambda x: f"{x:,.2f}", border=0, escape=True)
