"""Deployment speed and memory: rounds per second, round latency, USS per prosumer process.

Run: ``python bench/deploy.py [--days 1]``. Deploys (no faults) 13 prosumer processes on
ieee13 and 32 and 64 prosumer processes on the Dickert LV feeder, each with the rule
policy for ``--days`` days and with online consensus learning for one rollout and a day
(``algo.rollout_days`` + 1 days, so the rounds include a PPO update and its critic
exchanges between graph neighbours over ZeroMQ). It reports, measured in this run:
round latency (median, p99 and max of the time between consecutive rounds at the
market, start-up excluded; with learning the max is the round that waited for the
update), rounds per second, and the memory of the prosumer processes (the pids their
``hello`` reported; peak USS = private pages, PSS and RSS, sampled from /proc while
the deployment runs; median over the prosumers; the forkserver shares the preloaded and
warmed-up torch/pandapower pages, comms/preload.py).

Then two fault measurements on ieee13 (rule policy, bid deadline and signal timeout
500 ms each): the worst round time with ``--drop 0.1`` on every link (from the market's
``round`` events, against the target of 2 x the bid deadline), and a flood: 100,000 junk
messages (random bytes, wrong-shaped msgpack, well-formed messages from an unknown peer)
sent to the market and to one prosumer while they trade, with each node's USS before the
flood and after it has been read. The last lines are machine-readable:

    deploy procs=13 rounds_per_s=<x> p99_ms=<y> uss_mb=<z>
    deploy drop=0.1 worst_round_s=<x> bid_deadline_s=0.5
    deploy flood=100000 <node>_uss_before_mb=<x> <node>_uss_after_mb=<y> ...

``--curve-only``: the cost of CURVE, 13 prosumer processes on ieee13, rule and consensus
learning, each with CURVE (the default) and with plain TCP (``--insecure``), alternated
three times; medians of rounds/s and p99 round time:

    deploy procs=13 policy=<p> curve_rounds_per_s=<x> plain_rounds_per_s=<y> ratio=<x/y> ...

The flood runs over plain TCP (with CURVE the junk would not get past the handshake).

``--engine ray``: the rule policy for a day with 13 prosumers (ieee13) and 64 and 128
(Dickert LV, ``--procs`` to choose; it has 120 load buses, so 128 puts a second
prosumer on 8 of them, each bus's house split in two), each with the local launcher and
then as Ray actors on a local Ray instance (comms/raylaunch.py), side by side: rounds/s,
p99 round time, start-up (the whole deployment's wall time less its rounds), per
prosumer process the peak USS / PSS / RSS (median), and totals (the highest sum over
the processes in one sample, taken every 0.2 s): the USS of the node processes
(market, grid, prosumers), the USS of the engine's own processes ("daemons": for Ray
every other process the Ray instance started under this one: gcs_server, raylet, its
dashboard and runtime-env agents, the autoscaler and log monitors, idle workers; for the
local launcher its forkserver and multiprocessing's resource tracker; a line under each
row gives each kind's USS in the sample where all processes peaked), both together, and
the PSS of both together (the USS leaves out the pages processes share, such as the
torch the local nodes share with the forkserver; the PSS charges each process its
share). Processes are found as descendants of this one (/proc), so no other process on
the machine counts. Ray's object store is a shared-memory mapping of the raylet: its
resident size is printed under the Ray row (while only the raylet maps it, it is part
of the raylet's USS). ``--ray-files shared,gathered`` adds a Ray row whose nodes keep
their files on their machine and copy each checkpoint to the run directory
(``ray-gath``: what a cluster without a shared mount costs). A run whose estimated
memory (its node processes x the PSS per process of the engine's previous run, 230 MB
for Ray and 60 MB locally before any, plus that run's daemons) exceeds 80 % of the
memory available is skipped, and the reason printed:

    deploy engine=<local|ray|ray-gath> procs=<n> rounds_per_s=<x> p99_ms=<y> uss_mb=<z>
        total_uss_mb=<nodes> daemons_uss_mb=<d> all_uss_mb=<both> all_pss_mb=<p>
    deploy engine=<local|ray|ray-gath> procs=<n> skipped=memory need_gb=<x> available_gb=<y>

(the first on one line).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from peergrid.scenarios.commands.deploy import deploy, with_faults
from peergrid.scenarios.definition.loader import load_scenario, parse_scenario, read_scenario_file


def _memory_mb(pid: int) -> tuple[float, float, float] | None:
    """(USS, PSS, RSS) of a process in MB from /proc/PID/smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return uss / 1024, kb.get("Pss", 0) / 1024, kb.get("Rss", 0) / 1024


