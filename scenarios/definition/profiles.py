"""Household load and PV profiles from SimBench (2016, 15-minute resolution).

SimBench (simbench.de; Meinecke et al., *Energies* 13(12), 2020) publishes standard
load profiles for German households (H0-A ... H0-L; p and q normalised to their
annual maximum) and PV feed-in profiles (PV1 ... PV8; p per installed kWp). The
``simbench`` package ships the complete data set, so nothing is downloaded at run
time. Data licence: Open Database License 1.0 (database), DbCL 1.0 (contents).

This module reads only the columns it needs, averages 15-minute values to the round
length, and rescales load profiles so that the annual peak of the round averages is
1.0 (``load_peak_kw`` in a scenario is then the agent's annual peak round-average load).
"""

from __future__ import annotations

import datetime as dt
import functools
import os

import numpy as np
import pandas as pd

PROFILE_YEAR = 2016
_SIMBENCH_SET = "1-complete_data-mixed-all-2-sw"


def _simbench_dir() -> str:
    import simbench

    return os.path.join(simbench.__path__[0], "networks", _SIMBENCH_SET)


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


@functools.cache
def _read(kind: str) -> pd.DataFrame:
    """Every profile of a kind (household active power, PV), parsed once per process:
    one pass over the file instead of one per profile."""
    loads, pvs = available_profiles()
    filename, columns = {"load": ("LoadProfile.csv", [f"{p}_pload" for p in sorted(loads)]),
                         "pv": ("RESProfile.csv", sorted(pvs))}[kind]
    frame = pd.read_csv(
        os.path.join(_simbench_dir(), filename), sep=";", usecols=["time", *columns]
    )
    frame.index = pd.to_datetime(frame.pop("time"), format="%d.%m.%Y %H:%M")
    return frame


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
