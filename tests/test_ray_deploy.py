"""Deployments on Ray (``deploy(..., engine="ray")``, comms/raylaunch.py and
comms/rayactor.py): on an emulated cluster of three Ray nodes on this machine, the
records of the in-process runtime, and every round booked once when a Ray node is lost
mid-run. Ports: the actors bind ports
the OS picks (the ephemeral range), none of the fixed ones other tests use."""

from __future__ import annotations

import contextlib

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import zmq
from peergrid.comms.keys import NodeKeys
from peergrid.comms.links import LinkModel
from peergrid.comms.messages import RoundDone, RoundStart
from peergrid.comms.node import Node, NodeLog
from peergrid.scenarios.commands.deploy import deploy, with_faults
from peergrid.scenarios.definition import checks
from peergrid.scenarios.runtime.logs import read_records
from test_deploy import in_process, rule


def _curve_node(name: str, pair: tuple[bytes, bytes], peers: dict[str, bytes],
                endpoints: dict[str, str], log: Path) -> Node:
    public, secret = pair
    return Node(name, "s", endpoints, LinkModel(name, lambda u, v: None), NodeLog(log),
                keys=NodeKeys(name, public, secret, peers))


def _receive(node: Node, timeout_s: float = 5.0) -> list:
    deadline = time.monotonic() + timeout_s
    got: list = []
    while not got and time.monotonic() < deadline:
        got = node.receive(0.1)
    return got


def test_a_peer_that_moves_is_reached_at_its_new_address_with_its_new_key(tmp_path,
                                                                         monkeypatch):
    """What a restart on another Ray node needs of the socket shell: the node that is
    told (by whoever started it) sends to the new address, accepts only the new key for
    that name, and the old key no longer speaks for it."""
    # one context per node, as in separate processes (one ZAP handler per context)
    monkeypatch.setattr(zmq.Context, "instance", classmethod(lambda cls: cls()))
    a_pair, b_pair, b2_pair = zmq.curve_keypair(), zmq.curve_keypair(), zmq.curve_keypair()
    a = _curve_node("market", a_pair, {"market": a_pair[0], "a01": b_pair[0]},
                    {"market": "tcp://127.0.0.1:*", "a01": "tcp://127.0.0.1:1"},
                    tmp_path / "market.jsonl")
    a_ep = a.endpoints["market"] = a.inbox.getsockopt_string(zmq.LAST_ENDPOINT)
    b = _curve_node("a01", b_pair, {"market": a_pair[0], "a01": b_pair[0]},
                    {"market": a_ep, "a01": "tcp://127.0.0.1:*"}, tmp_path / "a01.jsonl")
    b_ep = b.inbox.getsockopt_string(zmq.LAST_ENDPOINT)
    a.set_peers({"market": a_ep, "a01": b_ep})
    try:
        assert a.send("a01", RoundStart(0, 1.0, 0), 0, 0)
        [(header, _)] = _receive(b)
        assert header.sender == "market"
        # a01 restarts elsewhere: a new port, a new key pair; the market is told
        b2 = _curve_node("a01", b2_pair, {"market": a_pair[0], "a01": b2_pair[0]},
                         {"market": a_ep, "a01": "tcp://127.0.0.1:*"}, tmp_path / "a01b.jsonl")
        b2_ep = b2.inbox.getsockopt_string(zmq.LAST_ENDPOINT)
        a.set_peers({"market": a_ep, "a01": b2_ep}, {"market": a_pair[0], "a01": b2_pair[0]})
        assert a.send("a01", RoundStart(1, 1.0, 1), 0, 1)
        [(header, msg)] = _receive(b2)
        assert (header.sender, msg.k) == ("market", 1)
        assert b2.send("market", RoundDone(1), 0, 1)
        [(header, _)] = _receive(a)
        assert header.sender == "a01"  # the new key speaks for a01
        # the old key does not any more: refused at the handshake, never read
        b.send("market", RoundDone(2), 0, 2)
        assert _receive(a, 1.5) == []
        a.refusals.flush()
        events = [json.loads(x) for x in (tmp_path / "market.jsonl").read_text().splitlines()]
        assert any(e["event"] == "rejected_count" and "key not on the allow-list" in e["counts"]
                   for e in events)
        assert [e["changed"] for e in events if e["event"] == "peers"] == [["a01"], ["a01"]]
        b2.close()
    finally:
        a.close()
        b.close()


