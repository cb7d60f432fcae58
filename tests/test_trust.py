"""Trust on the wire: CURVE links, the sender bound to its key, roles, replay; real sockets."""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zmq

from peergrid.agents.learners.portable import from_portable
from peergrid.comms import keys as K
from peergrid.comms.links import LinkModel
from peergrid.comms.messages import (KINDS, ROUTES, BidMessage, Crash, Critic, Positions,
                                     RoundDone, RoundStart, Stop, VoltageReport, route_problem)
from peergrid.comms.node import Node, NodeLog
from peergrid.comms.nodes.loop import Checkpoints
from peergrid.comms.wire import Header, encode
from peergrid.scenarios.commands.deploy import deploy, with_faults
from peergrid.scenarios.commands.train import Team
from peergrid.scenarios.runtime.logs import read_records

from test_deploy import in_process


def _seq(n: int, boot: int = 1) -> bytes:
    return struct.pack("<QQ", boot, n)


def _events(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _refusals(path: Path) -> dict[str, int]:
    """Refusals per reason code, from a node log's per-round counts."""
    total: dict[str, int] = {}
    for e in _events(path):
        if e["event"] == "rejected_count":
            for reason, n in e["counts"].items():
                total[reason] = total.get(reason, 0) + n
    return total


def _client(ctx: zmq.Context, endpoint: str, server_public: bytes | None,
            pair: tuple[bytes, bytes] | None, routing_id: str | None = None) -> zmq.Socket:
    """A DEALER to ``endpoint``: with CURVE when ``pair`` (public, secret) is given."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id:
        sock.setsockopt_string(zmq.ROUTING_ID, routing_id)
    if pair is not None:
        sock.curve_publickey, sock.curve_secretkey = pair
        sock.curve_serverkey = server_public
    sock.connect(endpoint)
    return sock


@pytest.fixture()
def keyring(tmp_path):
    names = ["market", "grid", "a01", "a02", "a03", "a05"]
    public = K.new_pairs(tmp_path / "keys", names)

    def node_keys(name: str) -> K.NodeKeys:
        return K.node_keys(name, K.secret_path(tmp_path / "keys", name), public)

    return node_keys


def _receive_all(node: Node, seconds: float = 1.5) -> list:
    got, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        got += node.receive(0.05)
    return got


def test_every_kind_has_a_route_and_roles_are_as_documented():
    assert set(ROUTES) == set(KINDS)
    assert route_problem("crash", "market", "a03") is None
    assert route_problem("crash", "a05", "a03").startswith("role")
    assert route_problem("stop", "a05", "grid").startswith("role")
    assert route_problem("round_start", "grid", "a04").startswith("role")
    assert route_problem("positions", "a05", "grid").startswith("role")
    assert route_problem("grid_signal", "grid", "a01") is None
    assert route_problem("grid_signal", "market", "a01").startswith("role")
    assert route_problem("bid", "a05", "market") is None
    assert route_problem("bid", "a05", "a01").startswith("role")
    assert route_problem("critic", "a02", "a01", frozenset({"a02"})) is None
    assert "neighbour" in route_problem("critic", "a05", "a01", frozenset({"a02"}))
    assert route_problem("heartbeat", "a05", "a01").startswith("role")
    assert route_problem("heartbeat", "a05", "market") is None


def test_only_keys_on_the_list_connect_and_the_sender_is_the_key(keyring, tmp_path):
    endpoints = {n: f"tcp://127.0.0.1:{28500 + i}" for i, n in
                 enumerate(["market", "grid", "a01", "a02", "a03", "a05"])}
    log = tmp_path / "a03.jsonl"
    node = Node("a03", "s", endpoints, LinkModel("a03", None), NodeLog(log),
                keys=keyring("a03"), neighbours=frozenset({"a02"}))
    server = keyring("a03").public
    ctx = zmq.Context()
    market = _client(ctx, endpoints["a03"], server, (keyring("market").public,
                                                     keyring("market").secret))
    insider = _client(ctx, endpoints["a03"], server,  # a05's own key, posing as the market
                      (keyring("a05").public, keyring("a05").secret), routing_id="market")
    plain = _client(ctx, endpoints["a03"], None, None, routing_id="market")
    stranger = _client(ctx, endpoints["a03"], server, zmq.curve_keypair(), routing_id="market")
    crash = encode(Header("s", 0, 2, "market", "crash"), Crash(2))
    for n, sock in enumerate((insider, plain, stranger)):
        sock.send_multipart([crash, _seq(n + 1)])
    insider.send_multipart([encode(Header("s", 0, 2, "a05", "crash"), Crash(2)), _seq(5)])
    critic = Critic(0, 0, "x", np.zeros(3, np.float32))
    insider.send_multipart([encode(Header("s", 0, 0, "a02", "critic"), critic), _seq(6)])
    insider.send_multipart([encode(Header("s", 0, 0, "a05", "critic"), critic), _seq(7)])
    start = encode(Header("s", 0, 2, "market", "round_start"), RoundStart(2, 0.5, 0))
    market.send_multipart([start, _seq(1)])
    got = _receive_all(node)
    for sock in (market, insider, plain, stranger):
        sock.close(0)
    ctx.term()
    node.close()
    assert [(h.kind, h.sender) for h, _ in got] == [("round_start", "market")]
    refused = _refusals(log)
    assert refused["spoofed sender"] == 2  # crash and critic headed as someone else
    assert refused["role"] == 2  # a prosumer's crash; a critic from a non-neighbour
    assert refused["key not on the allow-list"] >= 1  # the stranger
    assert refused.get("handshake protocol", 0) + refused.get("handshake failed", 0) >= 1
    assert _events(log)[0] == {**_events(log)[0], "event": "secure", "mechanism": "CURVE"}


def test_a_replayed_or_old_message_is_refused_and_a_restarted_node_is_heard(keyring,
                                                                           tmp_path):
    """Within a connection numbers must rise; a restart is a new connection."""
    endpoints = {n: f"tcp://127.0.0.1:{28520 + i}" for i, n in enumerate(["market", "a01"])}
    node = Node("market", "s", endpoints, LinkModel("market", None),
                NodeLog(tmp_path / "m.jsonl"), keys=keyring("market"))
    ctx = zmq.Context()
    pair = (keyring("a01").public, keyring("a01").secret)
    first = _client(ctx, endpoints["market"], keyring("market").public, pair)
    done = [encode(Header("s", 0, k, "a01", "round_done"), RoundDone(k)) for k in range(4)]
    # refused for another reason first: it must not push a01's numbers ahead
    first.send_multipart([encode(Header("s", 0, 0, "a02", "round_done"), RoundDone(0)),
                          _seq(99, boot=100)])
    first.send_multipart([done[0], _seq(1, boot=100)])
    first.send_multipart([done[1], _seq(2, boot=100)])
    first.send_multipart([done[1], _seq(2, boot=100)])  # the same frames again: a replay
    first.send_multipart([done[2], _seq(1, boot=100)])  # an old number
    got = _receive_all(node, 1.0)
    first.close(0)
    # a01 restarted on a host whose clock has stepped back: a new connection, the same
    # key, an earlier start: a new session, so heard
    again = _client(ctx, endpoints["market"], keyring("market").public, pair)
    again.send_multipart([done[3], _seq(1, boot=50)])
    got += _receive_all(node, 1.0)
    again.close(0)
    ctx.term()
    node.close()
    assert [m.k for _, m in got] == [0, 1, 3]
    assert _refusals(tmp_path / "m.jsonl") == {"replayed or old": 2, "spoofed sender": 1}


def test_nobody_speaks_for_a_node_that_is_down(keyring, tmp_path):
    """a03 never started: a05 (a valid key) bids in its name, 1e6 kWh; refused."""
    endpoints = {n: f"tcp://127.0.0.1:{28530 + i}" for i, n in
                 enumerate(["market", "a03", "a05"])}
    node = Node("market", "s", endpoints, LinkModel("market", None),
                NodeLog(tmp_path / "m.jsonl"), keys=keyring("market"))
    ctx = zmq.Context()
    insider = _client(ctx, endpoints["market"], keyring("market").public,
                      (keyring("a05").public, keyring("a05").secret), routing_id="a03")
    bid = BidMessage(3, "634", 1e6, 1e6, 0.0, 0.0, 0.0)
    insider.send_multipart([encode(Header("s", 0, 3, "a03", "bid"), bid), _seq(1)])
    got = _receive_all(node, 1.0)
    insider.close(0)
    ctx.term()
    node.close()
    assert got == [] and _refusals(tmp_path / "m.jsonl") == {"spoofed sender": 1}


def test_a_replaced_key_no_longer_speaks_on_the_connection_it_had_opened(tmp_path,
                                                                        monkeypatch):
    """a01 restarts with a new key pair while its old incarnation lives on (a Ray node
    thought lost): once the market is told the new key (set_peers), what the old one
    sends on the connection it opened before is refused, and the new key is heard."""
    # one context per node, as in separate processes (one ZAP handler per context)
    monkeypatch.setattr(zmq.Context, "instance", classmethod(lambda cls: cls()))
    m_pair, k1, k2 = zmq.curve_keypair(), zmq.curve_keypair(), zmq.curve_keypair()

    def node(name, pair, peers, endpoints, log):
        return Node(name, "s", endpoints, LinkModel(name, None), NodeLog(log),
                    keys=K.NodeKeys(name, pair[0], pair[1], peers))

    log = tmp_path / "market.jsonl"
    market = node("market", m_pair, {"market": m_pair[0], "a01": k1[0]},
                  {"market": "tcp://127.0.0.1:*", "a01": "tcp://127.0.0.1:1"}, log)
    m_ep = market.endpoints["market"] = market.inbox.getsockopt_string(zmq.LAST_ENDPOINT)
    old = node("a01", k1, {"market": m_pair[0], "a01": k1[0]},
               {"market": m_ep, "a01": "tcp://127.0.0.1:*"}, tmp_path / "a01.jsonl")
    new = None

    def heard(timeout_s: float = 5.0, refused: int | None = None) -> list:
        """What the market accepts, until something is (or ``refused`` refusals)."""
        got, end = [], time.monotonic() + timeout_s
        while not got and time.monotonic() < end:
            got = market.receive(0.05)
            if refused is not None and market.refusals.total >= refused:
                break
        return [(h.sender, m.k) for h, m in got]

    try:
        assert old.send("market", RoundDone(0), 0, 0)
        assert heard() == [("a01", 0)]
        # a01 restarts: a new key pair, a new port; the market is told, the old
        # incarnation is not (its connection to the market stays open)
        new = node("a01", k2, {"market": m_pair[0], "a01": k2[0]},
                   {"market": m_ep, "a01": "tcp://127.0.0.1:*"}, tmp_path / "a01b.jsonl")
        new_ep = new.inbox.getsockopt_string(zmq.LAST_ENDPOINT)
        market.set_peers({"market": m_ep, "a01": new_ep},
                         {"market": m_pair[0], "a01": k2[0]})
        assert old.send("market", RoundDone(1), 0, 1)
        assert heard(refused=1) == []
        assert market.refusals.total == 1  # it arrived, and was refused
        assert new.send("market", RoundDone(2), 0, 2)
        assert heard() == [("a01", 2)]  # the new key speaks for a01
        # the old connection is not made good by the new one's arrival
        assert old.send("market", RoundDone(3), 0, 3)
        assert heard(refused=2) == []
        assert market.refusals.total == 2
        assert market.outbox.stats["a01"].rejected == 2
        assert market.outbox.stats["a01"].received == 2
    finally:
        market.close()
        old.close()
        if new is not None:
            new.close()
    rejected = [e for e in _events(log) if e["event"] == "rejected"]
    assert [e["peer"] for e in rejected] == ["a01", "a01"]
    assert all(e["reason"].startswith(f"revoked key: {k1[0][:8].decode()}... is no "
                                      "longer a01's key") for e in rejected)
    assert _refusals(log) == {"revoked key": 2}
    assert [e["changed"] for e in _events(log) if e["event"] == "peers"] == [["a01"]]


def test_a_secret_key_readable_by_others_or_of_another_node_is_refused(tmp_path):
    public = K.new_pairs(tmp_path / "k", ["a01", "a02"])
    secret = K.secret_path(tmp_path / "k", "a01")
    K.node_keys("a01", secret, public)  # fine as made
    with pytest.raises(K.KeyFileError, match="its public key is not 'a02'"):
        K.node_keys("a02", secret, public)
    secret.chmod(0o644)
    with pytest.raises(K.KeyFileError, match="readable by its owner only"):
        K.node_keys("a01", secret, public)
    with pytest.raises(K.KeyFileError, match="exists"):
        K.new_pair(tmp_path / "k", "a01")


# ---- a whole deployment under attack ------------------------------------------------

def _forgeries(scenario_id: str, k: int) -> dict[str, list[bytes]]:
    """What an attacker sends each node, headed as the node it pretends to be."""
    h = lambda sender, kind, rnd=k: Header(scenario_id, 0, rnd, sender, kind)  # noqa: E731
    start_ahead = RoundStart(k + 6, 0.5, 0)
    positions = Positions(k, {"a01": 1e6}, {"a01": 0.0}, {"a01": 0.0}, {"a01": 0.0},
                          {"a01": "634"})
    signal = VoltageReport(k, {"634.1": 1.2}, True, {"a01": 999.0}, {"a01": 0.0}, {}, 99.0)
    bid = BidMessage(k, "634", 1e6, 1e6, 0.0, 0.0, 0.0)
    critic = Critic(0, 0, "whatever", np.full(4, 1.5e8, np.float32))
    prosumer = [encode(h("market", "crash"), Crash(k)), encode(h("market", "stop"), Stop()),
                encode(h("market", "round_start", k + 6), start_ahead),
                encode(h("grid", "grid_signal"), signal),
                encode(h("a02", "critic", 0), critic), encode(h("a05", "crash"), Crash(k)),
                encode(h("a05", "critic", 0), critic)]
    return {
        "market": [encode(h("a03", "bid"), bid), encode(h("grid", "round_done"), RoundDone(k)),
                   encode(h("a05", "positions"), positions)],
        "grid": [encode(h("market", "stop"), Stop()), encode(h("market", "positions"), positions),
                 encode(h("a05", "positions"), positions), encode(h("a05", "stop"), Stop())],
        # not a05's graph neighbours (a04, a06): its critic is out of its role there
        **{a: prosumer for a in ("a01", "a03", "a08", "a13")},
    }


def test_every_forgery_is_refused_and_the_day_is_the_undisturbed_one(ieee13_scenario,
                                                                    tmp_path):
    """Outsiders (plain TCP; a CURVE key not on the list) and an insider holding a05's
    key send crash, stop, round starts six rounds ahead, positions, voltages, a 1e6 kWh
    bid in a03's name and 1.5e8 critics, at every kind of node of a learning deployment:
    nothing is accepted, and records and learned parameters are the undisturbed ones."""
    torch.set_num_threads(1)
    algo = ieee13_scenario.algo.model_copy(update={"rollout_days": 1, "epochs": 2})
    one_day = ieee13_scenario.model_copy(update={
        "algo": algo, "scenario": ieee13_scenario.scenario.model_copy(update={"days": 1})})
    s = with_faults(one_day, base_port=28550)
    out = tmp_path / "dep"
    sent: dict[str, int] = {}

    def attack() -> None:
        deadline = time.monotonic() + 90
        while not ((out / "market.jsonl").is_file()
                   and len((out / "market.jsonl").read_bytes().splitlines()) >= 3):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        spec = json.loads((out / "deploy.json").read_text())
        endpoints, public = spec["endpoints"], spec["security"]["public_keys"]
        a05 = K.read_secret(K.secret_path(out / "keys", "a05"))
        ctx = zmq.Context()
        opened = []
        for name, messages in _forgeries(s.scenario.id, 3).items():
            server = public[name].encode()
            socks = [_client(ctx, endpoints[name], None, None, routing_id="market"),
                     _client(ctx, endpoints[name], server, zmq.curve_keypair(), "market"),
                     _client(ctx, endpoints[name], server, a05, routing_id="market")]
            for sock in socks:
                for n, data in enumerate(messages):
                    sock.send_multipart([data, _seq(n + 1, boot=time.time_ns())])
            sent[name] = len(messages)
            opened += socks
        time.sleep(0.5)  # the handshakes and messages go out before the sockets close
        for sock in opened:
            sock.close(0)
        ctx.term()

    attacker = threading.Thread(target=attack)
    attacker.start()
    out, exits = deploy(s, "ieee13.toml", "consensus", out, days=1, seed=3)
    attacker.join()
    assert set(exits.values()) == {0} and len(sent) == 6
    for name, n in sent.items():
        log = out / "nodes" / f"{name}.jsonl"
        refused = _refusals(log)
        events = {e["event"] for e in _events(log)}
        assert "killed" not in events and "secure" in events, name
        # the insider's messages: every one refused as spoofed or out of its role
        assert refused.get("spoofed sender", 0) + refused.get("role", 0) == n, (name, refused)
        assert refused.get("key not on the allow-list", 0) >= 1, name  # the stranger's key

    team = Team("consensus", s, 3, stacked=False)
    expected = in_process(s, lambda _: (lambda o: team.act(o)), team)
    pd.testing.assert_frame_equal(read_records(out)[expected.columns], expected)
    for i, aid in enumerate(team.ids):  # the critics learned are the undisturbed ones
        deployed = from_portable(
            Checkpoints.read(out / "checkpoints" / f"{aid}.state")["state"].learner)
        local = team.group.groups[i].state_dict()
        for part in ("critic", "estimator"):
            for name, tensor in local[part].items():
                assert torch.equal(tensor, deployed[part][name]), (aid, part, name)


def test_keys_made_by_hand_put_only_public_keys_into_deploy_json(ieee13_scenario, tmp_path,
                                                                  capsys):
    from peergrid.comms.spec import DeploySpec
    from peergrid.scenarios.commands.cli import main
    from peergrid.scenarios.commands.deploy import deploy_spec

    spec = deploy_spec(ieee13_scenario, "rule", tmp_path / "run", insecure=True)
    spec.write(tmp_path / "deploy.json")
    assert main(["keys", "new", "a03", "market", "--dir", str(tmp_path / "host")]) == 0
    assert (tmp_path / "host").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "host" / "a03.key_secret").stat().st_mode & 0o777 == 0o600
    assert main(["keys", "add", "--config", str(tmp_path / "deploy.json"),
                 str(tmp_path / "host" / "a03.key_secret")]) == 2  # a secret: refused
    assert "secret key" in capsys.readouterr().err
    assert main(["keys", "add", "--config", str(tmp_path / "deploy.json"),
                 str(tmp_path / "host" / "a03.key"), str(tmp_path / "host" / "market.key")]) == 0
    written = DeploySpec.read(tmp_path / "deploy.json")
    assert set(written.security.public_keys) == {"a03", "market"}
    text = (tmp_path / "deploy.json").read_text()
    _, secret = K.read_secret(tmp_path / "host" / "a03.key_secret")
    assert secret.decode() not in text  # nothing secret in what is copied to every host
    K.node_keys("a03", tmp_path / "host" / "a03.key_secret", written.security.public_keys)


def test_plain_tcp_beyond_this_machine_needs_insecure_and_keys_must_be_complete(
        ieee13_scenario, tmp_path):
    import dataclasses

    from peergrid.comms.launcher import check_plain_tcp
    from peergrid.scenarios.commands.deploy import deploy_spec

    spec = deploy_spec(ieee13_scenario, "rule", tmp_path / "run", insecure=True)
    check_plain_tcp(spec, allowed=False)  # all on 127.0.0.1: fine, with a warning
    remote = dataclasses.replace(spec, endpoints={**spec.endpoints,
                                                  "a03": "tcp://10.1.2.3:27113"})
    with pytest.raises(K.KeyFileError, match="a03 tcp://10.1.2.3:27113.*--insecure"):
        check_plain_tcp(remote, allowed=False)
    check_plain_tcp(remote, allowed=True)
    public = K.new_pairs(tmp_path / "k", ["market", "a01"])
    with pytest.raises(K.KeyFileError, match="no public key for grid"):
        K.node_keys("a01", K.secret_path(tmp_path / "k", "a01"), public,
                    ["market", "grid", "a01"])
    with pytest.raises(K.KeyFileError, match="share one key"):
        K.node_keys("a01", K.secret_path(tmp_path / "k", "a01"),
                    {**public, "grid": public["market"]}, ["market", "grid", "a01"])
    with pytest.raises(K.KeyFileError, match="not a CURVE public key: grid"):
        K.node_keys("a01", K.secret_path(tmp_path / "k", "a01"),
                    {**public, "grid": "~" * 40}, ["market", "grid", "a01"])
