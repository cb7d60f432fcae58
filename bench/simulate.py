"""What a user waits for: `peergrid simulate --days 7` end to end, and `peergrid --help`,
for the committed code (git HEAD) and the working tree side by side in one run.

Run: ``python bench/simulate.py [--repeat 5] [--days 7] [--ref HEAD]``

The reference code is a snapshot of ``--ref`` (``git archive``) run from a temporary
directory put first on PYTHONPATH; the new code is this checkout as installed. Every
measurement is the wall time of a fresh interpreter (``subprocess``), so imports,
profile loading, the rounds, the records and the summary all count. The two versions
alternate within each repetition, so a machine busy with other work slows both alike;
the ratio of medians is what to quote, with the spread (min-max) beside it.

"cold" starts from an empty profile cache (``PEERGRID_CACHE`` pointed at a new
directory each time: the first run after installing), "warm" from a filled one (every
run after that). The reference code has no cache: its cold and warm are the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_MAIN = "import sys; from peergrid.scenarios.commands.cli import main; sys.exit(main())"
_WHERE = "import peergrid.scenarios.commands.cli as c; print(c.__file__)"


def snapshot(ref: str, into: Path) -> Path:
    """The code at ``ref`` as an importable ``peergrid`` package under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "--prefix=peergrid/"],
                             check=True, capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def environment(pythonpath: Path | None, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    env["PEERGRID_CACHE"] = str(cache)
    return env


def wall_s(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall time of ``peergrid ARGS`` in a fresh interpreter; raises if it fails."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MAIN, *args], env=env, cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"peergrid {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return elapsed


def where(env: dict[str, str], cwd: Path) -> str:
    return subprocess.run([sys.executable, "-c", _WHERE], env=env, cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f} s ({min(xs):.2f}-{max(xs):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each case")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--scenario", default="ieee13")
    parser.add_argument("--ref", default="HEAD", help="git revision of the reference code")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="peergrid-bench-") as tmp_name:
        tmp = Path(tmp_name)
        old_root = snapshot(args.ref, tmp / "ref")
        warm_cache = tmp / "warm-cache"
        versions = {"old": environment(old_root, tmp / "old-cache"),
                    "new": environment(None, warm_cache)}
        for name, env in versions.items():  # each must run the code it claims to
            print(f"{name}: {where(env, tmp)}")
        sim = ["simulate", "--scenario", args.scenario, "--days", str(args.days),
               "--quiet", "--force"]
        # fill the warm cache (and the OS file cache for both) before timing
        for name, env in versions.items():
            wall_s([*sim, "--out", str(tmp / f"run-{name}")], env, tmp)

        times: dict[str, list[float]] = {k: [] for k in
                                         ("old simulate", "new simulate cold",
                                          "new simulate warm", "old --help", "new --help")}
        for i in range(args.repeat):  # alternate the versions: shared load hits both
            times["old simulate"].append(
                wall_s([*sim, "--out", str(tmp / "run-old")], versions["old"], tmp))
            cold = environment(None, tmp / f"cold-cache-{i}")
            times["new simulate cold"].append(
                wall_s([*sim, "--out", str(tmp / "run-new")], cold, tmp))
            shutil.rmtree(tmp / f"cold-cache-{i}", ignore_errors=True)
            times["new simulate warm"].append(
                wall_s([*sim, "--out", str(tmp / "run-new")], versions["new"], tmp))
            times["old --help"].append(wall_s(["--help"], versions["old"], tmp))
            times["new --help"].append(wall_s(["--help"], versions["new"], tmp))

    load = os.getloadavg()
    print(f"\n`peergrid simulate --scenario {args.scenario} --days {args.days}` and "
          f"`peergrid --help`, {args.repeat} runs each, old = {args.ref}, new = working "
          f"tree; {os.cpu_count()} CPUs, load average at the end "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min)")
    print(f"{'case':<20}{'median (min-max)':>24}{'old / new':>12}")
    old_sim = statistics.median(times["old simulate"])
    old_help = statistics.median(times["old --help"])
    for case, xs in times.items():
        ref = old_help if "help" in case else old_sim
        ratio = "" if case.startswith("old") else f"{ref / statistics.median(xs):>10.2f}x"
        print(f"{case:<20}{spread(xs):>24}{ratio:>12}")
    print(f"speedup simulate_warm={old_sim / statistics.median(times['new simulate warm']):.2f} "
          f"simulate_cold={old_sim / statistics.median(times['new simulate cold']):.2f} "
          f"help={old_help / statistics.median(times['new --help']):.2f} "
          f"help_new_s={statistics.median(times['new --help']):.2f}")


if __name__ == "__main__":
    main()
