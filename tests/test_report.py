"""Figures, run comparison, large-community summaries and the HTML report, on real runs.

Three one-day runs made by the CLI as a user makes them: ieee13 with the rule policy,
ieee13 without P2P (the baseline), and a 60-agent dickert_lv community with a raised
lower voltage limit, so that some rounds violate it.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from peergrid.scenarios.commands import figures
from peergrid.scenarios.commands.compare import CompareError, compare, format_compare
from peergrid.scenarios.commands.report import bus_violations, format_summary, plot, summarize
from peergrid.scenarios.runtime.logs import read_manifest, read_table

PNG = b"\x89PNG\r\n\x1a\n"


def _large_scenario_toml() -> str:
    """dickert_lv with 60 agents and vm_min 0.98 pu (evening under-voltage)."""
    from peergrid.scenarios.definition.loader import resolve

    text = resolve("dickert_lv").read_text()
    for old, new in [(r"^vm_min_pu = 0\.95$", "vm_min_pu = 0.98"),
                     (r"^\[placement\]$", "[placement]\ncount = 60")]:
        text, n = re.subn(old, new, text, count=1, flags=re.MULTILINE)
        assert n == 1, f"the shipped dickert_lv.toml no longer has {old!r}"
    return text


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("report")
    (base / "large.toml").write_text(_large_scenario_toml())
    jobs = {"rule": ("ieee13", "rule"), "nop2p": ("ieee13", "nop2p"),
            "large": (str(base / "large.toml"), "rule")}
    procs = {name: subprocess.Popen(
        [sys.executable, "-m", "peergrid.scenarios.commands.cli", "simulate", "--scenario",
         scenario, "--policy", policy, "--days", "1", "--out", str(base / name), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for name, (scenario, policy) in jobs.items()}
    for name, p in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{name}: {err}"
    return {name: base / name for name in jobs}


@pytest.fixture(scope="module")
def small_figs(runs):
    figs = figures.run_figures(runs["rule"])
    yield figs
    for f in figs.values():
        figures.pyplot().close(f)


@pytest.fixture(scope="module")
def large_figs(runs):
    figs = figures.run_figures(runs["large"])
    yield figs
    for f in figs.values():
        figures.pyplot().close(f)


def _data_axes(fig) -> list:
    """Axes holding data (not colorbars)."""
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _quadmeshes(ax) -> list:
    from matplotlib.collections import QuadMesh

    return [c for c in ax.collections if isinstance(c, QuadMesh)]


def test_every_value_axis_has_a_unit_and_legends_sit_outside_the_data(small_figs, large_figs):
    for figs in (small_figs, large_figs):
        for name, fig in figs.items():
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            drawn = [ax for ax in _data_axes(fig) if ax.axison]
            for ax in drawn:  # every value axis is labelled, with its unit in brackets
                assert "(" in ax.get_ylabel() and ")" in ax.get_ylabel(), (name, ax.get_ylabel())
            if drawn:  # the time (or other) axis is named under the lowest axes
                assert min(drawn, key=lambda a: a.get_position().y0).get_xlabel(), name
            for ax in _data_axes(fig):
                assert ax.get_legend() is None, f"{name}: a legend inside the axes"
                box = ax.get_window_extent(renderer)
                for legend in fig.legends:
                    assert not legend.get_window_extent(renderer).overlaps(box), name
            for cbar_ax in (a for a in fig.axes if a.get_label() == "<colorbar>"):
                label = cbar_ax.get_ylabel() or cbar_ax.get_xlabel()
                assert "(" in label, (name, label)
    assert small_figs["energy"].axes[0].get_ylabel().startswith("community power (kW")


def test_per_round_quantities_hold_over_their_round(small_figs, runs):
    """Steps go "post" and the last round is drawn to its end (no early shift)."""
    dt_days = read_manifest(runs["rule"])["scenario"]["scenario"]["step_min"] / 60 / 24
    t0 = figures._days(read_table(runs["rule"], "market").time)
    for name in ("energy", "prices_sdr"):
        for ax in small_figs[name].axes:
            lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
            assert lines
            for ln in lines:
                assert ln.get_drawstyle() == "steps-post", (name, ln.get_label())
                x = np.asarray(ln.get_xdata(), float)
                assert x[0] == pytest.approx(t0[0]) and x[-1] == pytest.approx(t0[-1] + dt_days)


def test_each_quantity_has_its_own_colour(small_figs):
    colours = {ln.get_label(): ln.get_color() for ln in small_figs["energy"].axes[0].get_lines()
               if not ln.get_label().startswith("_")}
    assert colours["PV used"] == figures.COLOURS["pv"]
    assert colours["grid export"] == figures.COLOURS["grid_export"]
    assert len(set(colours.values())) == len(colours), colours
    prices = {ln.get_label(): ln.get_color() for ax in small_figs["prices_sdr"].axes
              for ln in ax.get_lines()}
    assert prices["P2P buy price"] == figures.COLOURS["p2p"]


def test_voltages_are_a_band_and_heatmap_above_ten_buses_and_lines_below(small_figs, runs):
    fig = small_figs["voltages"]  # ieee13: 14 buses
    band, heat = _data_axes(fig)
    assert _quadmeshes(heat) and heat.get_ylabel() == "bus (feeder order)"
    assert len(heat.get_yticks()) == 14
    limits = [ln for ln in band.get_lines() if ln.get_linestyle() == "--"]
    assert {tuple(ln.get_ydata()) for ln in limits} >= {(0.95, 0.95), (1.05, 1.05)}
    assert all(ln.get_color() == figures.COLOURS["limit"] for ln in limits)
    mesh = _quadmeshes(heat)[0]
    assert mesh.norm.vcenter == 1.0 and mesh.get_cmap().name == figures.VOLTAGE_CMAP

    grid = read_table(runs["rule"], "grid")
    few = grid[[c for c in grid.columns if not c.startswith("vm_pu.")]
               + [c for c in grid.columns if c.split(".")[1:2] in (["632"], ["671"], ["675"])]]
    lines_fig = figures.voltage_figure(few, 0.95, 1.05, 1.0)
    (ax,) = _data_axes(lines_fig)
    buses = [ln for ln in ax.get_lines() if ln.get_label().startswith("bus ")]
    assert [ln.get_label() for ln in buses] == ["bus 632", "bus 671", "bus 675"]
    assert len({ln.get_color() for ln in buses}) == 3 and not _quadmeshes(ax)
    figures.pyplot().close(lines_fig)


def test_violating_rounds_and_cells_are_marked(large_figs, runs):
    manifest = read_manifest(runs["large"])
    lo, hi = manifest["scenario"]["feeder"]["vm_min_pu"], manifest["scenario"]["feeder"]["vm_max_pu"]
    grid = read_table(runs["large"], "grid")
    _, over, under = bus_violations(grid, lo, hi)
    bad_rounds, bad_cells = int((over | under).any(1).sum()), int((over | under).sum())
    assert bad_rounds > 0, "the test scenario should violate its limits"
    band, heat = _data_axes(large_figs["voltages"])
    shaded = [p for p in band.patches if p.get_facecolor()[:3] == pytest.approx(
        (0xC0 / 255, 0x18 / 255, 0x2A / 255))]
    assert len(shaded) == bad_rounds
    marks = [c for c in heat.collections if c not in _quadmeshes(heat)]
    assert sum(len(c.get_offsets()) for c in marks) == bad_cells
    assert len(heat.get_yticklabels()) <= 40  # 122 buses, labels thinned


def test_state_of_charge_is_a_heatmap_for_many_batteries_and_lines_for_few(small_figs,
                                                                           large_figs):
    (ax,) = _data_axes(large_figs["soc"])
    (mesh,) = _quadmeshes(ax)
    assert mesh.get_array().shape[0] > figures.MAX_SERIES
    assert mesh.norm.vmin == 0.0 and mesh.norm.vmax == 1.0
    (ax,) = _data_axes(small_figs["soc"])
    assert not _quadmeshes(ax) and 0 < len(ax.get_lines()) <= figures.MAX_SERIES


def test_feeder_map_shows_the_worst_round_and_rings_the_buses_out_of_limits(large_figs, runs):
    manifest = read_manifest(runs["large"])
    feeder = manifest["scenario"]["feeder"]
    grid = read_table(runs["large"], "grid")
    vm = figures.bus_voltages(grid, feeder["vm_min_pu"], feeder["vm_max_pu"])
    k = figures.worst_round(vm, feeder["vm_min_pu"], feeder["vm_max_pu"])
    worst = vm.iloc[k]
    assert worst.min() == vm.min().min()  # under-voltage case: the lowest voltage of the run
    fig = large_figs["feeder_map"]
    ax = _data_axes(fig)[0]
    assert pd.Timestamp(grid.time.iloc[k]).strftime("%Y-%m-%d %H:%M") in ax.get_title()
    rings = [c for c in ax.collections if c.get_label() == "bus out of limits"]
    out = int(((worst < feeder["vm_min_pu"]) | (worst > feeder["vm_max_pu"])).sum())
    assert out > 0 and len(rings[0].get_offsets()) == out
    pos, _, slack, _ = figures.feeder_layout("dickert_lv")
    assert set(vm.columns) <= set(pos) and slack == "mv"


def test_plot_writes_every_figure_as_png(runs, tmp_path):
    paths = plot(runs["rule"], tmp_path)
    assert sorted(p.name for p in paths) == ["energy.png", "feeder_map.png", "prices_sdr.png",
                                             "soc.png", "voltages.png"]
    assert all(p.read_bytes()[:8] == PNG for p in paths)


def test_compare_normalises_against_the_baseline(runs, tmp_path):
    table, paths = compare([runs["rule"], runs["nop2p"]], baseline=runs["nop2p"], out=tmp_path)
    assert list(table.index) == ["nop2p", "rule"]
    ratios = [c for c in table.columns if c.endswith("_vs_baseline")]
    assert len(ratios) == 5 and (table.loc["nop2p", ratios] == 1.0).all()
    rule, base = summarize(runs["rule"])["community"], summarize(runs["nop2p"])["community"]
    assert table.at["rule", "cost_vs_baseline"] == pytest.approx(rule["cost"] / base["cost"])
    assert table.at["rule", "self_sufficiency_vs_baseline"] == pytest.approx(
        rule["self_sufficiency"] / base["self_sufficiency"])
    assert table.at["rule", "p2p_kwh"] == pytest.approx(rule["p2p_kwh"])
    assert np.isnan(table.at["rule", "p2p_kwh_vs_baseline"])  # no P2P in the baseline
    assert [p.name for p in paths] == ["compare.png"] and paths[0].read_bytes()[:8] == PNG
    text = format_compare(table)
    assert "nop2p (baseline)" in text and "n/a" in text


def test_compare_refuses_runs_on_another_feeder(runs):
    with pytest.raises(CompareError, match="feeder is 'dickert_lv'.*'ieee13'"):
        compare([runs["rule"], runs["large"]])


def test_large_community_summary_shows_the_extremes_not_every_agent(runs):
    summary = summarize(runs["large"])
    agents = pd.DataFrame(summary["agents"]).sort_values("cost", kind="stable")
    short = format_summary(summary)
    assert len(short.splitlines()) < 45
    assert "--all-agents" in short
    shown = agents[agents.agent.isin(short.split())]
    assert len(shown) == 10  # the 5 highest and the 5 lowest costs (ties in any order)
    assert sorted(shown.cost) == sorted([*agents.cost.head(5), *agents.cost.tail(5)])
    full = format_summary(summary, all_agents=True)
    assert all(a in full.split() for a in agents.agent)
    small = format_summary(summarize(runs["rule"]))
    assert all(f"a{k:02d}" in small.split() for k in range(1, 14))


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_html_report_is_self_contained_and_holds_every_figure(runs):
    from peergrid.scenarios.commands.htmlreport import report_html

    path = report_html(runs["rule"])
    assert path == runs["rule"] / "report.html"
    parser = _Tags()
    parser.feed(path.read_text(encoding="utf-8"))
    names = {tag for tag, _ in parser.tags}
    assert not names & {"script", "link", "iframe", "object", "embed"}
    assert not any("href" in attrs for _, attrs in parser.tags)
    imgs = [attrs for tag, attrs in parser.tags if tag == "img"]
    assert sorted(a["alt"] for a in imgs) == ["energy", "feeder_map", "prices_sdr", "soc",
                                              "voltages"]
    for a in imgs:
        prefix = "data:image/png;base64,"
        assert a["src"].startswith(prefix)
        assert base64.b64decode(a["src"][len(prefix):])[:8] == PNG
    text = path.read_text(encoding="utf-8")
    assert "Per agent" in text and "Community" in text