def _smaps_of(pid: int, mark: str) -> tuple[float, float] | None:
    """(Rss, private) in MB of the mappings of a process whose path holds ``mark``."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    rss = private = 0
    inside = False
    for line in text.splitlines():
        head = line.split(maxsplit=1)[0]
        if not head.endswith(":"):  # a mapping's first line: address range, perms, ..., path
            inside = mark in line
        elif inside and head == "Rss:":
            rss += int(line.split()[1])
        elif inside and head in ("Private_Clean:", "Private_Dirty:"):
            private += int(line.split()[1])
    return rss / 1024, private / 1024


def _descendants(root: int) -> dict[int, str]:
    """Every process under ``root`` (children, theirs, ...), with its command line."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:  # field 4 of /proc/PID/stat, after the command in parentheses
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return out


def _short(cmd: str) -> str:
    """A process's name for the breakdown: ``ray::DashboardAgent``, ``raylet``,
    ``log_monitor.py`` (the script, not the interpreter)."""
    helper = re.search(r"multiprocessing\.(\w+)", cmd)
    if helper:  # python -c 'from multiprocessing.forkserver import main; ...'
        return helper.group(1)
    for word in cmd.split():
        if word.startswith("ray::"):
            return word.split(".")[0]
        base = word.rsplit("/", 1)[-1]
        if not word.startswith("-") and not base.startswith("python"):
            return base
    return cmd.strip() or "?"


def _node_pids(marks: tuple[str, ...] = ("forkserver", "multiprocessing")) -> list[int]:
    """Running processes forked by a multiprocessing forkserver (the nodes, and it), or
    whose command line holds one of ``marks`` (``ray::NodeActor``: a Ray node actor)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(m in cmd for m in marks):
            out.append(int(d.name))
    return out


class MemorySampler(threading.Thread):
    """Peak memory and CPU time of the processes that match ``marks`` or, with ``tree``,
    of every process under this one (``tree_cmd``: their command lines; ``before``:
    those already there when the sampler was made, e.g. a process of a Ray instance
    being stopped; ``ticks``: each sample's (USS, PSS) per pid, for totals at one time:
    a sum of each process's peak would count a forkserver's pages as its own before it
    forks and again in the nodes after)."""

    def __init__(self, marks: tuple[str, ...] = ("forkserver", "multiprocessing"),
                 tree: bool = False) -> None:
        super().__init__(daemon=True)
        self.marks, self.tree = marks, tree
        self.samples: dict[int, tuple[float, ...]] = {}  # peak of each, per pid
        self.cpu_s: dict[int, float] = {}  # CPU seconds used, the last sample per pid
        self.tree_cmd: dict[int, str] = {}
        self.ticks: list[dict[int, tuple[float, float]]] = []
        self.before = set(_descendants(os.getpid())) if tree else set()
        self.plasma: tuple[float, float] = (0.0, 0.0)  # peak (Rss, private) MB, object store
        self.stop = threading.Event()

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self.stop.is_set():
            pids = set() if self.tree else set(_node_pids(self.marks))
            now: dict[int, tuple[float, float]] = {}
            if self.tree:
                for pid, cmd in _descendants(os.getpid()).items():
                    self.tree_cmd.setdefault(pid, cmd)  # a Ray worker renames itself
                    if cmd.startswith("ray::"):  # later: keep the latest
                        self.tree_cmd[pid] = cmd
                    pids.add(pid)
                    if _short(cmd) == "raylet" and pid not in self.before:
                        m = _smaps_of(pid, "plasma")
                        if m is not None:
                            self.plasma = tuple(max(a, b) for a, b in zip(self.plasma, m,
                                                                         strict=True))
            for pid in pids:
                m = _memory_mb(pid)
                if m is not None:
                    peak = self.samples.get(pid, m)
                    self.samples[pid] = tuple(max(a, b) for a, b in zip(peak, m, strict=True))
                    now[pid] = m[:2]
                try:  # utime + stime, fields 14 and 15 of /proc/PID/stat
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu_s[pid] = (int(fields[11]) + int(fields[12])) / tick
                except (OSError, IndexError, ValueError):
                    pass
            if self.tree:
                self.ticks.append(now)
            time.sleep(0.2)

    def peak_total(self, pids: set[int], kind: int = 0) -> float:
        """The highest sum over ``pids`` of one sample's USS (``kind`` 0) or PSS (1)."""
        return max((sum(m[kind] for p, m in t.items() if p in pids) for t in self.ticks),
                   default=0.0)


