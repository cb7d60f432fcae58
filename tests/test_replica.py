"""comms.replica without Ray: a node writing into a directory of its own machine, each
checkpoint copied (with the rows it covers) to the run directory before the node would
send; the run directory then resumes a node exactly as the node's own disk would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from peergrid.comms.node import NodeLog
from peergrid.comms.nodes.loop import Checkpoints
from peergrid.comms.replica import LEDGER, Replica, RunStore, node_tables, seed_files
from peergrid.comms.runlog import RunWriter


def _node(local: Path, store: RunStore, name: str = "a01"):
    writer = RunWriter(local)
    replica = Replica(local, name, node_tables("prosumer", name), store.put)
    checkpoints = Checkpoints(local / "checkpoints" / f"{name}.state", writer,
                              node_tables("prosumer", name), replica)
    return writer, checkpoints, replica


def _bytes(path: Path) -> bytes:
    return path.read_bytes() if path.is_file() else b""


def _same(a: Path, b: Path, rel: str) -> None:
    assert (a / rel).is_file() and _bytes(a / rel) == _bytes(b / rel), rel


def test_every_checkpoint_reaches_the_run_directory_with_the_rows_it_covers(tmp_path):
    out, local = tmp_path / "run", tmp_path / "machine"
    store = RunStore(str(out))
    writer, checkpoints, replica = _node(local, store)
    log = NodeLog(local / "nodes" / "a01.jsonl")
    rel = "agents/a01.jsonl"
    for k in range(5):
        writer.write_row(rel, {"round": k})
        log.event("round", k=k)
        checkpoints.save({"k": k})
        # what the checkpoint counts is in the run directory, before any send
        saved = Checkpoints.read(out / "checkpoints" / "a01.state")
        assert saved["state"] == {"k": k} and saved["offsets"][rel] == (out / rel).stat().st_size
        _same(local, out, rel)
    writer.write_row(rel, {"round": 5})  # after the last checkpoint: not copied yet
    assert (out / rel).stat().st_size < (local / rel).stat().st_size
    log.event("exit", reason="stop")
    replica.sync()  # the end of a run: the rest, the node log's last lines too
    _same(local, out, rel)
    _same(local, out, "nodes/a01.jsonl")
    log.close()


def test_a_node_resumed_from_the_run_directory_elsewhere_cuts_the_copy_back_too(tmp_path):
    """The machine is lost after rows past the checkpoint were copied (a final sync):
    the next incarnation, seeded from the run directory on another machine, resumes
    from the checkpoint and the run directory's rows are cut back with its own."""
    out = tmp_path / "run"
    store = RunStore(str(out))
    writer, checkpoints, replica = _node(tmp_path / "lost", store)
    rel = "agents/a01.jsonl"
    for k in range(3):
        writer.write_row(rel, {"round": k})
        checkpoints.save({"k": k})
    writer.write_row(rel, {"round": 3})
    replica.sync()  # copied, but after the checkpoint: to be redone
    assert len((out / rel).read_text().splitlines()) == 4
    (out / LEDGER).write_text('{"a01": {}}')
    (out / "policies").mkdir()
    (out / "policies" / "a01.state").write_bytes(b"policy")
    seed = seed_files(out, "prosumer", "a01")
    assert set(seed) == {rel, "checkpoints/a01.state.0", "checkpoints/a01.state.1", LEDGER,
                         "policies/a01.state"}
    other = tmp_path / "other"
    for r, data in seed.items():
        (other / r).parent.mkdir(parents=True, exist_ok=True)
        (other / r).write_bytes(data)
    writer2, checkpoints2, replica2 = _node(other, store)
    assert checkpoints2.load() == {"k": 2}
    assert [json.loads(x)["round"] for x in (other / rel).read_text().splitlines()] == [0, 1, 2]
    writer2.write_row(rel, {"round": 3, "again": True})
    checkpoints2.save({"k": 3})
    _same(other, out, rel)
    rows = [json.loads(x) for x in (out / rel).read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2, 3] and rows[-1]["again"]


def test_the_market_s_ledger_is_copied_when_it_changes(tmp_path):
    out, local = tmp_path / "run", tmp_path / "machine"
    store = RunStore(str(out))
    writer = RunWriter(local)
    pushes: list[list] = []

    def push(items):
        pushes.append(items)
        store.put(items)

    replica = Replica(local, "market", node_tables("market", "market"), push, ledger=True)
    checkpoints = Checkpoints(local / "checkpoints" / "market.state", writer,
                              node_tables("market", "market"), replica)
    (local / LEDGER).write_text('{"a01": {"3": {}}}')
    writer.write_row("market.jsonl", {"k": 0})
    checkpoints.save({"k": 0})
    _same(local, out, LEDGER)
    checkpoints.save({"k": 1})  # unchanged: not copied again
    assert [i[1] for i in pushes[-1]] == ["checkpoints/market.state.0"]


@pytest.mark.parametrize("rel", ["../escape", "/etc/passwd", "a/../../b", ""])
def test_the_store_writes_only_inside_the_run_directory(tmp_path, rel):
    with pytest.raises(ValueError, match="not a path inside the run directory"):
        RunStore(str(tmp_path / "run")).put([("whole", rel, 0, b"x")])
    assert not (tmp_path / "escape").exists()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("row"), st.integers(0, 3)),
                          st.tuples(st.just("save"), st.just(0)),
                          st.tuples(st.just("sync"), st.just(0)),
                          st.tuples(st.just("restart"), st.just(0))), max_size=30))
def test_the_run_directory_always_holds_what_the_last_checkpoint_counts(tmp_path_factory,
                                                                         steps):
    """Whatever the order of rows, saves, end-of-run copies and restarts (from the run
    directory, as on another machine), the run directory holds the newest checkpoint
    and, at each save, exactly the node's own rows; rows a restart cuts are cut there."""
    root = tmp_path_factory.mktemp("r")
    out = root / "run"
    store = RunStore(str(out))
    local = root / "m0"
    writer, checkpoints, replica = _node(local, store)
    rel, n = "agents/a01.jsonl", 0
    for i, (what, size) in enumerate(steps):
        if what == "row":
            writer.write_row(rel, {"i": i, "pad": "x" * size})
        elif what == "save":
            n += 1
            checkpoints.save({"n": n})
            saved = Checkpoints.read(out / "checkpoints" / "a01.state")
            assert saved["state"] == {"n": n}
            assert _bytes(out / rel) == _bytes(local / rel)
        elif what == "sync":  # a run's end: rows past the checkpoint copied too
            replica.sync()
            assert _bytes(out / rel) == _bytes(local / rel)
        else:
            writer.close()
            checkpoints.close()
            local = root / f"m{i + 1}"
            for r, data in seed_files(out, "prosumer", "a01").items():
                (local / r).parent.mkdir(parents=True, exist_ok=True)
                (local / r).write_bytes(data)
            writer, checkpoints, replica = _node(local, store)
            state = checkpoints.load()
            assert state == ({"n": n} if n else None)
            if state is None:  # nothing saved yet: the rows so far were never counted
                writer.truncate({rel: 0})
                replica.truncated({rel: 0})
    checkpoints.save({"n": n + 1})
    assert _bytes(out / rel) == _bytes(local / rel)
    writer.close()
    checkpoints.close()
