"""Run directories: record writers and readers shared by every runtime.

Layout of ``runs/NAME/``::

    manifest.json        resolved scenario, seed, policy, versions, git commit, command
    agents/<id>.jsonl    one RoundRecord per round (agents.records): written every 96
                         rounds in process, every round by a deployed node (comms.runlog)
    market.jsonl         one row per round: TSP, TBP, SDR, prices, P2P volume
    grid.jsonl           one row per round: convergence, line loading, vm_pu.<bus>
    summary.json, *.png  written by `peergrid logs summarize|plot`

Files are JSON Lines that ``pandas.read_json(path, lines=True)`` reads directly
(``Infinity`` appears where SDR is infinite: sellers and no buyers). A run written with
``--format parquet`` has ``agents.parquet``, ``market.parquet`` and ``grid.parquet``
instead (comms.runlog.convert_to_parquet); ``read_records`` and ``read_table`` read
either, to the same DataFrame. Readers de-duplicate on the natural key, so a replayed
round is never counted twice.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from peergrid.agents.records import RoundRecord  # noqa: F401
from peergrid.comms.runlog import (AGENTS_PARQUET, FORMATS, RunWriter,  # noqa: F401
                                   check_format, convert_to_parquet, read_jsonl, read_parquet)

IN_PROCESS_BUFFER_ROUNDS = 96
"""In-process runs write their records every this many rounds (and at the end): a
flush per row was most of the cost of recording a round (comms.runlog)."""
AGENT_KEY = ["episode", "round", "agent"]
ROUND_KEY = ["episode", "round"]
_VERSIONED = ("peergrid", "numpy", "pandas", "pandapower", "mesa", "pettingzoo", "simbench",
              "networkx", "pyzmq", "torch")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_manifest(run_dir: str | Path, scenario_source: str, scenario: Any, **run: Any) -> None:
    """Record everything needed to reproduce a run."""
    manifest = {
        "scenario_source": scenario_source,
        "scenario": scenario.model_dump(mode="json"),
        "seed": scenario.scenario.seed,
        "run": run,
        "versions": versions(),
        "git_commit": _git_commit(),
        "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]],
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(run_dir) / "manifest.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no manifest.json (is this a peergrid run directory?)")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_records(run_dir: str | Path) -> pd.DataFrame:
    """All agents' round records (JSON Lines or Parquet), sorted and de-duplicated on
    (episode, round, agent)."""
    parquet = Path(run_dir) / AGENTS_PARQUET
    if parquet.is_file():  # complete before any JSON Lines file was removed
        df = read_parquet(parquet)
    else:
        files = sorted((Path(run_dir) / "agents").glob("*.jsonl"))
        if not files:
            raise FileNotFoundError(f"{run_dir}/agents: no agent records")
        df = pd.concat([read_jsonl(p) for p in files], ignore_index=True)
    df = df.drop_duplicates(AGENT_KEY, keep="last")
    return df.sort_values(AGENT_KEY, kind="stable").reset_index(drop=True)


def read_table(run_dir: str | Path, name: str) -> pd.DataFrame:
    """market or grid (.parquet or .jsonl), de-duplicated on (episode, round)."""
    parquet = Path(run_dir) / f"{name}.parquet"
    path = Path(run_dir) / f"{name}.jsonl"
    if parquet.is_file():
        df = read_parquet(parquet)
    elif path.is_file():
        df = read_jsonl(path)
    else:
        raise FileNotFoundError(f"{path}: missing")
    df = df.drop_duplicates(ROUND_KEY, keep="last")
    return df.sort_values(ROUND_KEY, kind="stable").reset_index(drop=True)