def one(scenario, policy: str, days: int, port: int, insecure: bool = False,
        engine: str = "local", ray_files: str = "auto") -> dict[str, float]:
    s = with_faults(scenario, base_port=port)
    sampler = MemorySampler(tree=True)  # every process under this one
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out, exits = deploy(s, "bench", policy, Path(tmp) / "dep", days=days,
                            insecure=insecure, engine=engine,
                            **({"ray_files": ray_files} if engine == "ray" else {}))
        wall = time.perf_counter() - t0
        sampler.stop.set()
        events = [json.loads(x) for x in (out / "nodes" / "market.jsonl").read_text().splitlines()]
        started = [json.loads(x) for x in (out / "nodes" / "launcher.jsonl").read_text()
                   .splitlines()]
    t = np.array([e["t_s"] for e in events if e["event"] == "round"])
    gaps = np.diff(t) * 1e3
    prosumers = {e["pid"] for e in events if e["event"] == "hello" and e["peer"] != "grid"}
    nodes = [sampler.samples[pid] for pid in prosumers if pid in sampler.samples]
    every = [e["pid"] for e in events if e["event"] == "hello"] + [
        e["pid"] for e in started if e.get("node") == "market" and "pid" in e]
    cpu = [sampler.cpu_s[pid] for pid in prosumers if pid in sampler.cpu_s]
    n = len(s.agents)
    # the engine's own processes: locally the forkserver and the resource tracker; on
    # Ray every process started under this one during this run but the nodes (and but
    # a resource tracker left from a local run before)
    local_helper = ("forkserver", "resource_tracker")
    daemons = {pid: _short(cmd) for pid, cmd in sampler.tree_cmd.items()
               if pid not in set(every) and pid in sampler.samples
               and ((engine == "local" and any(m in cmd for m in local_helper))
                    or (engine == "ray" and pid not in sampler.before
                        and "multiprocessing" not in cmd))}
    ours = set(every) | set(daemons)
    peak = max(sampler.ticks, default={},  # the sample where nodes and daemons used most
               key=lambda t: sum(m[0] for p, m in t.items() if p in ours))
    by_name: dict[str, float] = {}  # the daemons in that sample
    for pid, name in daemons.items():
        by_name[name] = by_name.get(name, 0.0) + peak.get(pid, (0.0,))[0]
    return {
        "procs": n, "rounds": len(t), "wall_s": wall, "startup_s": float(t[0]),
        "rounds_per_s": (len(t) - 1) / (t[-1] - t[0]), "median_ms": float(np.median(gaps)),
        "p99_ms": float(np.percentile(gaps, 99)), "max_ms": float(gaps.max()),
        **{f"{kind}_mb": float(np.median([m[i] for m in nodes])) if nodes else float("nan")
           for i, kind in enumerate(("uss", "pss", "rss"))},
        # per prosumer per round: what a node spends, whatever the deadlines allow
        "cpu_ms_per_round": 1e3 * float(np.median(cpu)) / len(t) if cpu else float("nan"),
        # totals: the highest of one sample's sums
        "total_uss_mb": sampler.peak_total(set(every)),
        "daemons_uss_mb": sampler.peak_total(set(daemons)),
        "daemons_pss_mb": sampler.peak_total(set(daemons), 1),
        "all_uss_mb": sampler.peak_total(ours),
        "all_pss_mb": sampler.peak_total(ours, 1),
        "daemons": dict(sorted(by_name.items(), key=lambda kv: -kv[1])),
        "daemon_procs": len(daemons),
        "plasma_rss_mb": sampler.plasma[0], "plasma_private_mb": sampler.plasma[1],
        "ok": all(c == 0 for c in exits.values()),
    }


