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
warmed-up torch/pandapower pages, comms/preload.py). The last line is machine-readable:

    deploy procs=13 rounds_per_s=<x> p99_ms=<y> uss_mb=<z>
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from peergrid.scenarios.deploy import deploy, with_faults
from peergrid.scenarios.loader import load_scenario, parse_scenario, read_toml


def _memory_mb(pid: int) -> tuple[float, float, float] | None:
    """(USS, PSS, RSS) of a process in MB from /proc/PID/smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return uss / 1024, kb.get("Pss", 0) / 1024, kb.get("Rss", 0) / 1024


def _node_pids() -> list[int]:
    """Running processes forked by a multiprocessing forkserver (the nodes, and it)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "forkserver" in cmd or "multiprocessing" in cmd:
            out.append(int(d.name))
    return out


class MemorySampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: dict[int, tuple[float, ...]] = {}  # peak of each, per pid
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in _node_pids():
                m = _memory_mb(pid)
                if m is not None:
                    peak = self.samples.get(pid, m)
                    self.samples[pid] = tuple(max(a, b) for a, b in zip(peak, m, strict=True))
            time.sleep(0.5)


def one(scenario, policy: str, days: int, port: int) -> dict[str, float]:
    s = with_faults(scenario, base_port=port)
    sampler = MemorySampler()
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out, exits = deploy(s, "bench", policy, Path(tmp) / "dep", days=days)
        wall = time.perf_counter() - t0
        sampler.stop.set()
        events = [json.loads(x) for x in (out / "nodes" / "market.jsonl").read_text().splitlines()]
    t = np.array([e["t_s"] for e in events if e["event"] == "round"])
    gaps = np.diff(t) * 1e3
    prosumers = {e["pid"] for e in events if e["event"] == "hello" and e["peer"] != "grid"}
    nodes = [sampler.samples[pid] for pid in prosumers if pid in sampler.samples]
    n = len(s.agents)
    return {
        "procs": n, "rounds": len(t), "wall_s": wall, "startup_s": float(t[0]),
        "rounds_per_s": (len(t) - 1) / (t[-1] - t[0]), "median_ms": float(np.median(gaps)),
        "p99_ms": float(np.percentile(gaps, 99)), "max_ms": float(gaps.max()),
        **{f"{kind}_mb": float(np.median([m[i] for m in nodes])) if nodes else float("nan")
           for i, kind in enumerate(("uss", "pss", "rss"))},
        "ok": all(c == 0 for c in exits.values()),
    }


def dickert(count: int):
    data, source = read_toml("dickert_lv")
    data["placement"]["count"] = count
    return parse_scenario(data, source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1)
    args = parser.parse_args()
    runs = [(f"{name}, {policy}", scenario, policy)
            for name, scenario in (("ieee13", load_scenario("ieee13")),
                                   ("dickert_lv", dickert(32)), ("dickert_lv", dickert(64)))
            for policy in ("rule", "consensus")]
    print(f"{'deployment':<22}{'procs':>6}{'days':>5}{'rounds/s':>10}{'median ms':>11}"
          f"{'p99 ms':>8}{'max ms':>8}{'start-up s':>11}{'USS MB':>8}{'PSS MB':>8}"
          f"{'RSS MB':>8}{'clean':>7}")
    first = None
    for i, (label, scenario, policy) in enumerate(runs):
        days = args.days if policy == "rule" else scenario.algo.rollout_days + 1
        r = one(scenario, policy, days, 27100 + 200 * i)
        first = first or r
        print(f"{label:<22}{r['procs']:>6}{days:>5}{r['rounds_per_s']:>10.1f}"
              f"{r['median_ms']:>11.1f}{r['p99_ms']:>8.1f}{r['max_ms']:>8.0f}"
              f"{r['startup_s']:>11.1f}{r['uss_mb']:>8.1f}{r['pss_mb']:>8.1f}{r['rss_mb']:>8.1f}"
              f"{str(r['ok']):>7}")
    print(f"deploy procs=13 rounds_per_s={first['rounds_per_s']:.1f} p99_ms={first['p99_ms']:.1f} "
          f"uss_mb={first['uss_mb']:.1f}")


if __name__ == "__main__":
    main()
