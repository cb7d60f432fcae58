"""Issue 15, items 5 (Parquet) and 6 (speed): the profile cache, buffered record
writing, Parquet runs that read back as the JSON Lines run, and imports kept lazy."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from peergrid.comms import runlog
from peergrid.comms.runlog import ParquetUnavailable, RunWriter
from peergrid.scenarios.definition import profiles


# ---- profile cache ---------------------------------------------------------------------


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("PEERGRID_CACHE", str(d))
    return d


@pytest.mark.parametrize("kind", ["load", "pv"])
def test_a_cached_profile_table_equals_the_parsed_one_exactly(cache_dir, kind):
    parsed = profiles._parse(kind)
    built = profiles._cached_read(kind)  # miss: parses and writes the cache
    assert list(cache_dir.glob("*.npz")) == [profiles.cache_path(kind, profiles.cache_key(kind))]
    cached = profiles._cached_read(kind)  # hit
    for frame in (built, cached):
        pd.testing.assert_frame_equal(frame, parsed, check_exact=True)
        assert frame.index.name == parsed.index.name
        assert frame.columns.dtype == parsed.columns.dtype
    assert not list(cache_dir.glob("*.tmp"))  # written whole, then renamed


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_corrupt_cache_file_is_logged_and_rebuilt(cache_dir, caplog, damage):
    profiles._cached_read("pv")
    path = profiles.cache_path("pv", profiles.cache_key("pv"))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":  # one byte inside the values: only the checksum sees it
        data[len(data) // 2] ^= 0x01
    else:
        data = bytearray(b"not a cache file")
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger=profiles.__name__):
        frame = profiles._cached_read("pv")
    assert "unusable" in caplog.text and "rebuilding" in caplog.text
    pd.testing.assert_frame_equal(frame, profiles._parse("pv"), check_exact=True)
    pd.testing.assert_frame_equal(profiles._load_cache(path, profiles.cache_key("pv")), frame,
                                  check_exact=True)  # the rebuilt file is intact


def test_the_cache_key_changes_with_the_simbench_version_and_the_selection(cache_dir,
                                                                          monkeypatch):
    key = profiles.cache_key("load")
    assert key["simbench"] and key["columns"] and key["set"] == profiles._SIMBENCH_SET
    real_version = profiles.metadata.version
    monkeypatch.setattr(profiles.metadata, "version",
                        lambda name: "99.0" if name == "simbench" else real_version(name))
    other = profiles.cache_key("load")
    assert other["simbench"] == "99.0"
    assert profiles.cache_path("load", other) != profiles.cache_path("load", key)
    assert profiles.cache_path("pv", profiles.cache_key("pv")) != profiles.cache_path("load", key)
    # a file whose stored key differs is refused even under the right name
    profiles._cached_read("pv")
    path = profiles.cache_path("pv", profiles.cache_key("pv"))
    with pytest.raises(ValueError, match="key differs"):
        profiles._load_cache(path, {**profiles.cache_key("pv"), "format": -1})


def test_the_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("PEERGRID_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert profiles.cache_dir() == tmp_path / "xdg" / "peergrid"
    monkeypatch.setenv("PEERGRID_CACHE", str(tmp_path / "mine"))
    assert profiles.cache_dir() == tmp_path / "mine"


# ---- record writing --------------------------------------------------------------------


def test_a_node_writer_has_every_row_in_the_file_when_the_process_is_killed(tmp_path):
    """The deployed nodes' guarantee: an unbuffered writer's rows survive SIGKILL."""
    code = textwrap.dedent(f"""
        import os, signal
        from peergrid.comms.runlog import RunWriter
        w = RunWriter({str(tmp_path)!r})
        for k in range(5):
            w.write_row("market.jsonl", {{"episode": 0, "round": k}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert done.returncode == -signal.SIGKILL
    rows = [json.loads(line) for line in (tmp_path / "market.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2, 3, 4]


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def test_a_buffered_writer_writes_every_n_rounds_at_close_and_on_an_exception(tmp_path):
    market = tmp_path / "market.jsonl"
    w = RunWriter(tmp_path, buffer_rounds=3)
    for k in range(2):
        w.write_round([], {"round": k}, {"round": k})
    assert _rows(market) == []  # held in memory
    w.write_round([], {"round": 2}, {"round": 2})
    assert [r["round"] for r in _rows(market)] == [0, 1, 2]  # the third round flushes
    w.write_round([], {"round": 3}, {"round": 3})
    assert w.offsets(["market.jsonl"]) == {"market.jsonl": market.stat().st_size}
    assert len(_rows(market)) == 4  # offsets count what is on disk: they flush first
    w.write_round([], {"round": 4}, {"round": 4})
    w.close()
    assert [r["round"] for r in _rows(market)] == [0, 1, 2, 3, 4]

    other = tmp_path / "crashed"
    with pytest.raises(RuntimeError), RunWriter(other, buffer_rounds=100, fmt="jsonl") as w2:
        w2.write_round([], {"round": 0}, {"round": 0})
        raise RuntimeError("the run fails")
    assert _rows(other / "market.jsonl") == [{"round": 0}]


def test_a_record_row_has_every_column_in_order():
    from peergrid.agents.records import RECORD_COLUMNS, RoundRecord

    values = [1, 2, "t", "a", "b"] + [float(i) for i in range(len(RECORD_COLUMNS) - 5)]
    row = RoundRecord(*values).as_dict()
    assert list(row) == list(RECORD_COLUMNS) and list(row.values()) == values


# ---- Parquet ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both_formats(tmp_path_factory, _ieee13_scenario):
    pytest.importorskip("pyarrow")
    from peergrid.scenarios.commands.simulate import simulate

    root = tmp_path_factory.mktemp("formats")
    runs = {fmt: simulate(_ieee13_scenario, "ieee13", "rule", root / fmt, days=2,
                          progress=False, fmt=fmt) for fmt in ("jsonl", "parquet")}
    return runs


def test_a_parquet_run_reads_back_as_the_jsonl_run(both_formats):
    from peergrid.scenarios.runtime.logs import read_records, read_table

    jsonl, parquet = both_formats["jsonl"], both_formats["parquet"]
    assert sorted(p.name for p in parquet.glob("*.parquet")) == [
        "agents.parquet", "grid.parquet", "market.parquet"]
    assert not list(parquet.rglob("*.jsonl"))  # converted, not kept twice
    records = read_records(jsonl)
    assert len(records) == 13 * 48
    pd.testing.assert_frame_equal(read_records(parquet), records, check_exact=True)
    for name in ("market", "grid"):
        pd.testing.assert_frame_equal(read_table(parquet, name), read_table(jsonl, name),
                                      check_exact=True)


def test_logs_summarize_and_check_agree_on_both_formats(both_formats):
    from peergrid.scenarios.commands.report import summarize
    from peergrid.scenarios.definition import checks
    from peergrid.scenarios.runtime.logs import read_records

    a, b = (summarize(both_formats[f]) for f in ("jsonl", "parquet"))
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert checks.all_problems(read_records(both_formats["parquet"]), 1.0) == []


def test_nested_market_columns_survive_parquet(tmp_path):
    """A deployment's market rows carry lists and dicts (some empty)."""
    pytest.importorskip("pyarrow")
    from peergrid.scenarios.runtime.logs import read_table

    with RunWriter(tmp_path) as w:
        w.write_row("market.jsonl", {"episode": 0, "round": 0, "sdr": float("inf"),
                                     "bids_missing": [], "bids_refused": {}, "down": []})
        w.write_row("market.jsonl", {"episode": 0, "round": 1, "sdr": 0.5,
                                     "bids_missing": ["a03"],
                                     "bids_refused": {"a01": "late"}, "down": ["a03"]})
    before = read_table(tmp_path, "market")
    runlog.convert_to_parquet(tmp_path)
    after = read_table(tmp_path, "market")
    pd.testing.assert_frame_equal(after, before, check_exact=True)
    assert after.bids_refused.tolist() == [{}, {"a01": "late"}]


def test_parquet_without_pyarrow_is_one_clear_line_before_anything_runs(monkeypatch, tmp_path,
                                                                        ieee13_scenario):
    from peergrid.scenarios.commands.simulate import simulate

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    with pytest.raises(ParquetUnavailable) as err:
        simulate(ieee13_scenario, "ieee13", "rule", tmp_path / "run", days=1, progress=False,
                 fmt="parquet")
    assert str(err.value) == "--format parquet needs pyarrow: pip install 'peergrid[parquet]'"
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="format = 'csv'"):
        runlog.check_format("csv")


# ---- lazy imports ----------------------------------------------------------------------


def _modules_after(imports: str) -> set[str]:
    code = f"import sys, json; {imports}; print(json.dumps(sorted(sys.modules)))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    return set(json.loads(out))


def test_the_logs_modules_import_no_torch_pandapower_or_simbench():
    loaded = _modules_after(
        "import peergrid.scenarios.runtime.logs, peergrid.comms.runlog, "
        "peergrid.agents.records, peergrid.scenarios.commands.report, "
        "peergrid.scenarios.definition.checks, peergrid.scenarios.definition.loader, "
        "peergrid.scenarios.definition.schema")
    assert not loaded & {"torch", "pandapower", "simbench", "matplotlib.pyplot"}


def test_a_per_phase_simulate_needs_no_pandapower(tmp_path):
    """pandapower's import was half of a week's simulate: the per-phase feeder, its
    bus names and its electrical nodes are known without it."""
    loaded = _modules_after(
        "from peergrid.scenarios.definition.loader import load_scenario; "
        "from peergrid.scenarios.commands.simulate import simulate; "
        "from peergrid.scenarios.commands.report import write_summary; "
        f"write_summary(simulate(load_scenario('ieee13'), 'ieee13', 'rule', "
        f"{str(tmp_path / 'run')!r}, days=1, progress=False))")
    assert not loaded & {"torch", "pandapower", "simbench"}


def test_feeder_facts_known_without_pandapower_match_the_built_network():
    from peergrid.grid.feeders import FEEDERS, build_feeder, bus_groups
    from peergrid.grid.powerflow import topology_of

    for name, info in FEEDERS.items():
        net = build_feeder(name)
        if info.buses is not None:
            assert info.buses == tuple(str(b) for b in net.bus.name)
        if info.phases is not None:
            topology = topology_of(net)
            buses = [str(b) for b in net.bus.name]
            for agents in (None, (), tuple(buses), ("632", "671"), ("675", "611", "634")):
                assert bus_groups(name, agents) == topology.bus_groups(agents), (name, agents)