def worst_round_under_loss(port: int) -> dict[str, float]:
    s = with_faults(load_scenario("ieee13"), base_port=port, drop=0.1, bid_deadline_ms=500.0,
                    signal_timeout_ms=500.0)
    with tempfile.TemporaryDirectory() as tmp:
        out, exits = deploy(s, "bench", "rule", Path(tmp) / "dep", days=1)
        events = [json.loads(x) for x in (out / "nodes" / "market.jsonl").read_text().splitlines()]
    durations = [e["duration_s"] for e in events if e["event"] == "round"]
    return {"worst_s": max(durations), "median_s": float(np.median(durations)),
            "rounds": len(durations), "ok": all(c == 0 for c in exits.values())}


def curve_cost(repeats: int = 3) -> dict[tuple[str, bool], list[dict[str, float]]]:
    """ieee13 (13 prosumer processes), rule for a day and consensus learning for a
    rollout and a day, with CURVE and with plain TCP, alternated ``repeats`` times so
    that both see the same machine."""
    scenario = load_scenario("ieee13")
    runs: dict[tuple[str, bool], list[dict[str, float]]] = {}
    port = 26000
    for rep in range(repeats):
        for policy in ("rule", "consensus"):
            days = 1 if policy == "rule" else scenario.algo.rollout_days + 1
            for insecure in ((False, True) if rep % 2 == 0 else (True, False)):
                port += 20
                runs.setdefault((policy, insecure), []).append(
                    one(scenario, policy, days, port, insecure=insecure))
    return runs


def _junk(rng: np.random.Generator, scenario_id: str, n: int) -> list[bytes]:
    import msgpack

    from peergrid.comms.messages import RoundDone
    from peergrid.comms.wire import Header, encode

    kinds = [lambda: rng.bytes(int(rng.integers(1, 300))),
             lambda: msgpack.packb([1, scenario_id, 0, int(rng.integers(99)), "x", "bid", {}]),
             lambda: encode(Header(scenario_id, 0, int(rng.integers(24)), "intruder",
                                   "round_done"), RoundDone(int(rng.integers(24))))]
    return [kinds[i % 3]() for i in range(n)]


def flood(port: int, n: int = 100_000, targets: tuple[str, ...] = ("market", "a01")
          ) -> dict[str, float]:
    import zmq

    # plain TCP: with CURVE the junk would not get past the handshake; here every check
    # on the message itself is paid for
    s = with_faults(load_scenario("ieee13"), base_port=port, latency_ms=100.0)  # ~25 s a day
    days = 2  # long enough to outlast both floods
    result: dict[str, float] = {}

    def attack(out: Path) -> None:
        deadline = time.monotonic() + 120
        while not ((out / "market.jsonl").is_file()
                   and len((out / "market.jsonl").read_bytes().splitlines()) >= 2):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        endpoints = json.loads((out / "deploy.json").read_text())["endpoints"]
        started = [json.loads(x) for x in (out / "nodes" / "launcher.jsonl").read_text()
                   .splitlines()]
        pids = {e["node"]: e["pid"] for e in started if e["event"] == "started"}
        ctx = zmq.Context()
        junk = _junk(np.random.default_rng(0), s.scenario.id, n)
        for name in targets:
            result[f"{name}_uss_before_mb"] = _memory_mb(pids[name])[0]
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt_string(zmq.ROUTING_ID, "intruder")
            sock.setsockopt(zmq.LINGER, 5000)
            sock.connect(endpoints[name])
            t0 = time.perf_counter()
            for i, data in enumerate(junk):  # blocks at the high-water mark: the node
                sock.send_multipart([data, struct.pack("<QQ", 1, i + 1)])  # sets the pace
            sock.close()
            log = out / "nodes" / f"{name}.jsonl"
            while time.perf_counter() - t0 < 60:  # until the node has read them all
                counted = sum(json.loads(x).get("total", 0) for x in log.read_text().splitlines()
                              if '"rejected_count"' in x)
                if counted >= n:
                    break
                time.sleep(0.2)
            result[f"{name}_flood_s"] = time.perf_counter() - t0
            after = _memory_mb(pids[name])
            result[f"{name}_uss_after_mb"] = after[0] if after else float("nan")
        ctx.term()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dep"
        thread = threading.Thread(target=attack, args=(out,))
        thread.start()
        _, exits = deploy(s, "bench", "rule", out, days=days, insecure=True)
        thread.join()
        for name in targets:  # every junk message refused and counted
            log = (out / "nodes" / f"{name}.jsonl").read_text().splitlines()
            result[f"{name}_refused"] = sum(json.loads(x).get("total", 0) for x in log
                                            if '"rejected_count"' in x)
            result[f"{name}_log_lines"] = len(log)
    result["ok"] = all(c == 0 for c in exits.values())
    return result


