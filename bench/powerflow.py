"""Power-flow speed and accuracy: peergrid's Z-bus solver vs pandapower vs lightsim2grid.

Run: ``python bench/powerflow.py [--batch 1000] [--repeat 200] [--pairs 15]
[--threads 1,2]`` (lightsim2grid comes with ``pip install -c constraints.txt -e
'.[bench]'``; it is skipped when missing).

Threads: every contender gets the same number. For each count in ``--threads`` the
bench reruns itself in a fresh interpreter with the BLAS/OpenMP thread variables set
before numpy is imported (the fast solvers' batches are BLAS products) and
lightsim2grid's time series given as many threads (``nb_thread``); lightsim2grid's
single Newton solve is single-threaded C++. The CPU/wall column shows how many cores a
fast batch really kept busy.

Spread: the batch-vs-lightsim2grid ratio is measured in ``--pairs`` alternated pairs
(fast batch, then lightsim2grid's series on the same vectors), so a machine busy with
other work slows both sides of a pair alike; the table gives the median ratio and its
interquartile range, and ``--repeat`` single solves give the median and IQR of a solve.

For each feeder every solver gets the same random injection vectors (each bus draws
0-1.5 x the feeder's average base load, a third of the buses exporting). Timings are
wall-clock medians measured in this run; ratios are taken within the run. The last
line is machine-readable:

    speedup_vs_runpp ieee13=<x> case33bw=<y> max_dv_pu=<z> per_phase_vs_runpp_3ph=<w>

where x, y = (ms per default runpp) / (ms per fast single solve) and z is the largest
voltage difference between the fast solver and runpp over every vector solved by both;
w the same ratio for the per-phase IEEE 13 solver against pandapower's runpp_3ph.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
"""Read once, when the libraries load: set in the child's environment, never here."""

import numpy as np  # noqa: E402
import pandapower as pp  # noqa: E402

from peergrid.grid.feeders import FEEDERS, base_loads, build_feeder  # noqa: E402
from peergrid.grid.powerflow import PandapowerSolver  # noqa: E402
from peergrid.grid.zbus import ZBusSolver  # noqa: E402

THREADS = 1
"""This process's thread count (``--worker``), given to lightsim2grid's time series too."""