@contextlib.contextmanager
def _emulated_cluster(head_cpus: int):
    """A head and two workers of one logical CPU each on this machine; the loss of a
    node is noticed within ~2 s (the defaults take ~30 s)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    fast = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
            "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "include_dashboard": False, "_system_config": fast})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture()
def three_nodes():
    """An emulated cluster whose head takes node processes too."""
    with _emulated_cluster(head_cpus=1) as nodes:
        yield nodes


def _placement(out: Path) -> dict[str, str]:
    """Node process -> the Ray node its last incarnation ran on."""
    events = [json.loads(x) for x in (out / "nodes" / "launcher.jsonl").read_text().splitlines()]
    return {e["node"]: e["ray_node"] for e in events if e["event"] == "started"}


def _started(out: Path) -> list[dict]:
    return [e for e in (json.loads(x) for x in (out / "nodes" / "launcher.jsonl")
                        .read_text().splitlines()) if e["event"] == "started"]


def _gathered_whole(out: Path, names: list[str], ended: bool = True) -> None:
    """Every node wrote on its own machine (``ray_files="gathered"``) and the run
    directory has it all: each node's log (to its last line, ``ended``), no machine's
    copy left."""
    started = _started(out)
    assert {e["files"] for e in started} == {"gathered"}
    for n in names:
        log = [json.loads(x) for x in (out / "nodes" / f"{n}.jsonl").read_text().splitlines()]
        assert log and (not ended or log[-1]["event"] == "links"), n
    assert not [e["local_dir"] for e in started if Path(e["local_dir"]).exists()]
    assert not (out / ".ray-run").exists()


@pytest.mark.slow  # ~60 s each: 15 Ray worker processes start on 2 cores
@pytest.mark.parametrize("files", ["shared", "gathered"])
def test_a_day_spread_over_three_ray_nodes_equals_the_in_process_run(one_day, tmp_path,
                                                                      three_nodes, files):
    """``gathered``: as on machines that do not share the run directory, each actor
    writes a directory of its own and the driver's run directory gets every file."""
    out, exits = deploy(one_day, "ieee13.toml", "rule", tmp_path / "dep", engine="ray",
                        ray_files=files)
    assert set(exits.values()) == {0}
    expected = in_process(one_day, rule)
    pd.testing.assert_frame_equal(read_records(out)[expected.columns], expected)
    placed = _placement(out)
    assert len(placed) == 15 and len(set(placed.values())) == 3  # spread: 5 on each
    assert sorted(pd.Series(placed).value_counts()) == [5, 5, 5]
    spec = json.loads((out / "deploy.json").read_text())
    # the endpoints the actors bound and reported, and each one's public key; no key
    # file anywhere: each secret stayed in its actor's memory
    assert all(ep.startswith("tcp://") and not ep.endswith(":0")
               for ep in spec["endpoints"].values())
    assert len(set(spec["security"]["public_keys"].values())) == 15
    assert not (out / "keys").exists()
    logs = [json.loads(x) for n in placed for x in (out / "nodes" / f"{n}.jsonl")
            .read_text().splitlines()]
    assert not [e for e in logs if e["event"] == "rejected_count"]  # not one refusal
    status = json.loads((out / "status.json").read_text())
    assert status["complete"] and status["rounds_done"] == 24
    if files == "gathered":
        _gathered_whole(out, list(placed))
    else:
        assert {e["files"] for e in _started(out)} == {"shared"}


@pytest.fixture()
def one_day(ieee13_scenario):
    s = ieee13_scenario
    return s.model_copy(update={"scenario": s.scenario.model_copy(update={"days": 1})})


