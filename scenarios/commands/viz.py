"""The live view: the mesa model in the browser through mesa's SolaraViz.

What it draws, one round at a time (Step, Play, Reset in the sidebar):

- the feeder, from the pandapower network's bus geodata, or as a tree from the slack
  bus when it has none (IEEE 13, Dickert LV), each bus coloured by its voltage on a
  diverging scale centred at 1.0 pu that saturates at the scenario's limits, buses out
  of limits ringed;
- every agent's battery state of charge and its P2P and grid trades in the round;
- the P2P prices between the retail and feed-in tariff, the supply-demand ratio, the
  P2P volume and the voltage range, over the rounds played.

solara (the optional ``[viz]`` extra) is imported here only. ``serve`` runs the view as
a local solara server (``peergrid view``); ``solara run peergrid.scenarios.commands.viz``
does the same with the defaults or the settings in ``PEERGRID_VIEW`` (JSON).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import solara
from matplotlib.figure import Figure
with warnings.catch_warnings():  # mesa 3.3's SolaraViz trips solara's hook linter at
    # import (a harmless early return): not the user's concern, on every start
    warnings.filterwarnings("ignore", message=".*found despite early return",
                            category=UserWarning)
    from mesa.visualization import SolaraViz

from peergrid.agents.policies import REFERENCE_POLICIES
from peergrid.scenarios.definition.loader import builtin_scenarios, load_scenario
from peergrid.scenarios.commands.figures import (COLOURS, LIMIT_STYLE, bus_voltages,
                                                 feeder_map_figure)
from peergrid.scenarios.runtime.model import MarketModel

CONFIG_ENV = "PEERGRID_VIEW"
"""Environment variable carrying the view's settings (JSON of ``ViewConfig``) to the
solara server process."""

MAX_LABELLED_AGENTS = 30
"""Above this many agents the bar charts drop their agent labels (unreadable)."""

FIGSIZE_IN = (6.4, 3.9)
"""Each panel's size at 100 dpi: fits one cell of SolaraViz's grid (about 400 px high)."""

SDR_SHOWN_MAX = 3.0
"""SDR is drawn up to here (it is +inf with sellers and no buyers)."""


@dataclass(frozen=True)
class ViewConfig:
    """What the view starts with (the sidebar can change all but the seed)."""

    scenario: str = "ieee13"
    policy: str = "rule"
    days: int = 1
    seed: int | None = None


def read_config(environ: Mapping[str, str] = os.environ) -> ViewConfig:
    raw = environ.get(CONFIG_ENV)
    return ViewConfig(**json.loads(raw)) if raw else ViewConfig()


# ---- feeder drawing ------------------------------------------------------------------


def bus_voltages_pu(model: MarketModel) -> dict[str, float]:
    """Each bus's voltage in the last round, its worst phase as ``logs plot`` takes it
    (figures.bus_voltages). Empty before the first round."""
    if model.grid_row is None:
        return {}
    f = model.community.scenario.feeder
    vm = bus_voltages(pd.DataFrame([model.grid_row]), f.vm_min_pu, f.vm_max_pu).iloc[0]
    return {bus: float(v) for bus, v in vm.items() if math.isfinite(v)}


def feeder_figure(model: MarketModel) -> Figure:
    """The feeder map of ``logs plot`` at the last round played, markers sized by the
    agents at each bus."""
    f = model.community.scenario.feeder
    agents_at = pd.Series([a.bus for a in model.community.scenario.agents]).value_counts()
    return feeder_map_figure(f.name, bus_voltages_pu(model), f.vm_min_pu, f.vm_max_pu,
                             _round_label(model), agents_at.to_dict())


# ---- agents and market ---------------------------------------------------------------


def agents_frame(model: MarketModel) -> pd.DataFrame:
    """Per agent: state of charge (NaN without a battery) and the last round's trades."""
    rows = []
    for agent, p in zip(model.community.agent_ids, model.community.prosumers, strict=True):
        r = next((a.record for a in model.prosumers if a.agent_id == agent), None)
        rows.append({
            "agent": agent,
            "soc_pct": 100 * p.soc if p.spec.battery.present else np.nan,
            "p2p_kwh": 0.0 if r is None else r.p2p_sold_kwh - r.p2p_bought_kwh,
            "grid_kwh": 0.0 if r is None else r.grid_export_kwh - r.grid_import_kwh,
        })
    return pd.DataFrame(rows).set_index("agent")