def call_times_s(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall time of each of ``repeat`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def per_call_s(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of one call over ``repeat`` calls (after one warm-up)."""
    return statistics.median(call_times_s(fn, repeat))


def iqr(xs: list[float]) -> tuple[float, float]:
    """(first quartile, third quartile)."""
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def cpu_per_wall(fn: Callable[[], object], repeat: int = 5) -> float:
    """Process CPU time over wall time of ``repeat`` calls: the cores kept busy."""
    fn()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.process_time() - c0) / (time.perf_counter() - t0)


def injections(name: str, bus_names: list[str], batch: int, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
    loads = base_loads(name)
    avg_kw = np.mean([p for p, _ in loads.values() if p > 0])
    rng = np.random.default_rng(seed)
    n = len(bus_names)
    sign = np.where(rng.random((batch, n)) < 1 / 3, -1.0, 1.0)
    p_kw = sign * rng.uniform(0.0, 1.5, (batch, n)) * avg_kw
    return p_kw, 0.3 * np.abs(p_kw)


class LightSim:
    """lightsim2grid's C++ model of the reference net (agent loads on every bus)."""

    def __init__(self, ref: PandapowerSolver) -> None:
        from lightsim2grid.lightsim2grid_cpp import InjectionSweepCPP
        from lightsim2grid.network import init_from_pandapower
        from lightsim2grid.timeSerie import TimeSeriesCPP

        net = copy.deepcopy(ref.net)
        for sw in net.switch.itertuples():  # lightsim2grid ignores bus-bus switches: fuse them
            if sw.et == "b" and sw.closed:
                pp.toolbox.fuse_buses(net, sw.bus, {sw.element})
        net.switch.drop(net.switch.index, inplace=True)
        pp.runpp(net, numba=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = init_from_pandapower(net)
        # the time series starts each step from the last: one thread by design.
        # InjectionSweep solves the same steps from one start, split over threads
        self.series = TimeSeriesCPP(self.model)
        self.sweep = InjectionSweepCPP(self.model)
        self.sweep.nb_thread = THREADS
        self.agent_load = ref._load_idx  # fused buses keep their load rows
        self.load_p_mw = net.load.p_mw.to_numpy().copy()
        self.load_q_mvar = net.load.q_mvar.to_numpy().copy()
        self.load_row = {idx: i for i, idx in enumerate(net.load.index)}
        # start from pandapower's solution: it carries the transformers' phase shifts
        # (Dyn5 on the LV feeder), which a flat start would not
        self.v0 = (net.res_bus.vm_pu * np.exp(1j * np.radians(net.res_bus.va_degree))).to_numpy()
        # lightsim's bus order is pandapower's bus index order
        bus_pos = {b: i for i, b in enumerate(net.bus.index)}
        self.bus_of = np.array([bus_pos[b] for b in net.load.bus.loc[self.agent_load]])

    def _loads(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = [self.load_row[i] for i in self.agent_load]
        lp = np.tile(self.load_p_mw, (p_kw.shape[0], 1))
        lq = np.tile(self.load_q_mvar, (p_kw.shape[0], 1))
        lp[:, rows] = p_kw / 1000.0
        lq[:, rows] = q_kvar / 1000.0
        return np.ascontiguousarray(lp), np.ascontiguousarray(lq)

    def set_loads(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> None:
        lp, lq = self._loads(p_kw[None], q_kvar[None])
        for i in range(lp.shape[1]):
            self.model.change_p_load(i, lp[0, i])
            self.model.change_q_load(i, lq[0, i])

    def single(self) -> np.ndarray:
        """One Newton-Raphson solve of the loads set last (setting them is not timed)."""
        return self.model.ac_pf(self.v0, 30, 1e-8)

    def series_vm(self, p_kw: np.ndarray, q_kvar: np.ndarray, sweep: bool = False
                  ) -> np.ndarray:
        """Every vector solved by the time series (or, ``sweep``, the threaded sweep)."""
        computer = self.sweep if sweep else self.series
        lp, lq = self._loads(p_kw, q_kvar)
        computer.modify_load_p(lp)
        computer.modify_load_q(lq)
        computer.compute(self.v0, 30, 1e-8)
        return np.abs(computer.get_voltages())


def bench_feeder(name: str, batch: int, repeat: int, pairs: int = 15) -> dict[str, float]:
    net = build_feeder(name, slack_vm_pu=1.0)
    fast, ref = ZBusSolver(net), PandapowerSolver(net)
    p, q = injections(name, fast.bus_names, batch)
    out: dict[str, float] = {"buses": len(fast.bus_names)}

    single = call_times_s(lambda: fast.solve(p[0], q[0]), repeat)
    out["fast_us"] = statistics.median(single) * 1e6
    out["fast_us_q1"], out["fast_us_q3"] = (x * 1e6 for x in iqr(single))
    out["fast_batch_us"] = per_call_s(lambda: fast.solve_batch(p, q), 5) / batch * 1e6
    out["fast_batch_cpu_per_wall"] = cpu_per_wall(lambda: fast.solve_batch(p, q))
    batch_res = fast.solve_batch(p, q)

    n_ref = min(batch, 30)
    out["runpp_ms"] = per_call_s(lambda: ref.solve(p[0], q[0]), n_ref) * 1e3
    dv = 0.0
    for b in range(n_ref):
        r = ref.solve(p[b], q[b])
        if r.converged and batch_res.converged[b]:
            dv = max(dv, float(np.max(np.abs(r.vm_pu - batch_res.vm_pu[b]))))
    out["max_dv_pu"] = dv

    rec = copy.deepcopy(ref)
    rec.solve(p[0], q[0])
    recycle = {"bus_pq": True, "trafo": False, "gen": False}

    def runpp_recycle() -> None:
        rec.net.load.loc[rec._load_idx, "p_mw"] = p[1] / 1000.0
        rec.net.load.loc[rec._load_idx, "q_mvar"] = q[1] / 1000.0
        pp.runpp(rec.net, numba=False, recycle=recycle)

    pp.runpp(rec.net, numba=False, recycle=recycle)
    out["runpp_recycle_ms"] = per_call_s(runpp_recycle, n_ref) * 1e3
    assert np.max(np.abs(rec.net.res_bus.vm_pu.to_numpy() - batch_res.vm_pu[1])) < 1e-6

    try:
        ls = LightSim(ref)
    except ImportError:
        return out
    ls.set_loads(p[0], q[0])
    out["ls_single_us"] = per_call_s(ls.single, repeat) * 1e6
    single_vm = np.abs(ls.single())
    out["ls_series_cpu_per_wall"] = cpu_per_wall(lambda: ls.series_vm(p, q))
    # alternated pairs: the ratio of each pair, so shared load hits both sides alike
    out["ls_sweep_cpu_per_wall"] = cpu_per_wall(lambda: ls.series_vm(p, q, sweep=True))
    fast_t, ls_t, sweep_t = [], [], []
    for _ in range(pairs):  # fast, series, sweep in turn
        fast_t += call_times_s(lambda: fast.solve_batch(p, q), 1)
        ls_t += call_times_s(lambda: ls.series_vm(p, q), 1)
        sweep_t += call_times_s(lambda: ls.series_vm(p, q, sweep=True), 1)
    # lightsim2grid's better mode in each triple: what a user would pick
    ratios = [min(b, c) / a for a, b, c in zip(fast_t, ls_t, sweep_t, strict=True)]
    out["fast_batch_us"] = statistics.median(fast_t) / batch * 1e6
    out["ls_series_us"] = statistics.median(ls_t) / batch * 1e6
    out["ls_sweep_us"] = statistics.median(sweep_t) / batch * 1e6
    out["ls_over_fast"] = statistics.median(ratios)
    out["ls_over_fast_q1"], out["ls_over_fast_q3"] = iqr(ratios)
    ls_vm = ls.series_vm(p, q)
    out["ls_sweep_max_dv_pu"] = float(np.max(np.abs(ls.series_vm(p, q, sweep=True) - ls_vm)))
    # compare at the buses carrying the agents' loads
    fast_at_loads = batch_res.vm_pu[:, [fast.bus_names.index(str(ref.net.bus.name.at[b]))
                                        for b in ref.net.load.bus.loc[ref._load_idx]]]
    out["ls_max_dv_pu"] = max(
        float(np.max(np.abs(ls_vm[:, ls.bus_of] - fast_at_loads))),
        float(np.max(np.abs(single_vm[ls.bus_of] - fast_at_loads[0]))),
    )
    return out


def bench_per_phase(batch: int, repeat: int) -> dict[str, float]:
    """IEEE 13 per phase: the fast per-phase solver vs pandapower's runpp_3ph on the
    network both can represent (transposed lines), and on the real (Kersting) lines."""
    from peergrid.grid.feeders.ieee13 import build_ieee13_sequence, phase_feeder
    from peergrid.grid.powerflow import PandapowerPhaseSolver
    from peergrid.grid.threephase import ThreePhaseSolver

    fast = ThreePhaseSolver(phase_feeder("sequence"), 1.0)
    ref = PandapowerPhaseSolver(build_ieee13_sequence(1.0))
    real = ThreePhaseSolver(phase_feeder("kersting"), 1.0)
    loads = base_loads("ieee13")
    avg_kw = np.mean([p for p, _ in loads.values() if p > 0]) / 3
    rng = np.random.default_rng(0)
    n = len(fast.node_names)
    sign = np.where(rng.random((batch, n)) < 1 / 3, -1.0, 1.0)
    p = sign * rng.uniform(0.0, 1.5, (batch, n)) * avg_kw
    q = 0.3 * np.abs(p)
    out = {"nodes": n, "fast_us": per_call_s(lambda: fast.solve(p[0], q[0]), repeat) * 1e6,
           "fast_batch_us": per_call_s(lambda: fast.solve_batch(p, q), 5) / batch * 1e6}
    batch_res = fast.solve_batch(p, q)
    n_ref = min(batch, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["runpp_3ph_ms"] = per_call_s(lambda: ref.solve(p[0], q[0]), n_ref) * 1e3
        dv = 0.0
        for b in range(n_ref):
            r = ref.solve(p[b], q[b])
            dv = max(dv, float(np.max(np.abs(r.vm_pu - batch_res.vm_pu[b]))))
    out["max_dv_pu"] = dv
    # the real feeder has fewer nodes (one- and two-phase laterals): map by name
    cols = [fast.node_names.index(x) for x in real.node_names]
    out["real_nodes"] = len(real.node_names)
    out["real_us"] = per_call_s(lambda: real.solve(p[0, cols], q[0, cols]), repeat) * 1e6
    out["real_batch_us"] = per_call_s(lambda: real.solve_batch(p[:, cols], q[:, cols]), 5) / batch * 1e6
    return out


def run_worker(args: argparse.Namespace) -> dict:
    """Every measurement at this process's thread count, as JSON-ready numbers."""
    results = {name: bench_feeder(name, args.batch, args.repeat, args.pairs) for name in FEEDERS}
    return {"threads": THREADS, "feeders": results,
            "per_phase": bench_per_phase(args.batch, args.repeat)}


def run_threads(threads: int, argv: list[str]) -> dict:
    """This bench in a fresh interpreter with ``threads`` threads everywhere."""
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARIABLES}}
    done = subprocess.run([sys.executable, __file__, *argv, "--worker", str(threads)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {threads}-thread run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(run: dict, batch: int) -> None:
    results, ph, th = run["feeders"], run["per_phase"], run["threads"]
    print(f"\n{th} thread(s) for every solver; batch = {batch} injection vectors per feeder")
    header = (f"{'feeder':<11}{'buses':>6}{'fast µs (IQR)':>20}{'batch µs':>10}{'cpu/wall':>9}"
              f"{'runpp ms':>10}{'recycle ms':>11}{'ls µs':>8}{'ls ts µs':>9}"
              f"{'ls sw µs':>9}{'sw cpu':>7}{'x runpp':>9}{'ls best / batch (IQR)':>23}"
              f"{'max dV pu':>11}")
    print(header)
    for name, r in results.items():
        ls_single = r.get("ls_single_us", float("nan"))
        ls_series = r.get("ls_series_us", float("nan"))
        ratio = (f"{r['ls_over_fast']:.2f} ({r['ls_over_fast_q1']:.2f}-{r['ls_over_fast_q3']:.2f})"
                 if "ls_over_fast" in r else "-")
        single = f"{r['fast_us']:.0f} ({r['fast_us_q1']:.0f}-{r['fast_us_q3']:.0f})"
        print(f"{name:<11}{r['buses']:>6.0f}{single:>20}{r['fast_batch_us']:>10.2f}"
              f"{r['fast_batch_cpu_per_wall']:>9.2f}{r['runpp_ms']:>10.2f}"
              f"{r['runpp_recycle_ms']:>11.2f}{ls_single:>8.1f}{ls_series:>9.2f}"
              f"{r.get('ls_sweep_us', float('nan')):>9.2f}"
              f"{r.get('ls_sweep_cpu_per_wall', float('nan')):>7.2f}"
              f"{r['runpp_ms'] * 1e3 / r['fast_us']:>9.0f}{ratio:>23}{r['max_dv_pu']:>11.1e}")
    for name, r in results.items():
        if "ls_max_dv_pu" in r:
            print(f"{name}: lightsim2grid vs fast solver, max |dV| at agent buses "
                  f"{r['ls_max_dv_pu']:.1e} pu; sweep vs time series {r['ls_sweep_max_dv_pu']:.1e} pu")
    print(f"ieee13 per phase ({ph['nodes']:.0f} nodes, transposed lines): fast {ph['fast_us']:.1f} µs, "
          f"batch {ph['fast_batch_us']:.2f} µs/solve, runpp_3ph {ph['runpp_3ph_ms']:.1f} ms "
          f"(x {ph['runpp_3ph_ms'] * 1e3 / ph['fast_us']:.0f}), max |dV| {ph['max_dv_pu']:.1e} pu")
    print(f"ieee13 per phase ({ph['real_nodes']:.0f} nodes, the published line matrices): fast "
          f"{ph['real_us']:.1f} µs, batch {ph['real_batch_us']:.2f} µs/solve")


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=200, help="single solves timed")
    parser.add_argument("--pairs", type=int, default=15,
                        help="alternated (fast batch, lightsim2grid series) pairs timed")
    parser.add_argument("--threads", default="1,2", help="thread counts, one table each")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        THREADS = args.worker
        print(json.dumps(run_worker(args)))
        return
    argv = ["--batch", str(args.batch), "--repeat", str(args.repeat), "--pairs", str(args.pairs)]
    runs = [run_threads(int(t), argv) for t in args.threads.split(",")]
    load = os.getloadavg()
    print(f"medians of repeated calls; {os.cpu_count()} CPUs, load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)")
    for run in runs:
        print_table(run, args.batch)
    first = runs[0]
    results, ph = first["feeders"], first["per_phase"]
    max_dv = max(r["max_dv_pu"] for run in runs for r in run["feeders"].values())
    ratios = " ".join(f"ls_over_batch_{run['threads']}t_{name}={r['ls_over_fast']:.2f}"
                      for run in runs for name, r in run["feeders"].items()
                      if "ls_over_fast" in r)
    print(f"speedup_vs_runpp ieee13={results['ieee13']['runpp_ms'] * 1e3 / results['ieee13']['fast_us']:.0f} "
          f"case33bw={results['case33bw']['runpp_ms'] * 1e3 / results['case33bw']['fast_us']:.0f} "
          f"max_dv_pu={max(max_dv, ph['max_dv_pu']):.1e} "
          f"per_phase_vs_runpp_3ph={ph['runpp_3ph_ms'] * 1e3 / ph['fast_us']:.0f} {ratios}")


if __name__ == "__main__":
    main()