@pytest.mark.slow  # ~70 s each
@pytest.mark.parametrize("files", ["shared", "gathered"])
def test_removing_a_ray_node_mid_run_restarts_its_actors_elsewhere_and_books_every_round_once(
        one_day, tmp_path, three_nodes, files):
    """``gathered``: the restarted actors resume from what their lost machines had
    copied to the run directory, not from their own disks (a new directory each)."""
    cluster, workers = three_nodes
    # 100 ms on every link: a round takes ~1 s, so the loss lands mid-run
    s = with_faults(one_day, latency_ms=100.0, down_after_ms=1000.0)
    out = tmp_path / "dep"
    lost: dict[str, object] = {}

    def remove_a_node() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            market = out / "market.jsonl"
            if market.is_file() and len(market.read_bytes().splitlines()) >= 5:
                break
            time.sleep(0.05)
        placed = _placement(out)
        # a worker node (the head holds the driver), the one without the market
        victim = next(w for w in workers if w.node_id != placed["market"])
        lost["node"] = victim.node_id
        lost["names"] = sorted(n for n, r in placed.items() if r == victim.node_id)
        cluster.remove_node(victim, allow_graceful=False)

    thread = threading.Thread(target=remove_a_node)
    thread.start()
    out, exits = deploy(s, "ieee13.toml", "rule", out, engine="ray", ray_files=files)
    thread.join()
    names = lost["names"]
    assert len(names) == 5
    status = json.loads((out / "status.json").read_text())
    assert status == {"complete": True, "rounds": 24, "rounds_done": 24, "reason": "finished",
                      "agent_rounds_missing": {}}
    placed = _placement(out)
    for n in names:  # lost with its node, restarted by Ray on another, run to the end
        assert exits[f"{n}#0"] == -1 and exits[n] == 0, (n, exits)
        assert placed[n] != lost["node"]
    events = [json.loads(x) for x in (out / "nodes" / "launcher.jsonl").read_text().splitlines()]
    again = [e for e in events if e["event"] == "started" and e["incarnation"] > 0]
    assert sorted({e["node"] for e in again}) == names
    moved = [e for e in events if e["event"] == "moved"]
    finishing = [e for e in events if e["event"] == "finishing"]
    # each incarnation Ray brought back either ran while the market did (every peer took
    # the new address before it ran: ``moved``), or came back only after the market's
    # end (a loaded machine: Ray restarts processes slowly) and its ``finish`` run booked
    # what remained
    ran = sorted((e["node"], e["incarnation"]) for e in moved + finishing)
    assert ran == sorted((e["node"], e["incarnation"]) for e in again)
    assert all(e["peers_told"] == e["peers"] and not e["missed"] for e in moved)
    records = read_records(out)
    for a in s.agents:  # the raw rows, not de-duplicated: every round exactly once
        rows = [json.loads(x) for x in (out / "agents" / f"{a.id}.jsonl").read_text()
                .splitlines()]
        assert [(r["episode"], r["round"]) for r in rows] == [(0, k) for k in range(24)], a.id
    assert checks.completeness_problems(records, [a.id for a in s.agents], 24) == []
    assert checks.all_problems(records, dt_h=1.0) == []
    per_round = records.groupby(["episode", "round"])[["p2p_sold_kwh", "p2p_bought_kwh"]].sum()
    assert (per_round.p2p_sold_kwh - per_round.p2p_bought_kwh).abs().max() < 1e-9
    for n in (x for x in names if x != "grid"):  # resumed from its checkpoint, rounds down
        log = [json.loads(x) for x in (out / "nodes" / f"{n}.jsonl").read_text().splitlines()]
        resumed = [e for e in log if e["event"] == "resumed"]
        down = [e["k"] for e in log if e["event"] == "round" and "down" in e["flags"]]
        assert resumed and down and min(down) >= resumed[0]["from_round"], n
    assert len(pd.read_json(out / "grid.jsonl", lines=True)) == 24
    if files == "gathered":
        _gathered_whole(out, ["market", "grid", *(a.id for a in s.agents)], ended=False)