def agents_figure(model: MarketModel) -> Figure:
    frame = agents_frame(model)
    x = np.arange(len(frame))
    fig = Figure(figsize=FIGSIZE_IN, layout="constrained")
    soc_ax, trade_ax = fig.subplots(2, 1, sharex=True)
    soc_ax.bar(x, frame.soc_pct, color=COLOURS["battery"])
    soc_ax.set_ylim(0, 100)
    soc_ax.set_ylabel("battery SoC (%)")
    soc_ax.set_title(f"agents: {_round_label(model)}", fontsize=10)
    width = 0.4
    trade_ax.bar(x - width / 2, frame.p2p_kwh, width, color=COLOURS["p2p"],
                 label="P2P (sold > 0, bought < 0)")
    trade_ax.bar(x + width / 2, frame.grid_kwh, width, color=COLOURS["grid_import"],
                 label="grid (export > 0, import < 0)")
    trade_ax.axhline(0, color="black", lw=0.6)
    trade_ax.set_ylabel("traded in round (kWh)")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    if len(frame) <= MAX_LABELLED_AGENTS:
        trade_ax.set_xticks(x, frame.index, rotation=90, fontsize=8)
    else:
        trade_ax.set_xlabel(f"{len(frame)} agents, in scenario order")
    return fig


def market_figure(model: MarketModel) -> Figure:
    rounds = model.datacollector.get_model_vars_dataframe().iloc[1:]
    f = model.community.scenario.feeder
    fig = Figure(figsize=FIGSIZE_IN, layout="constrained")
    price_ax, sdr_ax, vm_ax = fig.subplots(3, 1, sharex=True)
    # every round's value held over its hour: one more edge than rounds
    x = np.arange(len(rounds) + 1) if len(rounds) else np.arange(0)
    step = {"where": "post"}

    def held(column: str) -> np.ndarray:
        values = rounds[column].to_numpy(dtype=float)
        return np.append(values, values[-1:]) if len(values) else values
    price_ax.step(x, held("retail_price_per_kwh"), color=COLOURS["retail"], lw=1,
                  label="retail", **step)
    price_ax.step(x, held("feed_in_price_per_kwh"), color=COLOURS["feed_in"], lw=1,
                  label="feed-in", **step)
    price_ax.step(x, held("buy_price_per_kwh"), color=COLOURS["p2p"], label="P2P buy", **step)
    price_ax.step(x, held("sell_price_per_kwh"), color=COLOURS["p2p"], ls="--", label="P2P sell",
                  **step)
    price_ax.set_ylabel("price\n(currency/kWh)")
    price_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
    price_ax.set_title(f"market: {_round_label(model)}", fontsize=10)

    sdr = np.minimum(held("sdr"), SDR_SHOWN_MAX)
    sdr_ax.step(x, sdr, color=COLOURS["sdr"], label=f"SDR (capped at {SDR_SHOWN_MAX:g})",
                **step)
    sdr_ax.set_ylim(0, SDR_SHOWN_MAX * 1.05)
    sdr_ax.set_ylabel("supply-demand\nratio")
    volume_ax = sdr_ax.twinx()
    volume_ax.bar(x[:-1], rounds.p2p_kwh, width=1.0, align="edge", color=COLOURS["p2p"], alpha=0.25,
                  label="P2P volume")
    volume_ax.set_ylabel("P2P (kWh)")
    sdr_ax.set_zorder(volume_ax.get_zorder() + 1)
    sdr_ax.patch.set_visible(False)
    handles = [*sdr_ax.get_legend_handles_labels()[0], *volume_ax.get_legend_handles_labels()[0]]
    sdr_ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.12, 1), fontsize=7,
                  frameon=False)

    vm_ax.fill_between(x, held("vm_min_pu"), held("vm_max_pu"), step="post", color=COLOURS["band"],
                       alpha=0.35, label="bus voltage range")
    vm_ax.axhline(f.vm_min_pu, **LIMIT_STYLE, label="limits")
    vm_ax.axhline(f.vm_max_pu, **LIMIT_STYLE)
    violated = rounds.voltage_violations.to_numpy(dtype=float) > 0
    if violated.any():
        vm_ax.scatter(x[:-1][violated] + 0.5, np.full(violated.sum(), f.vm_max_pu), marker="v",
                      color=COLOURS["violation"], s=14, label="violation")
    vm_ax.set_ylabel("voltage (pu)")
    vm_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
    step_h = model.community.dt_h
    vm_ax.set_xlabel(f"round ({step_h:g} h each)")
    vm_ax.set_xlim(0, max(model.community.n_rounds, 1))
    return fig


def _round_label(model: MarketModel) -> str:
    played = model.k
    if played == 0:
        return f"no round played yet (of {model.community.n_rounds})"
    time = str(model.market_row["time"]).replace("T", " ")[:16] if model.market_row else ""
    return f"round {played} of {model.community.n_rounds}, {time}"


# ---- solara components ---------------------------------------------------------------


