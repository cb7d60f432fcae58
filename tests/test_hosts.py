"""A deployment across real hosts: Linux network namespaces joined by veth pairs.

One namespace per host (market and grid on h0, the prosumers split over h1 and h2, an
outsider on h9), each with its own address on a bridge; every node is started with
`peergrid node` from deploy.json, over CURVE. Needs root and ip(8); skips otherwise.
The partition case is marked slow (`make test-slow`).
docs/deploy.md shows the same set-up by hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from peergrid.comms.spec import DeploySpec
from peergrid.scenarios.commands.deploy import deploy_spec, with_faults
from peergrid.scenarios.definition import checks
from peergrid.scenarios.runtime.community import for_policy
from peergrid.scenarios.runtime.logs import read_records

from test_deploy import in_process, rule

NET = "10.77.0"
HOSTS = {"h0": 1, "h1": 2, "h2": 3, "h9": 9}
PEERGRID = str(Path(sys.executable).with_name("peergrid"))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.bridge = f"{prefix}br"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def link(self, host: str) -> str:
        """The host's cable: the root-side end of its veth pair."""
        return f"{self.prefix}{host}"

    def addr(self, host: str) -> str:
        return f"{NET}.{HOSTS[host]}"

    def run(self, host: str, *cmd: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns(host), *cmd], **kw)


@pytest.fixture(scope="module")
def hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip(8) to create network namespaces")
    h = Hosts(f"pg{os.getpid() % 100000}")
    try:
        _ip("link", "add", h.bridge, "type", "bridge")
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot create a bridge here: {err.stderr.strip()}")
    try:
        _ip("link", "set", h.bridge, "up")
        for host in HOSTS:
            _ip("netns", "add", h.ns(host))
            _ip("link", "add", h.link(host), "type", "veth", "peer", "name", "eth0", "netns",
                h.ns(host))
            _ip("link", "set", h.link(host), "master", h.bridge, "up")
            _ip("-n", h.ns(host), "addr", "add", f"{h.addr(host)}/24", "dev", "eth0")
            _ip("-n", h.ns(host), "link", "set", "eth0", "up")
            _ip("-n", h.ns(host), "link", "set", "lo", "up")
        yield h
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot create network namespaces here: {err.stderr.strip()}")
    finally:
        for host in HOSTS:
            subprocess.run(["ip", "netns", "del", h.ns(host)], capture_output=True)
        subprocess.run(["ip", "link", "del", h.bridge], capture_output=True)


def _placement(agents: list[str]) -> dict[str, str]:
    half = len(agents) // 2
    return {"market": "h0", "grid": "h0", **{a: "h1" for a in agents[:half]},
            **{a: "h2" for a in agents[half:]}}


def _spec(scenario, out: Path, hosts: Hosts, port: int) -> tuple[DeploySpec, dict[str, str]]:
    """deploy.json as an operator assembles it for three hosts (docs/deploy.md): each
    node's own address; each host makes its nodes' key pairs (`peergrid keys new`, the
    secrets stay in its keys-HOST/), and only the public keys are added to deploy.json
    (`peergrid keys add`)."""
    spec = deploy_spec(scenario, "rule", out, days=1, insecure=True)
    where = _placement(spec.agents)
    endpoints = {name: f"tcp://{hosts.addr(where[name])}:{port + i}"
                 for i, name in enumerate(spec.endpoints)}
    dataclasses.replace(spec, endpoints=endpoints).write(out / "deploy.json")
    for host in sorted(set(where.values())):
        names = [n for n, h in where.items() if h == host]
        made = hosts.run(host, PEERGRID, "keys", "new", *names, "--dir",
                         str(out / f"keys-{host}"), stdout=subprocess.DEVNULL)
        assert made.wait(timeout=120) == 0
    public = [str(out / f"keys-{where[n]}" / f"{n}.key") for n in where]
    subprocess.run([PEERGRID, "keys", "add", "--config", str(out / "deploy.json"), *public],
                   check=True, capture_output=True, timeout=120)
    return DeploySpec.read(out / "deploy.json"), where


def _start(hosts: Hosts, spec: DeploySpec, where: dict[str, str], out: Path
           ) -> dict[str, subprocess.Popen]:
    procs = {}
    for name, host in where.items():
        role = name if name in ("market", "grid") else "prosumer"
        cmd = [PEERGRID, "node", role, "--config", str(out / "deploy.json"),
               "--key", str(out / f"keys-{host}" / f"{name}.key_secret")]
        if role == "prosumer":
            cmd += ["--id", name]
        procs[name] = hosts.run(host, *cmd, stdout=subprocess.DEVNULL,
                                stderr=open(out / f"{name}.stderr", "w"))  # noqa: SIM115
    return procs