DICKERT_BUSES = 120  # the load buses of dickert_lv


def dickert(count: int):
    """Dickert LV with ``count`` prosumers: a seeded sample of its 120 load buses, or,
    beyond 120, one on each and a second on the first ``count - 120`` of them, the
    bus's house split in two halves (load, PV and battery), so the feeder's load stays
    that of the 120."""
    data, source = read_scenario_file("dickert_lv")
    data["placement"]["count"] = min(count, DICKERT_BUSES)
    scenario = parse_scenario(data, source)
    if count <= DICKERT_BUSES:
        return scenario
    half = ("load_peak_kw", "pv_kwp", "battery_kwh", "battery_kw", "pv_inverter_kva",
            "battery_inverter_kva")
    agents = [a.model_dump(mode="json", exclude_none=True) for a in scenario.agents]
    for a in agents[:count - DICKERT_BUSES]:
        for k in half:
            if k in a:
                a[k] = round(a[k] / 2, 6)
    width = len(str(count))
    extra = [{**a, "id": f"a{DICKERT_BUSES + i + 1:0{width}d}"}
             for i, a in enumerate(agents[:count - DICKERT_BUSES])]
    dumped = scenario.model_dump(mode="json", exclude_none=True, exclude={"placement"})
    dumped["agents"] = agents + extra
    return parse_scenario(dumped, f"{source} with {count} prosumers")


# before any run of an engine: PSS per node process and of its daemons, MB (measured
# 6 Dec: a Ray worker 212-216, Ray's daemons ~340; a local node 26-42, forkserver ~350)
GUESS_MB = {"local": (60.0, 300.0), "ray": (230.0, 700.0)}