def _figure(fig: Figure, model: MarketModel) -> Any:
    return solara.FigureMatplotlib(fig, format="png", dpi=100,
                                   dependencies=[id(model), model.steps])


def FeederMap(model: MarketModel) -> Any:
    return _figure(feeder_figure(model), model)


def AgentsPanel(model: MarketModel) -> Any:
    return _figure(agents_figure(model), model)


def MarketPanel(model: MarketModel) -> Any:
    return _figure(market_figure(model), model)


def RoundInfo(model: MarketModel) -> Any:
    """Plain text, not solara.Markdown: Markdown loads KaTeX from a CDN (offline: 404s)."""
    s = model.community.scenario
    status = "running" if model.running else "window over"
    with solara.Column() as info:
        solara.Text(f"Round {model.k} of {model.community.n_rounds}",
                    style={"font-size": "1.4em", "font-weight": "bold"})
        solara.Text(f"scenario {s.scenario.id} on feeder {s.feeder.name}, {len(s.agents)} "
                    f"agents, {model.community.days} day(s) from "
                    f"{model.community.start.isoformat()}, {status}.")
        solara.Text("Sidebar: Step plays one round, ▶ plays on, Reset rebuilds the model "
                    "with the parameters chosen there.")
    return info


def model_params(config: ViewConfig) -> dict[str, Any]:
    """SolaraViz's parameter inputs (re-applied on Reset)."""
    scenarios = builtin_scenarios()
    if config.scenario not in scenarios:  # a file path: offered beside the shipped ones
        scenarios = [config.scenario, *scenarios]
    return {
        "scenario": {"type": "Select", "value": config.scenario, "values": scenarios,
                     "label": "scenario"},
        "policy": {"type": "Select", "value": config.policy, "values": list(REFERENCE_POLICIES),
                   "label": "policy"},
        "days": {"type": "SliderInt", "value": config.days, "min": 1,
                 "max": max(7, config.days), "step": 1, "label": "days"},
        "seed": config.seed,
    }


COMPONENTS = [FeederMap, AgentsPanel, MarketPanel, RoundInfo]


@solara.component
def Page() -> None:
    config = solara.use_memo(read_config, [])
    model = solara.use_memo(lambda: MarketModel(**asdict(config)), [])
    SolaraViz(model, components=COMPONENTS, model_params=model_params(config),
              name=f"peergrid live view: {config.scenario}, policy {config.policy}",
              play_interval=300)


# ---- launching -----------------------------------------------------------------------


def view_command(scenario: str = "ieee13", policy: str = "rule", days: int = 1,
                 seed: int | None = None, port: int = 8765, host: str = "localhost",
                 open_browser: bool = False) -> tuple[list[str], dict[str, str]]:
    """The solara server command and its environment, checked first so a bad value is a
    one-line error, not a traceback in a browser tab."""
    if policy not in REFERENCE_POLICIES:
        raise ValueError(f"policy = {policy!r}: unknown (choose from "
                         f"{', '.join(REFERENCE_POLICIES)})")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days = {days!r}: must be a positive integer")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port = {port!r}: must be 0 (any free port) to 65535")
    load_scenario(scenario)  # a ScenarioError names the field and value
    config = ViewConfig(scenario=str(scenario), policy=policy, days=days, seed=seed)
    env = {
        **os.environ,
        CONFIG_ENV: json.dumps(asdict(config)),
        # solara reports usage to an online service by default: the view works offline
        "SOLARA_TELEMETRY_MIXPANEL_ENABLE": "False",
    }
    command = [sys.executable, "-m", "solara", "run", __name__, "--production",
               "--host", host, "--port", str(port), "--open" if open_browser else "--no-open",
               "--log-level", "warning"]
    return command, env


def serve(scenario: str = "ieee13", policy: str = "rule", days: int = 1,
          seed: int | None = None, port: int = 8765, host: str = "localhost",
          open_browser: bool = False) -> int:
    """Run the live view at http://host:port/ until interrupted (Ctrl-C); the server's
    exit code. What ``peergrid view`` calls."""
    command, env = view_command(scenario, policy, days, seed, port, host, open_browser)
    _check_port_free(host, port)
    print(f"peergrid view: http://{host}:{port}/  (Ctrl-C stops it)", flush=True)
    server = subprocess.Popen(command, env=env)
    stop = signal.signal(signal.SIGTERM, _raise_interrupt)  # ended by a signal: end the server
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        return server.wait()
    finally:
        signal.signal(signal.SIGTERM, stop)
        if server.poll() is None:
            server.kill()
            server.wait()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _check_port_free(host: str, port: int) -> None:
    """A port in use is one line now, not a bind error from the server seconds later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise OSError(f"view: {host}:{port} is not free ({err.strerror}); "
                          "choose another --port") from None
