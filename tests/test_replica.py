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
from peergrid.comms.replica import LEDGER, Replica, node_tables, seed_files
from peergrid.comms.runstore import RunStore
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


def _items(rel: str, data: bytes) -> list:
    return [("log", rel, 0, data)]


@pytest.fixture()
def store(tmp_path):
    from peergrid.comms.runstore import StoreServer

    server = StoreServer(tmp_path / "run", "127.0.0.1", {"market": "market", "a01": "prosumer",
                                                         "a02": "prosumer"}, secure=True)
    yield server
    server.close()


def _client(store, name: str, pair: tuple[bytes, bytes], wait_s: float = 5.0,
            incarnation: int = 0):
    from peergrid.comms.runstore import StoreClient

    return StoreClient(name, incarnation, "gen", store.endpoint, store.public_key, *pair,
                       wait_s=wait_s)


def test_the_store_takes_a_node_s_own_files_from_its_current_key_only(store, tmp_path):
    """Over real sockets: a node writes its own files; another node's files, a path
    outside the run directory or another name are refused; a key replaced by a restart
    (``allow``) can no longer write, on a new connection or on the one it had open; a
    key never allowed does not get past the handshake."""
    import zmq
    from peergrid.comms.runstore import StoreUnreachable

    a01, a02, a01_new, stranger = (zmq.curve_keypair() for _ in range(4))
    store.allow("a01", 0, a01[0].decode())
    store.allow("a02", 0, a02[0].decode())
    old = _client(store, "a01", a01)
    old(_items("nodes/a01.jsonl", b'{"event": "x"}\n'))
    old([("at", "agents/a01.jsonl", 0, b'{"round": 0}\n')])
    assert (tmp_path / "run" / "agents" / "a01.jsonl").read_bytes() == b'{"round": 0}\n'
    for items in [_items("nodes/a01.jsonl", b"forged\n"), _items("../../escape", b"x"),
                  _items("ledger.json", b"{}")]:
        other = _client(store, "a02", a02)  # a refused client sends nothing more
        with pytest.raises(StoreUnreachable, match="may not write"):
            other(items)
        with pytest.raises(StoreUnreachable, match="may not write"):
            other(_items("nodes/a02.jsonl", b"fine\n"))  # broken: not sent at all
        other.close()
    spoof = _client(store, "a01", a02)  # a02's key, claiming a01
    with pytest.raises(StoreUnreachable, match="not \\(or no longer\\) its own"):
        spoof(_items("nodes/a01.jsonl", b"forged\n"))
    store.allow("a01", 1, a01_new[0].decode())  # a01 restarted with a new pair
    with pytest.raises(StoreUnreachable, match="no longer"):
        old(_items("nodes/a01.jsonl", b"old\n"))  # the connection it had open
    new = _client(store, "a01", a01_new, incarnation=1)
    new([("log", "nodes/a01.jsonl", 15, b'{"event": "y"}\n')])
    outsider = _client(store, "a01", stranger, wait_s=1.0)
    with pytest.raises(StoreUnreachable, match="did not answer"):
        outsider(_items("nodes/a01.jsonl", b"x\n"))
    assert (tmp_path / "run" / "nodes" / "a01.jsonl").read_bytes() == \
        b'{"event": "x"}\n{"event": "y"}\n'
    assert not (tmp_path / "escape").exists()
    refused, first = dict(store.refused), list(store.first_refusals)
    for c in (old, spoof, new, outsider):
        c.close()
    assert refused == {"not its file": 3, "stale key": 2}, first


def test_the_store_answers_garbage_with_a_refusal_and_serves_on(tmp_path):
    import zmq
    from peergrid.comms.runstore import StoreClient, StoreServer, StoreUnreachable

    server = StoreServer(tmp_path / "run", "127.0.0.1", {"a01": "prosumer"}, secure=False)
    try:
        ctx = zmq.Context()
        raw = ctx.socket(zmq.DEALER)
        raw.connect(server.endpoint)
        for frames in ([b"\xff\x00"], [b"{}"], [b'{"name": "a01", "items": [["at"]]}', b"x"],
                       [b'{"name": "a01", "items": [["at", "agents/a01.jsonl", -5]]}', b"x"],
                       [b'{"name": "zz", "items": []}']):
            raw.send_multipart(frames)
            assert raw.poll(5000) and raw.recv().startswith(b"refused: ")
        raw.close(0)
        ctx.term()
        server.allow("a01", 1, None)
        stale = StoreClient("a01", 0, "g", server.endpoint, None)  # an older incarnation
        with pytest.raises(StoreUnreachable, match="not its current one"):
            stale([("at", "agents/a01.jsonl", 0, b"old\n")])
        client = StoreClient("a01", 1, "g", server.endpoint, None)
        client([("at", "agents/a01.jsonl", 0, b"row\n")])
        with pytest.raises(StoreUnreachable, match="rows from byte 9, but it has 4"):
            client([("at", "agents/a01.jsonl", 9, b"gap\n")])  # never padded
        for c in (stale, client):
            c.close()
        assert (tmp_path / "run" / "agents" / "a01.jsonl").read_bytes() == b"row\n"
        assert server.requests == 8
    finally:
        server.close()


def test_a_node_log_copy_sent_twice_or_taken_over_by_a_successor_is_written_once(tmp_path):
    """Log lines are copied from an offset of the machine's copy: a copy repeated (its
    answer lost) adds nothing, and a new incarnation on the same machine sends what its
    predecessor had not (its log file there is kept, ``log_from`` says where the run
    directory's copy ends)."""
    out, local = tmp_path / "run", tmp_path / "machine"
    store = RunStore(out)
    rel = "nodes/a01.jsonl"
    log = NodeLog(local / rel)
    sent: list = []

    def push(items):
        sent.append(items)
        store.put(items, "gen-1")

    replica = Replica(local, "a01", node_tables("prosumer", "a01"), push)
    log.event("round", k=0)
    replica.sync()
    store.put(sent[-1], "gen-1")  # the same copy again: its answer was lost
    log.event("round", k=1)  # then the process dies before its next copy
    assert store.log_end(rel, "gen-1") < (local / rel).stat().st_size
    log2 = NodeLog(local / rel)  # the next incarnation, on the same machine
    log2.event("resumed", from_round=1)
    successor = Replica(local, "a01", node_tables("prosumer", "a01"), push,
                        log_from=store.log_end(rel, "gen-1"))
    successor.sync()
    assert (out / rel).read_bytes() == (local / rel).read_bytes()
    assert [json.loads(x)["event"] for x in (out / rel).read_text().splitlines()] == \
        ["round", "round", "resumed"]
    # a new machine's copy starts from its own beginning, appended after the rest
    assert store.log_end(rel, "gen-2") == 0
    store.put([("log", rel, 0, b'{"event": "elsewhere"}\n')], "gen-2")
    assert (out / rel).read_text().splitlines()[-1] == '{"event": "elsewhere"}'
    # back on the first machine: only what its copy has beyond what was sent from it
    log2.event("back", k=2)
    back = Replica(local, "a01", node_tables("prosumer", "a01"), push,
                   log_from=store.log_end(rel, "gen-1"))
    back.sync()
    assert [json.loads(x)["event"] for x in (out / rel).read_text().splitlines()] == \
        ["round", "round", "resumed", "elsewhere", "back"]
    log.close()
    log2.close()
