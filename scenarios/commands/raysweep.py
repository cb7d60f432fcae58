"""The training runs of a multi-run experiment as Ray tasks (``--engine ray``).

One task per run, one CPU each, on a Ray instance started here (``address=None``) or on
an existing cluster (``--address``). A run depends on its scenario, algorithm and seed
alone (every draw comes from ``agents.seeding.stream``, every network is initialised
from its own seed, torch runs one thread), so the engine changes where a run executes,
never what it computes: the experiment writes the same ``summary.csv`` as with the local
pool.

A task whose worker or node dies is run again (``RETRIES``). A dead attempt may leave
files behind, so each attempt trains into its own staging directory beside the run's
(``.<run>.attempt-<id>``) and renames it to the run's directory only once complete: the
run directory exists only whole, whatever died when. An attempt first removes its
predecessors' staging directories, and keeps a run a predecessor completed before its
result was lost. On a cluster, the experiment directory must be on storage every node
sees at the same path (the driver reads the runs' results from it), and peergrid must be
installed on every node.

Ray is an optional dependency (``pip install 'peergrid[cluster]'``), imported only here
and in ``comms.raycluster`` (which joins or starts the Ray instance).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from peergrid.comms.raycluster import RayUnavailable as RayUnavailable  # re-exported
from peergrid.comms.raycluster import init_ray, require_ray
from peergrid.scenarios.commands.experiment import TrainingJob, finished_wall_s

RETRIES = 3
"""Attempts after the first when a worker process or node is lost (not on an error a run
raises: a run is deterministic, so it would raise again)."""
STAGING = ".{name}.attempt-"


def train_attempt(job: TrainingJob) -> float:
    """One attempt at a run (a Ray task): trains into a fresh staging directory and
    renames it to ``job.out`` when complete; the wall seconds, as the local pool measures
    them."""
    import torch
    from peergrid.scenarios.commands.train import train

    torch.set_num_threads(1)  # as the local pool's processes: fast and the same floats
    out = Path(job.out)
    prefix = STAGING.format(name=out.name)
    for stale in out.parent.glob(prefix + "*"):  # a dead attempt's, never read
        shutil.rmtree(stale, ignore_errors=True)
    kept = finished_wall_s(job)
    if kept is not None:  # an attempt finished, then its result was lost with its worker
        return kept
    if out.exists():
        shutil.rmtree(out)
    staging = out.parent / f"{prefix}{uuid.uuid4().hex[:12]}"
    t0 = time.perf_counter()
    train(job.scenario, job.source, job.algo, job.seed, staging, episodes=job.episodes,
          progress=False, tensorboard=False, attack=job.attack)
    wall = time.perf_counter() - t0
    try:
        os.rename(staging, out)  # atomic on one file system: whole or absent
    except OSError:  # an attempt presumed dead finished first: the same run
        kept = finished_wall_s(job)
        if kept is None:
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return wall


def run_on_ray(jobs: list[TrainingJob], workers: int, progress: bool, desc: str,
               address: str | None = None,
               attempt: Callable[[TrainingJob], float] = train_attempt) -> dict[str, float]:
    """Every job as a Ray task; wall seconds per job's output directory (keyed as the
    jobs name them). ``address=None`` starts a local instance of ``workers`` CPUs and
    stops it at the end; an address joins that cluster. A Ray already initialised in
    this process is used as it is, if ``address`` is None or names its cluster
    (``comms.raycluster.init_ray``). ``attempt`` is what each task runs (tests pass one
    that dies)."""
    if not jobs:
        return {}
    ray = require_ray()
    started_here = False
    pending: dict[Any, TrainingJob] = {}
    bar = None
    walls: dict[str, float] = {}
    try:  # from the start: a failure after ray.init still shuts down what it started
        started_here = init_ray(address, num_cpus=workers)
        task = ray.remote(num_cpus=1, max_retries=RETRIES)(attempt)
        # absolute: a cluster's workers do not share the driver's working directory
        pending = {task.remote(replace(j, out=str(Path(j.out).absolute()))): j for j in jobs}
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc=desc, unit="run")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                walls[pending.pop(ref).out] = ray.get(ref)
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
        with contextlib.suppress(Exception):  # the error that stopped the sweep is the news
            for ref in pending:  # a run failed or the user stopped the sweep
                ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
    return {j.out: walls[j.out] for j in jobs}