def _wait(procs: dict[str, subprocess.Popen], timeout_s: float = 240) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    try:
        return {n: p.wait(timeout=max(deadline - time.monotonic(), 0.1))
                for n, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()


def _rows(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.is_file() else 0


OUTSIDER = textwrap.dedent('''
    """From a host with no key: connect to every node, plain and with a key of its own,
    and keep trying (ZeroMQ reconnects) until killed."""
    import json, struct, sys, time
    import zmq
    from peergrid.comms.messages import Crash, RoundStart, Stop
    from peergrid.comms.wire import Header, encode

    spec = json.load(open(sys.argv[1]))
    ctx, socks = zmq.Context(), []
    for name, endpoint in spec["endpoints"].items():
        for curve in (False, True):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt_string(zmq.ROUTING_ID, "market")
            if curve:
                s.curve_publickey, s.curve_secretkey = zmq.curve_keypair()
                s.curve_serverkey = spec["security"]["public_keys"][name].encode()
            s.connect(endpoint)
            for n, msg in enumerate((Crash(3), Stop(), RoundStart(9, 0.5, 0))):
                data = encode(Header(spec["scenario_id"], 0, 3, "market", msg.kind), msg)
                s.send_multipart([data, struct.pack("<QQ", time.time_ns(), n + 1)])
            socks.append(s)
    time.sleep(600)
''')


def _day_across_hosts(hosts: Hosts, scenario, out: Path, port: int, rows: int, **faults):
    """A one-day rule deployment started node by node on the hosts, once the market has
    cleared ``rows`` rounds: (scenario, spec, placement, processes)."""
    one_day = scenario.model_copy(update={
        "scenario": scenario.scenario.model_copy(update={"days": 1})})
    s = for_policy(with_faults(one_day, base_port=port, **faults), "rule")
    out.mkdir()
    spec, where = _spec(s, out, hosts, port)
    procs = _start(hosts, spec, where, out)
    deadline = time.monotonic() + 120
    while _rows(out / "market.jsonl") < rows and time.monotonic() < deadline:
        time.sleep(0.01)
    return s, spec, where, procs


def test_a_deployment_across_hosts_equals_in_process_and_outsiders_get_nothing_in(
        hosts, ieee13_scenario, tmp_path):
    out = tmp_path / "dep"
    s, spec, where, procs = _day_across_hosts(hosts, ieee13_scenario, out, 29000, rows=0)
    script = tmp_path / "outsider.py"
    script.write_text(OUTSIDER)
    # the outsider is there from the start, as the nodes come up, and tries all day
    outsider = hosts.run("h9", sys.executable, str(script), str(out / "deploy.json"),
                         stderr=subprocess.PIPE, text=True)
    try:
        exits = _wait(procs)
    finally:
        outsider.kill()
        _, err = outsider.communicate()
    assert "Traceback" not in err, err
    assert set(exits.values()) == {0}, exits
    expected = in_process(s, rule)
    pd.testing.assert_frame_equal(read_records(out)[expected.columns], expected)
    for name in spec.endpoints:  # each node refused the outsider at the handshake
        events = [json.loads(x) for x in (out / "nodes" / f"{name}.jsonl").read_text()
                  .splitlines()]
        assert events[0]["event"] == "secure"
        assert not any(e["event"] in ("killed", "stale_round_start") for e in events), name
        counted = {r for e in events if e["event"] == "rejected_count" for r in e["counts"]}
        assert "key not on the allow-list" in counted, name  # its own key
        assert counted & {"handshake protocol", "handshake failed"}, name  # plain TCP


@pytest.mark.slow  # 15 processes that each import torch, on 2 cores: ~90 s
def test_a_veth_link_taken_down_behaves_as_the_injected_partition(hosts, ieee13_scenario,
                                                                  tmp_path):
    """h2's cable is pulled for 1.5 s in the middle of the day: its agents miss those
    rounds' clearing and book them grid-only, nobody else is touched, and every round
    is booked once and balanced, as with ``[[deploy.partitions]]``."""
    out = tmp_path / "dep"
    _, spec, where, procs = _day_across_hosts(hosts, ieee13_scenario, out, 29100, rows=6,
                                              bid_deadline_ms=300.0, signal_timeout_ms=300.0)
    cut_at = _rows(out / "market.jsonl")
    _ip("link", "set", hosts.link("h2"), "down")
    time.sleep(1.5)
    _ip("link", "set", hosts.link("h2"), "up")
    back_at = _rows(out / "market.jsonl")
    exits = _wait(procs)
    assert set(exits.values()) == {0}, exits
    records = read_records(out)
    assert len(records) == len(spec.agents) * 24  # every round of every agent, once
    assert not records.duplicated(["episode", "round", "agent"]).any()
    assert checks.energy_balance_problems(records, dt_h=1.0) == []
    per_round = records.groupby("round")[["p2p_sold_kwh", "p2p_bought_kwh"]].sum()
    assert np.allclose(per_round.p2p_sold_kwh, per_round.p2p_bought_kwh)
    market = pd.read_json(out / "market.jsonl", lines=True)
    missing = {r: set(m) for r, m in enumerate(market.bids_missing) if m}
    cut_off = {a for a, h in where.items() if h == "h2"}
    assert missing, "the cut made no round miss a bid"
    assert set().union(*missing.values()) <= cut_off  # only h2's agents
    # only while cut, and the rounds TCP's retransmission back-off takes to resume after
    assert cut_at <= min(missing) and max(missing) <= back_at + 10
    for a in spec.agents:  # the others saw nothing of it
        events = [json.loads(x) for x in (out / "nodes" / f"{a}.jsonl").read_text()
                  .splitlines()]
        flagged = {e["k"] for e in events if e["event"] == "round" and e["flags"]}
        if a not in cut_off:
            assert flagged == set(), a
        else:
            # the round in flight as the cable went (its settlement or voltages) too
            assert flagged <= set(range(cut_at - 1, back_at + 11)), (a, flagged, cut_at,
                                                                     back_at)
    by_key = records.set_index(["round", "agent"])
    for r, agents in missing.items():  # whose bid missed a round traded with the grid only
        for a in agents:
            assert (by_key.loc[(r, a), ["p2p_sold_kwh", "p2p_bought_kwh"]] == 0).all(), (r, a)
