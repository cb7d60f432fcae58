"""Run directories: record writers and readers shared by every runtime.

Layout of ``runs/NAME/``::

    manifest.json        resolved scenario, seed, policy, versions, git commit, command
    agents/<id>.jsonl    one RoundRecord per round (agents.records), flushed every round
    market.jsonl         one row per round: TSP, TBP, SDR, prices, P2P volume
    grid.jsonl           one row per round: convergence, line loading, vm_pu.<bus>
    summary.json, *.png  written by `peergrid logs summarize|plot`

Files are JSON Lines that ``pandas.read_json(path, lines=True)`` reads directly
(``Infinity`` appears where SDR is infinite: sellers and no buyers). Readers
de-duplicate on the natural key, so a replayed round is never counted twice.
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
from peergrid.comms.runlog import RunWriter  # noqa: F401  (one writer for every runtime)

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


def _read_jsonl(path: Path) -> pd.DataFrame:
    return pd.read_json(path, lines=True, dtype=False) if path.stat().st_size else pd.DataFrame()


def read_records(run_dir: str | Path) -> pd.DataFrame:
    """All agents' round records, sorted and de-duplicated on (episode, round, agent)."""
    files = sorted((Path(run_dir) / "agents").glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{run_dir}/agents: no agent records")
    df = pd.concat([_read_jsonl(p) for p in files], ignore_index=True)
    df = df.drop_duplicates(AGENT_KEY, keep="last")
    return df.sort_values(AGENT_KEY, kind="stable").reset_index(drop=True)


def read_table(run_dir: str | Path, name: str) -> pd.DataFrame:
    """market.jsonl or grid.jsonl, de-duplicated on (episode, round)."""
    path = Path(run_dir) / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    df = _read_jsonl(path).drop_duplicates(ROUND_KEY, keep="last")
    return df.sort_values(ROUND_KEY, kind="stable").reset_index(drop=True)
