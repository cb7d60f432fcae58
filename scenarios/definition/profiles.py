"""Household load and PV profiles from SimBench (2016, 15-minute resolution).

SimBench (simbench.de; Meinecke et al., *Energies* 13(12), 2020) publishes standard
load profiles for German households (H0-A ... H0-L; p and q normalised to their
annual maximum) and PV feed-in profiles (PV1 ... PV8; p per installed kWp). The
``simbench`` package ships the complete data set, so nothing is downloaded at run
time. Data licence: Open Database License 1.0 (database), DbCL 1.0 (contents).

This module reads only the columns it needs, averages 15-minute values to the round
length, and rescales load profiles so that the annual peak of the round averages is
1.0 (``load_peak_kw`` in a scenario is then the agent's annual peak round-average load).

Parsing the CSV files takes most of a short run's start-up, so the parsed table of each
kind is cached on disk after the first load (``_cached_read``): in ``$PEERGRID_CACHE``, or
``$XDG_CACHE_HOME/peergrid``, or ``~/.cache/peergrid``. The file's name and contents carry a
key (SimBench's version, data set, file, columns, cache format), so a new SimBench or a
different selection is a different file; a file that fails its checksum or key check is
logged and rebuilt, never used.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROFILE_YEAR = 2016
_SIMBENCH_SET = "1-complete_data-mixed-all-2-sw"
CACHE_FORMAT = 1
"""Bumped whenever what ``_read`` returns, or the cache file's layout, changes."""

log = logging.getLogger(__name__)


def _simbench_dir() -> str:
    # found, not imported: importing simbench imports pandapower (seconds), and only its
    # data files are needed
    spec = importlib.util.find_spec("simbench")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("simbench is not installed (it ships the load and PV profiles)")
    return os.path.join(next(iter(spec.submodule_search_locations)), "networks", _SIMBENCH_SET)


def cache_dir() -> Path:
    """Where derived data is cached: $PEERGRID_CACHE, else the user's cache directory."""
    if os.environ.get("PEERGRID_CACHE"):
        return Path(os.environ["PEERGRID_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "peergrid"


@functools.cache
def available_profiles() -> tuple[frozenset[str], frozenset[str]]:
    """(load profile names, PV profile names) present in the installed SimBench data."""
    with open(os.path.join(_simbench_dir(), "LoadProfile.csv")) as f:
        load_cols = f.readline().strip().split(";")
    with open(os.path.join(_simbench_dir(), "RESProfile.csv")) as f:
        res_cols = f.readline().strip().split(";")
    loads = frozenset(c[: -len("_pload")] for c in load_cols if c.endswith("_pload"))
    pvs = frozenset(c for c in res_cols if c.startswith("PV"))
    return loads, pvs


def _selection(kind: str) -> tuple[str, list[str]]:
    """(file, columns) of a kind of profile (household active power, PV)."""
    loads, pvs = available_profiles()
    return {"load": ("LoadProfile.csv", [f"{p}_pload" for p in sorted(loads)]),
            "pv": ("RESProfile.csv", sorted(pvs))}[kind]


def _parse(kind: str) -> pd.DataFrame:
    """Every profile of a kind, parsed from SimBench's CSV: one pass over the file
    instead of one per profile."""
    filename, columns = _selection(kind)
    frame = pd.read_csv(
        os.path.join(_simbench_dir(), filename), sep=";", usecols=["time", *columns]
    )
    frame.index = pd.to_datetime(frame.pop("time"), format="%d.%m.%Y %H:%M")
    return frame


def cache_key(kind: str) -> dict[str, Any]:
    """What the cached table of ``kind`` was derived from: any change, another file."""
    filename, columns = _selection(kind)
    return {"format": CACHE_FORMAT, "simbench": metadata.version("simbench"),
            "set": _SIMBENCH_SET, "file": filename, "columns": columns}


def cache_path(kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"simbench-{kind}-{digest}.npz"


def _digest(index_ns: np.ndarray, values: np.ndarray) -> str:
    return hashlib.sha256(index_ns.tobytes() + values.tobytes()).hexdigest()


def _load_cache(path: Path, key: dict[str, Any]) -> pd.DataFrame:
    """The cached table; raises ValueError (or an I/O error) unless it is intact and
    derived from ``key``."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        index_ns, values = z["index_ns"], z["values"]
    if meta.get("key") != key:
        raise ValueError("derived from other data (key differs)")
    if meta.get("sha256") != _digest(index_ns, values):
        raise ValueError("checksum differs")
    frame = pd.DataFrame(values, columns=pd.Index(meta["columns"], dtype=object),
                         index=pd.DatetimeIndex(index_ns.view("datetime64[ns]"),
                                                name=meta["index_name"]))
    return frame


def _save_cache(path: Path, key: dict[str, Any], frame: pd.DataFrame) -> None:
    """Written to a temporary file in the same directory, then renamed: a reader sees
    the old file or the whole new one, never half of one."""
    index_ns = frame.index.to_numpy(dtype="datetime64[ns]").view("int64")
    values = np.ascontiguousarray(frame.to_numpy(dtype=float))
    meta = {"key": key, "columns": [str(c) for c in frame.columns],
            "index_name": frame.index.name, "sha256": _digest(index_ns, values)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), index_ns=index_ns, values=values)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached_read(kind: str) -> pd.DataFrame:
    key = cache_key(kind)
    path = cache_path(kind, key)
    if path.is_file():
        try:
            return _load_cache(path, key)
        except Exception as err:  # noqa: BLE001  (any unreadable file is rebuilt, never trusted)
            log.warning("profile cache %s unusable (%s: %s): rebuilding it",
                        path, type(err).__name__, err)
    frame = _parse(kind)
    try:
        _save_cache(path, key, frame)
    except OSError as err:  # a read-only home still runs, uncached
        log.warning("profile cache %s not written (%s): profiles are parsed every run", path, err)
    return frame


@functools.cache
def _read(kind: str) -> pd.DataFrame:
    """Every profile of a kind (household active power, PV), parsed once per process
    and cached on disk across processes."""
    return _cached_read(kind)


def _per_step(series: pd.Series, step_min: int) -> pd.Series:
    """Round averages. The profiles' timestamps are local time: the hour the spring
    clock change skips (27 March 02:00) has no values and is interpolated from its
    neighbours; the autumn hour that occurs twice is averaged with itself."""
    return series.resample(f"{step_min}min").mean().interpolate(limit_area="inside")


@functools.cache
def load_factor(profile: str, step_min: int) -> pd.Series:
    """Active-power load factor per round for the whole year, annual peak = 1."""
    s = _per_step(_read("load")[f"{profile}_pload"], step_min)
    return s / s.max()


@functools.cache
def pv_factor(profile: str, step_min: int) -> pd.Series:
    """PV output per kWp installed, per round, for the whole year."""
    return _per_step(_read("pv")[profile], step_min).clip(lower=0.0)


def window(series: pd.Series, start: dt.date, days: int) -> np.ndarray:
    """Values from ``start`` 00:00 for ``days`` days; raises if outside the profile year."""
    begin = pd.Timestamp(start)
    end = begin + pd.Timedelta(days=days)
    if begin < series.index[0] or end > series.index[-1] + pd.Timedelta(series.index.freq):
        raise ValueError(
            f"{start} + {days} days lies outside the profile year {PROFILE_YEAR}"
        )
    return series.loc[begin : end - pd.Timedelta(seconds=1)].to_numpy(dtype=float)
