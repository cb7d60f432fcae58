"""Deployment speed and memory: rounds per second, round latency, USS per prosumer process.

Run: ``python bench/deploy.py [--days 1]``. Deploys one day (no faults) with 13 prosumer
processes on ieee13 (rule policy, then online consensus learning) and with 32 and 64
prosumer processes on the Dickert LV feeder (rule), and reports, measured in this run:
round latency (median and p99 of the time between consecutive rounds at the market,
start-up excluded), rounds per second, and the memory of the prosumer processes (USS =
private pages, PSS; sampled from /proc while the deployment runs; the forkserver shares
the preloaded torch/pandapower pages). The last line is machine-readable:

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


def _memory_mb(pid: int) -> tuple[float, float] | None:
    """(USS, PSS) of a process in MB from /proc/PID/smaps_rollup."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:]}
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return uss / 1024, kb.get("Pss", 0) / 1024


def _node_pids() -> dict[int, str]:
    """Running peergrid node processes: pid → the node's name (from its command line)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (d / "status").read_text()
        except OSError:
            continue
        if "forkserver" in cmd or "multiprocessing" in cmd:
            name = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("Name:")), "")
            out[int(d.name)] = name
    return out


class MemorySampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: dict[int, tuple[float, float]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in _node_pids():
                m = _memory_mb(pid)
                if m is not None:
                    self.samples[pid] = max(self.samples.get(pid, (0, 0)), m)
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
    mem = sorted(sampler.samples.values(), reverse=True)
    n = len(s.agents)
    # the n + 2 largest processes are the nodes (the forkserver itself is small)
    nodes = mem[: n + 2]
    return {
        "procs": n, "rounds": len(t), "wall_s": wall, "startup_s": float(t[0]),
        "rounds_per_s": (len(t) - 1) / (t[-1] - t[0]), "median_ms": float(np.median(gaps)),
        "p99_ms": float(np.percentile(gaps, 99)),
        "uss_mb": float(np.median([u for u, _ in nodes])) if nodes else float("nan"),
        "pss_mb": float(np.median([p for _, p in nodes])) if nodes else float("nan"),
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
    runs = [
        ("ieee13, rule", load_scenario("ieee13"), "rule"),
        ("ieee13, consensus learning", load_scenario("ieee13"), "consensus"),
        ("dickert_lv, rule", dickert(32), "rule"),
        ("dickert_lv, rule", dickert(64), "rule"),
    ]
    print(f"{'deployment':<28}{'procs':>6}{'rounds/s':>10}{'median ms':>11}{'p99 ms':>8}"
          f"{'start-up s':>11}{'USS MB':>8}{'PSS MB':>8}{'clean':>7}")
    first = None
    for i, (label, scenario, policy) in enumerate(runs):
        r = one(scenario, policy, args.days, 27100 + 200 * i)
        first = first or r
        print(f"{label:<28}{r['procs']:>6}{r['rounds_per_s']:>10.1f}{r['median_ms']:>11.1f}"
              f"{r['p99_ms']:>8.1f}{r['startup_s']:>11.1f}{r['uss_mb']:>8.1f}{r['pss_mb']:>8.1f}"
              f"{str(r['ok']):>7}")
    print(f"deploy procs=13 rounds_per_s={first['rounds_per_s']:.1f} p99_ms={first['p99_ms']:.1f} "
          f"uss_mb={first['uss_mb']:.1f}")


if __name__ == "__main__":
    main()