class _Shell:
    """What NodeActor's update path uses of a node: its endpoints, keys, set_peers."""

    def __init__(self) -> None:
        self.endpoints = {"market": "tcp://m:1", "a01": "tcp://a:1"}
        self.keys = None
        self.calls: list[dict[str, str]] = []

    def set_peers(self, endpoints, keys=None) -> None:
        self.calls.append(dict(endpoints))
        self.endpoints = dict(endpoints)


def test_a_node_actor_applies_peer_updates_newest_incarnation_first(monkeypatch):
    """NodeActor's update ordering without Ray (the class is plain until the driver
    applies ``ray.remote``): a later incarnation wins over an earlier one, a stale one is
    dropped, ``configure`` keeps what a later update brought; while the node serves, an
    update waits for the loop's own thread (False if not taken within UPDATE_WAIT_S,
    still queued) and ``configure`` is refused."""
    from peergrid.comms import rayactor

    actor = rayactor.NodeActor("prosumer", "a02")
    monkeypatch.setattr(rayactor, "DeploySpec", type("S", (), {"from_json": staticmethod(
        lambda b: type("Spec", (), {"endpoints": {"market": "tcp://m:1", "a01": "tcp://a:1"},
                                    "security": None})())}))
    with pytest.raises(RuntimeError, match="before bind"):
        actor.configure(b"{}", {})
    shell = actor.node = _Shell()
    assert actor.configure(b"{}", {"market": 0, "a01": 0})
    assert actor._known == {"market": 0, "a01": 0}
    # no loop serving: applied at once (the inbox is bound: the key must be allowed now)
    assert actor.update_peer("a01", 2, "tcp://a:3", None)
    assert shell.endpoints["a01"] == "tcp://a:3" and actor._known["a01"] == 2
    assert actor.update_peer("a01", 1, "tcp://a:2", None)  # stale: dropped
    assert shell.endpoints["a01"] == "tcp://a:3" and not actor._pending
    # a spec made before that update does not move a01 back
    assert actor.configure(b"{}", {"market": 0, "a01": 1})
    assert shell.endpoints["a01"] == "tcp://a:3" and actor._known["a01"] == 2
    # serving: update_peer returns once the loop (another thread) has applied it
    actor._serving = True
    n_calls = len(shell.calls)
    actor._pending["market"] = (1, "tcp://m:2", None)  # queued, not yet taken
    monkeypatch.setattr(rayactor, "UPDATE_WAIT_S", 5.0)
    loop = threading.Timer(0.2, actor._take_updates)
    loop.start()
    assert actor.update_peer("market", 2, "tcp://m:3", None)
    loop.join()
    assert shell.endpoints["market"] == "tcp://m:3" and actor._known["market"] == 2
    assert len(shell.calls) == n_calls + 1  # incarnation 1 was overtaken, never applied
    # a loop that does not take it in time: False (the driver asks again)
    monkeypatch.setattr(rayactor, "UPDATE_WAIT_S", 0.2)
    assert not actor.update_peer("market", 3, "tcp://m:4", None)
    assert actor._pending["market"][0] == 3
    with pytest.raises(RuntimeError, match="while serving"):  # set_peers: the loop's
        actor.configure(b"{}", {})
    actor._take_updates()
    assert shell.endpoints["market"] == "tcp://m:4" and not actor._pending


@pytest.fixture()
def two_workers():
    """An emulated cluster whose head runs no node process (the driver is there), so
    any worker, the market's included, may be removed."""
    with _emulated_cluster(head_cpus=0) as nodes:
        yield nodes


