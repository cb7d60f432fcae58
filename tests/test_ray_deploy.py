"""Deployments on Ray (``deploy(..., engine="ray")``, comms/raylaunch.py): on an emulated
cluster of three Ray nodes on this machine, the records of the in-process runtime, and
every round booked once when a Ray node is lost mid-run. Ports: the actors bind ports
the OS picks (the ephemeral range), none of the fixed ones other tests use."""

from __future__ import annotations

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


@pytest.fixture()
def three_nodes():
    """An emulated cluster: a head and two workers, one logical CPU each; the loss of a
    node is noticed within ~2 s (the defaults take ~30 s)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    fast = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
            "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": fast})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def _placement(out: Path) -> dict[str, str]:
    """Node process -> the Ray node its last incarnation ran on."""
    events = [json.loads(x) for x in (out / "nodes" / "launcher.jsonl").read_text().splitlines()]
    return {e["node"]: e["ray_node"] for e in events if e["event"] == "started"}


@pytest.mark.slow  # ~60 s: 15 Ray worker processes start on 2 cores
def test_a_day_spread_over_three_ray_nodes_equals_the_in_process_run(one_day, tmp_path,
                                                                      three_nodes):
    out, exits = deploy(one_day, "ieee13.toml", "rule", tmp_path / "dep", engine="ray")
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


@pytest.fixture()
def one_day(ieee13_scenario):
    s = ieee13_scenario
    return s.model_copy(update={"scenario": s.scenario.model_copy(update={"days": 1})})


@pytest.mark.slow  # ~70 s
def test_removing_a_ray_node_mid_run_restarts_its_actors_elsewhere_and_books_every_round_once(
        one_day, tmp_path, three_nodes):
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
    out, exits = deploy(s, "ieee13.toml", "rule", out, engine="ray")
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
    moved = [e for e in events if e["event"] == "moved"]
    assert sorted(e["node"] for e in moved) == names
    assert all(e["peers_told"] == e["peers"] for e in moved)  # every peer took the address
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