def _available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def engines(sizes: tuple[int, ...], ray_files: tuple[str, ...] = ("shared",)) -> None:
    """The rule policy for a day, local launcher and Ray side by side, per size; on Ray
    once per ``ray_files`` (``ray``: shared, ``ray-gath``: gathered, comms.replica)."""
    print(f"{'prosumers':>9}{'engine':>9}{'rounds/s':>10}{'p99 ms':>8}{'median ms':>11}"
          f"{'start-up s':>11}{'USS MB':>8}{'PSS MB':>8}{'RSS MB':>8}{'nodes USS GB':>13}"
          f"{'daemons USS GB':>15}{'all USS GB':>11}{'all PSS GB':>11}{'clean':>7}")
    lines = []
    per_process = dict(GUESS_MB)  # engine -> (PSS MB per node process, daemons PSS MB)
    source = {"local": "the guess for a first run", "ray": "the guess for a first run"}
    for i, n in enumerate(sizes):
        scenario = load_scenario("ieee13") if n == 13 else dickert(n)
        for engine, files in [("local", ""), *(("ray", f) for f in ray_files)]:
            label = "ray-gath" if files == "gathered" else engine
            pss, daemons = per_process[engine]
            procs = len(scenario.agents) + 2  # and the market and the grid
            need, available = procs * pss + daemons, _available_mb()
            if need > 0.8 * available:
                print(f"{len(scenario.agents):>9}{label:>9}  skipped: would need"
                      f" ~{need / 1024:.1f} GB ({procs} node processes x {pss:.0f} MB PSS"
                      f" + {daemons / 1024:.2f} GB of daemons, from {source[engine]}),"
                      f" more than 80 % of the {available / 1024:.1f} GB available",
                      flush=True)
                lines.append(f"deploy engine={label} procs={len(scenario.agents)} "
                             f"skipped=memory need_gb={need / 1024:.1f} "
                             f"available_gb={available / 1024:.1f}")
                continue
            r = one(scenario, "rule", 1, 30000 + 300 * i, engine=engine,
                    ray_files=files or "auto")
            startup = r["wall_s"] - (r["rounds"] - 1) / r["rounds_per_s"]
            print(f"{r['procs']:>9}{label:>9}{r['rounds_per_s']:>10.1f}{r['p99_ms']:>8.1f}"
                  f"{r['median_ms']:>11.1f}{startup:>11.1f}"
                  f"{r['uss_mb']:>8.1f}{r['pss_mb']:>8.1f}{r['rss_mb']:>8.1f}"
                  f"{r['total_uss_mb'] / 1024:>13.2f}{r['daemons_uss_mb'] / 1024:>15.2f}"
                  f"{r['all_uss_mb'] / 1024:>11.2f}{r['all_pss_mb'] / 1024:>11.2f}"
                  f"{str(r['ok']):>7}",
                  flush=True)
            print(f"{'':>18}daemons ({r['daemon_procs']}): " + ", ".join(
                f"{k} {v:.0f}" for k, v in r["daemons"].items()) + " MB USS"
                + (f"; object store resident {r['plasma_rss_mb']:.1f} MB"
                   f" ({r['plasma_private_mb']:.1f} MB of it in the raylet's USS)"
                   if engine == "ray" else ""), flush=True)
            if r["pss_mb"] == r["pss_mb"]:  # measured (not NaN): estimate from it
                per_process[engine] = (r["pss_mb"], r["daemons_pss_mb"])
                source[engine] = f"the {r['procs']}-prosumer run"
            lines.append(f"deploy engine={label} procs={r['procs']} "
                         f"rounds_per_s={r['rounds_per_s']:.1f} p99_ms={r['p99_ms']:.1f} "
                         f"uss_mb={r['uss_mb']:.1f} total_uss_mb={r['total_uss_mb']:.0f} "
                         f"daemons_uss_mb={r['daemons_uss_mb']:.0f} "
                         f"all_uss_mb={r['all_uss_mb']:.0f} all_pss_mb={r['all_pss_mb']:.0f}")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--faults-only", action="store_true",
                        help="only the loss and flood measurements")
    parser.add_argument("--curve-only", action="store_true",
                        help="only the cost of CURVE (13 processes, with and without)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: the local launcher and Ray actors side by side "
                             "(rule policy, --procs prosumers)")
    parser.add_argument("--procs", default="13,64,128",
                        help="with --engine ray: prosumer counts (13 is ieee13, others "
                             "Dickert LV)")
    parser.add_argument("--ray-files", default="shared",
                        help="with --engine ray: comma-separated, shared and/or gathered "
                             "(deploy --ray-files): one Ray row per mode")
    args = parser.parse_args()
    if args.engine == "ray":
        files = tuple(args.ray_files.split(","))
        if not set(files) <= {"shared", "gathered"}:
            parser.error(f"--ray-files {args.ray_files}: shared and/or gathered")
        engines(tuple(int(x) for x in args.procs.split(",")), files)
        return
    if args.curve_only:
        runs = curve_cost()
        print(f"{'ieee13, 13 prosumers':<24}{'links':>7}{'runs':>6}{'rounds/s':>10}"
              f"{'p99 ms':>9}{'median ms':>11}{'CPU ms/round':>14}")
        for (policy, insecure), rs in runs.items():
            print(f"{policy:<24}{'plain' if insecure else 'CURVE':>7}{len(rs):>6}"
                  f"{np.median([r['rounds_per_s'] for r in rs]):>10.1f}"
                  f"{np.median([r['p99_ms'] for r in rs]):>9.1f}"
                  f"{np.median([r['median_ms'] for r in rs]):>11.1f}"
                  f"{np.median([r['cpu_ms_per_round'] for r in rs]):>14.2f}")
        for policy in ("rule", "consensus"):
            curve = np.median([r["rounds_per_s"] for r in runs[(policy, False)]])
            plain = np.median([r["rounds_per_s"] for r in runs[(policy, True)]])
            print(f"deploy procs=13 policy={policy} curve_rounds_per_s={curve:.1f} "
                  f"plain_rounds_per_s={plain:.1f} ratio={curve / plain:.3f} "
                  f"curve_p99_ms={np.median([r['p99_ms'] for r in runs[(policy, False)]]):.1f} "
                  f"plain_p99_ms={np.median([r['p99_ms'] for r in runs[(policy, True)]]):.1f} "
                  f"curve_cpu_ms_per_round="
                  f"{np.median([r['cpu_ms_per_round'] for r in runs[(policy, False)]]):.2f} "
                  f"plain_cpu_ms_per_round="
                  f"{np.median([r['cpu_ms_per_round'] for r in runs[(policy, True)]]):.2f}")
        return
    runs = [(f"{name}, {policy}", scenario, policy)
            for name, scenario in (("ieee13", load_scenario("ieee13")),
                                   ("dickert_lv", dickert(32)), ("dickert_lv", dickert(64)))
            for policy in ("rule", "consensus")]
    print(f"{'deployment':<22}{'procs':>6}{'days':>5}{'rounds/s':>10}{'median ms':>11}"
          f"{'p99 ms':>8}{'max ms':>8}{'start-up s':>11}{'USS MB':>8}{'PSS MB':>8}"
          f"{'RSS MB':>8}{'clean':>7}")
    first = None
    for i, (label, scenario, policy) in enumerate([] if args.faults_only else runs):
        days = args.days if policy == "rule" else scenario.algo.rollout_days + 1
        r = one(scenario, policy, days, 27100 + 200 * i)
        first = first or r
        print(f"{label:<22}{r['procs']:>6}{days:>5}{r['rounds_per_s']:>10.1f}"
              f"{r['median_ms']:>11.1f}{r['p99_ms']:>8.1f}{r['max_ms']:>8.0f}"
              f"{r['startup_s']:>11.1f}{r['uss_mb']:>8.1f}{r['pss_mb']:>8.1f}{r['rss_mb']:>8.1f}"
              f"{str(r['ok']):>7}")
    if first is not None:
        print(f"deploy procs=13 rounds_per_s={first['rounds_per_s']:.1f} "
              f"p99_ms={first['p99_ms']:.1f} uss_mb={first['uss_mb']:.1f}")
    loss = worst_round_under_loss(28800)
    print(f"\nieee13, rule, --drop 0.1, bid deadline = signal timeout = 0.5 s: worst round "
          f"{loss['worst_s']:.3f} s ({loss['worst_s'] / 0.5:.2f} x the bid deadline), median "
          f"{loss['median_s']:.3f} s over {loss['rounds']} rounds, clean {loss['ok']}")
    print(f"deploy drop=0.1 worst_round_s={loss['worst_s']:.3f} bid_deadline_s=0.5")
    f = flood(29000)
    for name in ("market", "a01"):
        print(f"flood of 100,000 junk messages at {name}: USS {f[name + '_uss_before_mb']:.1f} MB "
              f"before, {f[name + '_uss_after_mb']:.1f} MB after; read in "
              f"{f[name + '_flood_s']:.1f} s; refused and counted {f[name + '_refused']:,.0f}; "
              f"node log {f[name + '_log_lines']} lines")
    print("deploy flood=100000 " + " ".join(
        f"{k}={v:.1f}" for k, v in f.items() if k.endswith("_mb")) + f" clean={f['ok']}")


if __name__ == "__main__":
    main()