@pytest.mark.slow  # ~70 s
def test_removing_the_market_s_ray_node_restarts_the_market_and_the_nodes_it_left_silent(
        one_day, tmp_path, two_workers):
    """The market's node is lost: the market comes back on the other node, and the nodes
    that gave up on it meanwhile (idle_exit_ms, here shorter than the market's restart,
    as Ray's default 30 s health check is against the default 30 s idle exit) are
    started again by the driver, not left out; every round booked once."""
    cluster, workers = two_workers
    s = with_faults(one_day, latency_ms=100.0, down_after_ms=1000.0, idle_exit_ms=5000.0)
    out = tmp_path / "dep"
    lost: dict[str, object] = {}

    def remove_the_market_s_node() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            market = out / "market.jsonl"
            if market.is_file() and len(market.read_bytes().splitlines()) >= 5:
                break
            time.sleep(0.05)
        placed = _placement(out)
        victim = next(w for w in workers if w.node_id == placed["market"])
        lost["node"] = victim.node_id
        lost["names"] = sorted(n for n, r in placed.items() if r == victim.node_id)
        cluster.remove_node(victim, allow_graceful=False)

    thread = threading.Thread(target=remove_the_market_s_node)
    thread.start()
    out, exits = deploy(s, "ieee13.toml", "rule", out, engine="ray")
    thread.join()
    assert "market" in lost["names"]
    status = json.loads((out / "status.json").read_text())
    assert status == {"complete": True, "rounds": 24, "rounds_done": 24, "reason": "finished",
                      "agent_rounds_missing": {}}
    assert exits["market#0"] == -1 and exits["market"] == 0
    assert _placement(out)["market"] != lost["node"]
    events = [json.loads(x) for x in (out / "nodes" / "launcher.jsonl").read_text().splitlines()]
    silent = {e["node"] for e in events if e["event"] == "silent"}
    assert silent  # nodes that gave up on the lost market were started again
    for a in s.agents:  # the raw rows: every round exactly once
        rows = [json.loads(x) for x in (out / "agents" / f"{a.id}.jsonl").read_text()
                .splitlines()]
        assert [(r["episode"], r["round"]) for r in rows] == [(0, k) for k in range(24)], a.id
    records = read_records(out)
    assert checks.completeness_problems(records, [a.id for a in s.agents], 24) == []
    assert checks.all_problems(records, dt_h=1.0) == []


@pytest.mark.slow  # ~50 s: 15 Ray workers
def test_a_killed_node_s_log_and_rows_reach_the_run_directory_with_gathered_files(one_day,
                                                                                  tmp_path):
    """``--ray-files gathered`` with an injected crash (SIGKILL, back at its restart
    round, on the same machine): its node log in the run directory has the lines it
    wrote up to the kill (``killed``) as a local deployment's does, every node's log
    ends with its ``links`` line, and every round is booked once."""
    s = with_faults(one_day, bid_deadline_ms=300.0, signal_timeout_ms=300.0,
                    kills=[{"agent": "a05", "at_round": 6, "restart_round": 9}])
    out, exits = deploy(s, "ieee13.toml", "rule", tmp_path / "dep", engine="ray",
                        ray_files="gathered")
    assert exits["market"] == 0 and exits["a05#0"] == -1 and exits["a05"] == 0, exits
    status = json.loads((out / "status.json").read_text())
    assert status["complete"] and not status["agent_rounds_missing"]
    _gathered_whole(out, ["market", "grid", *(a.id for a in s.agents)])
    a05 = [json.loads(x) for x in (out / "nodes" / "a05.jsonl").read_text().splitlines()]
    assert [e["k"] for e in a05 if e["event"] == "killed"] == [6]
    assert any(e["event"] == "resumed" for e in a05)
    booked = sorted(e["k"] for e in a05 if e["event"] == "round")
    assert booked == list(range(24))  # every round's line, once, from both incarnations
    records = read_records(out)
    for a in s.agents:
        assert records[records.agent == a.id]["round"].tolist() == list(range(24)), a.id
    assert checks.all_problems(records, dt_h=1.0) == []
    events = [json.loads(x) for x in (out / "nodes" / "launcher.jsonl").read_text().splitlines()]
    store = [e for e in events if e["event"] == "store"]
    assert store and store[0]["requests"] > 24 and not store[0]["refused"]
