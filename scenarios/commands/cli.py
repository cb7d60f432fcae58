"""peergrid: a peer-to-peer energy market on a distribution feeder, with learning
prosumers. Start with `peergrid simulate --days 1 --out demo`, then `peergrid logs plot
demo`; every command's options: `peergrid COMMAND --help`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from peergrid.agents.names import ALGORITHMS, REFERENCE_POLICIES
from peergrid.scenarios.commands.arguments import (MissingExtra, UsageError, existing_dir,
                                                   milliseconds, non_negative_int, out_dir,
                                                   out_file, port, positive_int, probability)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from peergrid.scenarios.definition.loader import load_scenario, resolve
    from peergrid.scenarios.commands.report import format_summary, write_summary
    from peergrid.scenarios.commands.simulate import simulate

    scenario = load_scenario(args.scenario, days=args.days)
    out = simulate(scenario, resolve(args.scenario).name, args.policy, args.out,
                   days=args.days, progress=not args.quiet, force=args.force, fmt=args.format)
    summary = write_summary(out)
    print(format_summary(summary))
    print(f"\nrecords: {_records(out)}")
    print(f"summary: {out}/summary.json   figures: peergrid logs plot {out}")
    return 0


def _records(out: Path) -> str:
    """Where a run's records are, in the format it was written in."""
    if (out / "agents.parquet").is_file():
        return f"{out}/agents.parquet, {out}/market.parquet, {out}/grid.parquet"
    return f"{out}/agents/*.jsonl, {out}/market.jsonl, {out}/grid.jsonl"


def _cmd_logs(args: argparse.Namespace) -> int:
    from peergrid.scenarios.definition import checks
    from peergrid.scenarios.commands import report
    from peergrid.scenarios.runtime.logs import read_manifest, read_records

    if args.logs_cmd == "summarize":
        summary = report.write_summary(args.run)
        print(json.dumps(summary, indent=2) if args.json
              else report.format_summary(summary, all_agents=args.all_agents))
        return 0
    if args.logs_cmd == "compare":
        from peergrid.scenarios.commands.compare import compare, format_compare

        table, paths = compare(args.runs, args.baseline, args.out)
        print(format_compare(table))
        for path in paths:
            print(path)
        return 0
    if args.logs_cmd == "report":
        from peergrid.scenarios.commands.htmlreport import report_html

        print(report_html(args.run, args.out, all_agents=args.all_agents))
        return 0
    if args.logs_cmd == "plot":
        for path in report.plot(args.run, args.out):
            print(path)
        return 0
    if args.logs_cmd == "agent":
        import pandas as pd

        timeline = report.agent_timeline(args.run, args.agent)
        with pd.option_context("display.max_rows", None, "display.width", 250,
                               "display.max_columns", None):
            print(timeline.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        for e in timeline.attrs.get("events", []):
            detail = {k: v for k, v in e.items() if k not in ("t_s", "event") and v == v}
            print(f"  t={e['t_s']:.3f}s {e['event']}: {detail}")
        return 0
    if args.logs_cmd == "check":
        manifest = read_manifest(args.run)
        dt_h = manifest["scenario"]["scenario"]["step_min"] / 60.0
        problems = checks.all_problems(read_records(args.run), dt_h)
        for p in problems:
            print(p)
        print(f"{len(problems)} problem(s)" if problems else "all invariants hold")
        return 1 if problems else 0
    raise AssertionError(args.logs_cmd)


def _cmd_scenario(args: argparse.Namespace) -> int:
    from peergrid.scenarios.definition.loader import builtin_scenarios, load_scenario

    if args.scenario_cmd == "list":
        print("\n".join(builtin_scenarios()))
        return 0
    if args.scenario_cmd == "doc":
        from peergrid.scenarios.definition.schemadoc import render

        print(render())
        return 0
    if args.scenario_cmd == "diagnose":
        from peergrid.scenarios.commands.diagnose import diagnose, format_diagnosis

        from peergrid.scenarios.definition.loader import WINDOWS

        scenario = load_scenario(args.file)
        windows = WINDOWS if args.window == "all" else (args.window,)
        results = {w: diagnose(scenario, days=args.days, window=w) for w in windows}
        if args.json:
            print(json.dumps(results, indent=2))
        else:
            print("\n\n".join(format_diagnosis(r) for r in results.values()))
        return 0
    scenario = load_scenario(args.file)
    if args.scenario_cmd == "check":
        print(f"{args.file}: ok ({len(scenario.agents)} agents, feeder {scenario.feeder.name})")
    else:
        from peergrid.scenarios.definition.loader import to_file_text

        print(to_file_text(scenario, args.format), end="" if args.format == "toml" else "\n")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from peergrid.scenarios.definition.loader import load_scenario, resolve
    from peergrid.scenarios.commands.train import train

    scenario = load_scenario(args.scenario)
    algo = args.algo or scenario.algo.name
    out = train(scenario, resolve(args.scenario).name, algo, args.seed, args.out,
                episodes=args.episodes, resume=args.resume, progress=not args.quiet)
    print(f"metrics: {out}/metrics.csv  evaluations: {out}/eval.csv  "
          f"tensorboard: --logdir {out}/tb  checkpoint: {out}/checkpoint.state")
    print(f"greedy policy on the evaluation days: peergrid evaluate {out}")
    exchange = out / "exchange.json"
    if exchange.is_file():
        t = json.loads(exchange.read_text())
        print(f"consensus: {t['consensus_steps']} steps, {t['messages_sent']} messages "
              f"({t['messages_used']} arrived and averaged), {t['bytes_total'] / 1e6:.2f} MB "
              f"on {t['links']} links, {t['bytes_per_link_per_step'] / 1e3:.1f} kB per link "
              f"per step: {exchange}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from peergrid.scenarios.commands.report import format_summary, write_summary
    from peergrid.scenarios.commands.train import evaluate_run

    out = Path(args.out or Path(args.run) / "evaluation")
    metrics = evaluate_run(args.run, out, force=args.force, fmt=args.format)
    print(format_summary(write_summary(out)))
    print(f"\nteam reward {metrics['team_reward']:.2f}; records: {_records(out)}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from peergrid.scenarios.definition.loader import load_scenario, resolve

    scenario = load_scenario(args.scenario)
    source = resolve(args.scenario).name
    if args.out is None:  # the default place: runs/ is made, a given --out is not
        Path("runs").mkdir(exist_ok=True)
    out = args.out or f"runs/{args.name}"
    common = {"force": args.force}
    learning = {**common, "workers": args.workers, "progress": not args.quiet,
                "resume": args.resume, "engine": args.engine, "address": args.address}
    if args.address is not None and args.engine != "ray":
        raise UsageError(f"--address {args.address}: only with --engine ray")
    if args.engine == "ray" and args.name in ("baselines", "faults-deployed"):
        raise UsageError(f"--engine ray: {args.name} trains no sweep of runs (baselines "
                         "train nothing; faults-deployed runs real deployments beside "
                         "in-process twins on this machine)")
    if args.engine == "ray":
        from peergrid.scenarios.commands.raysweep import require_ray

        require_ray()  # before an experiment directory is cleared
    if args.algos:
        learning["algorithms"] = tuple(args.algos)
    if args.name == "baselines":
        from peergrid.scenarios.commands.experiment import baselines

        if args.resume:
            raise FileExistsError("--resume: baselines train nothing; run them again "
                                  "(with --force)")
        out = baselines(scenario, source, out, **common)
    elif args.name == "tune":
        from peergrid.scenarios.commands.tuning import tune

        out = tune(scenario, source, out, seeds=args.seeds or 2, episodes=args.episodes or 400,
                   **learning)
    elif args.name == "poisoning":
        from peergrid.scenarios.commands.poisoning import poisoning

        learning.pop("algorithms", None)
        out = poisoning(scenario, source, out, seeds=args.seeds or 3, episodes=args.episodes,
                        liar=args.liar, **learning)
    elif args.name == "faults":
        from peergrid.scenarios.commands.faults import faults

        learning.pop("algorithms", None)
        out = faults(scenario, source, out, seeds=args.seeds, episodes=args.episodes,
                     quick=args.quick, **learning)
    elif args.name == "faults-deployed":
        from peergrid.scenarios.commands.faults import confirm_deployed

        out = confirm_deployed(scenario, source, out, loss=args.loss, days=args.days,
                               seeds=args.seeds or 5, force=args.force, sweep=args.sweep,
                               deployments=args.deployments)
        print((out / "deployed.md").read_text())
        return 0
    elif args.name == "graphs":
        from peergrid.scenarios.commands.comparison import graphs

        learning.pop("algorithms", None)
        out = graphs(scenario, source, out, seeds=args.seeds or 3, episodes=args.episodes,
                     **learning)
    else:
        from peergrid.scenarios.commands.comparison import paper_comparison

        out = paper_comparison(scenario, source, out, seeds=args.seeds or 8,
                               episodes=args.episodes, **learning)
    print((out / "report.md").read_text())
    print(f"report: {out}/report.md  table: {out}/summary.csv")
    return 0


def _parse_kill(text: str) -> dict:
    """a05@6:9 → kill a05 at round 6, restart before round 9 (a05@6: stays down)."""
    try:
        agent, rest = text.split("@")
        at, _, restart = rest.partition(":")
        return {"agent": agent, "at_round": int(at),
                "restart_round": int(restart) if restart else None}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--kill {text!r}: expected AGENT@ROUND[:RESTART]") from None


def _parse_partition(text: str) -> dict:
    """a03:market@3-4 → cut every message between a03 and the market in rounds 3 to 4."""
    try:
        ends, window = text.split("@")
        a, b = ends.split(":")
        start, _, end = window.partition("-")
        return {"a": a, "b": b, "start_round": int(start), "end_round": int(end or start)}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--partition {text!r}: expected A:B@START[-END]") from None


def _cmd_deploy(args: argparse.Namespace) -> int:
    from peergrid.scenarios.commands.deploy import deploy, with_faults
    from peergrid.scenarios.definition.loader import load_scenario, resolve
    from peergrid.scenarios.commands.report import format_summary, write_summary

    if args.format == "parquet":
        from peergrid.comms.runlog import require_parquet

        require_parquet()  # before any process starts
    if args.address is not None and args.engine != "ray":
        raise UsageError(f"--address {args.address}: only with --engine ray")
    if args.address is not None and args.address.startswith("ray://"):
        raise UsageError(f"--address {args.address}: a deployment's driver runs on a node "
                         "of the cluster: use HEAD:6379 there, not Ray Client")
    if args.ray_files != "auto" and args.engine != "ray":
        raise UsageError(f"--ray-files {args.ray_files}: only with --engine ray")
    if args.engine == "ray" and args.base_port is not None:
        raise UsageError("--base-port: not with --engine ray (every node binds a port its "
                         "operating system picks and reports it)")
    scenario = load_scenario(args.scenario)
    kills = [*(k.model_dump() for k in scenario.deploy.kills), *(args.kill or [])]
    partitions = [*(p.model_dump() for p in scenario.deploy.partitions),
                  *(args.partition or [])]
    scenario = with_faults(scenario, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
                           drop=args.drop, base_port=args.base_port,
                           bid_deadline_ms=args.bid_deadline_ms,
                           signal_timeout_ms=args.signal_timeout_ms,
                           consensus_timeout_ms=args.consensus_timeout_ms,
                           kills=kills if args.kill else None,
                           partitions=partitions if args.partition else None)
    out, exits = deploy(scenario, resolve(args.scenario).name, args.policy, args.out,
                        days=args.days, seed=args.seed, learn=args.learn, force=args.force,
                        insecure=args.insecure, engine=args.engine, address=args.address,
                        ray_files=args.ray_files)
    status = json.loads((out / "status.json").read_text())
    bad = {n: c for n, c in exits.items() if c not in (0, None) and "#" not in n}
    if args.format == "parquet" and status["complete"] and not bad:
        from peergrid.comms.runlog import convert_to_parquet

        convert_to_parquet(out)  # the nodes wrote JSON Lines, flushed per round
    print(format_summary(write_summary(out)))
    print(f"\nprocesses: {len(exits)}; exit codes other than 0: {bad or 'none'}")
    print(f"logs: {_records(out)} (records), {out}/nodes/*.jsonl (messages, faults)")
    return 0 if not bad and status["complete"] else 1


def _cmd_view(args: argparse.Namespace) -> int:
    try:
        from peergrid.scenarios.commands.viz import serve
    except ImportError as err:
        raise MissingExtra("peergrid view", "viz", err.name) from None
    return serve(args.scenario, args.policy, args.days, args.seed, args.port, args.host,
                 open_browser=args.open)


def _cmd_keys(args: argparse.Namespace) -> int:
    from peergrid.comms import keys

    if args.keys_cmd == "new":
        for name in args.names:
            public = keys.new_pair(Path(args.dir), name)
            print(f"{name} {public}  (secret: {keys.secret_path(Path(args.dir), name)}, "
                  "stays on this host)")
        return 0
    added = keys.add_public_keys(Path(args.config), args.files)
    for name, public in added.items():
        print(f"{name} {public}")
    spec = json.loads(Path(args.config).read_text())
    missing = sorted({"market", "grid", *spec["agents"]} - set(spec["security"]["public_keys"]))
    print(f"{args.config}: {len(added)} public key(s) added"
          + (f"; still without a key: {', '.join(missing)}" if missing else ""))
    return 0


def _cmd_node(args: argparse.Namespace) -> int:
    from peergrid.comms.launcher import run_node

    run_node(args.role, args.id or args.role, args.config, args.incarnation,
             key_file=args.key, insecure=args.insecure)
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where there is one to show (not for flags, or options that are
    unset unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or isinstance(action, argparse._VersionAction):
            return action.help or ""
        return super()._get_help_string(action)


def _commands(parent: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:
    """A sub-command group whose parsers all show their defaults."""
    sub = parent.add_subparsers(dest=dest, required=True, metavar="COMMAND")
    add = sub.add_parser

    def add_parser(name: str, **kwargs):
        kwargs.setdefault("description", kwargs.get("help"))
        return add(name, formatter_class=_HelpFormatter, **kwargs)

    sub.add_parser = add_parser  # type: ignore[method-assign]
    return sub


def _scenario_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", default="ieee13",
                   help="a shipped scenario's name (peergrid scenario list) or a TOML file")


def _quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _force_arg(p: argparse.ArgumentParser, what: str = "run directory") -> None:
    p.add_argument("--force", action="store_true",
                   help=f"replace an existing {what}: the new one is written beside it and "
                   "swapped in when complete, so a failed run leaves the old one untouched")


def _format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl",
                   help="records as JSON Lines, or as Parquet files at the end of the run "
                   "(the [parquet] extra; docs/logs.md)")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    p = argparse.ArgumentParser(prog="peergrid", description=__doc__,
                                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"peergrid {version('peergrid')}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log at INFO level, and show the traceback of an error")
    sub = _commands(p, "cmd")

    sim = sub.add_parser("simulate", help="run a reference policy and write a run directory")
    _scenario_arg(sim)
    sim.add_argument("--policy", default="rule", choices=REFERENCE_POLICIES,
                     help="rule-based policy every agent follows (docs/learning.md)")
    sim.add_argument("--days", type=positive_int, default=None,
                     help="days to simulate (default: the scenario's scenario.days)")
    sim.add_argument("--out", required=True, type=out_dir,
                     help="run directory to create (its parent must exist)")
    _force_arg(sim)
    _format_arg(sim)
    _quiet_arg(sim)
    sim.set_defaults(func=_cmd_simulate)

    vw = sub.add_parser("view", help="the live view in a browser: the feeder's voltages, "
                        "batteries, trades, prices and SDR round by round (mesa's SolaraViz; "
                        "the [viz] extra, docs/viz.md)")
    _scenario_arg(vw)
    vw.add_argument("--policy", default="rule", choices=REFERENCE_POLICIES,
                    help="rule-based policy every agent follows")
    vw.add_argument("--days", type=positive_int, default=1, help="days in the window")
    vw.add_argument("--seed", type=non_negative_int, default=None,
                    help="root seed (default: the scenario's scenario.seed)")
    vw.add_argument("--port", type=port, default=8765, help="TCP port of the local server")
    vw.add_argument("--host", default="localhost", help="interface the server listens on")
    vw.add_argument("--open", action="store_true", help="open it in the default browser")
    vw.set_defaults(func=_cmd_view)

    logs = sub.add_parser("logs", help="read a run directory (docs/logs.md)")
    lsub = _commands(logs, "logs_cmd")
    s = lsub.add_parser("summarize", help="per-agent and community totals")
    s.add_argument("run", type=existing_dir, help="a run directory")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.add_argument("--all-agents", action="store_true",
                   help="list every agent (above 20 agents: the spread and the 5 highest "
                   "and 5 lowest costs)")
    cp = lsub.add_parser("compare", help="KPIs of several runs side by side, each as a "
                         "ratio to a baseline run (CityLearn-style)")
    cp.add_argument("runs", nargs="+", type=existing_dir,
                    help="run directories over the same feeder, agents and rounds")
    cp.add_argument("--baseline", type=existing_dir, default=None,
                    help="the run every KPI is divided by (default: the first run)")
    cp.add_argument("--out", default=None, type=out_dir,
                    help="write DIR/compare.png (its parent must exist; default: no figure)")
    rp = lsub.add_parser("report", help="one self-contained HTML file: figures and tables")
    rp.add_argument("run", type=existing_dir, help="a run directory")
    rp.add_argument("--out", default=None, type=out_file,
                    help="the HTML file (its directory must exist; default: RUN/report.html)")
    rp.add_argument("--all-agents", action="store_true", help="list every agent")
    pl = lsub.add_parser("plot", help="write PNG figures")
    pl.add_argument("run", type=existing_dir, help="a run directory")
    pl.add_argument("--out", default=None, type=out_dir,
                    help="figure directory (its parent must exist; default: the run)")
    ag = lsub.add_parser("agent", help="one agent's timeline (records, messages, faults)")
    ag.add_argument("run", type=existing_dir, help="a run directory")
    ag.add_argument("agent", help="agent id, e.g. a01")
    ch = lsub.add_parser("check", help="verify energy balance and price bounds")
    ch.add_argument("run", type=existing_dir, help="a run directory")
    logs.set_defaults(func=_cmd_logs)

    tr = sub.add_parser("train", help="train learning agents in process")
    _scenario_arg(tr)
    tr.add_argument("--algo", choices=ALGORITHMS, default=None,
                    help="learner (default: the scenario's algo.name)")
    tr.add_argument("--seed", type=non_negative_int, default=0,
                    help="training seed (learners, day draws)")
    tr.add_argument("--episodes", type=positive_int, default=None,
                    help="training episodes, one day each (default: the scenario's "
                    "algo.episodes)")
    tr.add_argument("--out", required=True, type=out_dir,
                    help="run directory to create (its parent must exist)")
    tr.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    _quiet_arg(tr)
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="run a trained policy greedily on the evaluation days")
    ev.add_argument("run", type=existing_dir, help="a training run directory (peergrid train)")
    ev.add_argument("--out", default=None, type=out_dir,
                    help="run directory to create (default: RUN/evaluation)")
    _force_arg(ev)
    _format_arg(ev)
    ev.set_defaults(func=_cmd_evaluate)

    ex = sub.add_parser("experiment", help="named experiments (docs/learning.md)")
    ex.add_argument("name", choices=("baselines", "tune", "paper-comparison", "graphs",
                                     "poisoning", "faults", "faults-deployed"),
                    help="baselines: reference policies and both optima; tune: the same small "
                    "grid for every algorithm, scored on the validation window; "
                    "paper-comparison: every algorithm over seeds, on the test window; "
                    "graphs: the networked learner on each communication graph; "
                    "poisoning: consensus with one lying neighbour, per aggregation rule; "
                    "faults: both consensus learners against message loss, staleness and "
                    "partitions, and team reward against bytes for cheaper exchanges; "
                    "faults-deployed: one loss point learned online by a real deployment "
                    "and in process over seeds")
    _scenario_arg(ex)
    ex.add_argument("--seeds", type=positive_int, default=None,
                    help="seeds per algorithm (default: tune 2, paper-comparison 8, graphs 3, "
                    "poisoning 3, faults 5 or 3 with --quick, faults-deployed 5)")
    ex.add_argument("--episodes", type=positive_int, default=None,
                    help="training episodes per run (default: tune 400, poisoning 200, "
                    "faults 600 or 200 with --quick, else algo.episodes)")
    ex.add_argument("--liar", default=None,
                    help="poisoning: the agent that sends forged parameters (default: the "
                    "scenario's first agent)")
    ex.add_argument("--quick", action="store_true",
                    help="faults: the reduced size of the committed report (3 seeds x 200 "
                    "episodes, 102 runs; without it 5 seeds x 600 episodes)")
    ex.add_argument("--loss", type=probability, default=0.3,
                    help="faults-deployed: the consensus message loss probability")
    ex.add_argument("--days", type=positive_int, default=84,
                    help="faults-deployed: days of online learning (ending with the "
                    "training window)")
    ex.add_argument("--deployments", type=positive_int, default=2,
                    help="faults-deployed: deployments, with the seeds after the in-process "
                    "ones")
    ex.add_argument("--sweep", default=None, type=existing_dir,
                    help="faults-deployed: a faults experiment directory, to quote its "
                    "interval at the same loss")
    ex.add_argument("--algos", nargs="+", choices=ALGORITHMS, default=None,
                    help="algorithms to run (default: all)")
    ex.add_argument("--workers", type=positive_int, default=2,
                    help="training runs in parallel (local engine, or the CPUs of the Ray "
                    "instance --engine ray starts; a cluster's own CPUs decide with "
                    "--address)")
    ex.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: a process pool on this machine; ray: each training run a "
                    "Ray task, retried from clean if its worker is lost (the [cluster] "
                    "extra; tune, paper-comparison, graphs, poisoning, faults; the same "
                    "results as local, wall times apart)")
    ex.add_argument("--address", default=None,
                    help="with --engine ray: an existing Ray cluster (e.g. HEAD:6379); "
                    "default: start a local Ray instance")
    ex.add_argument("--out", default=None, type=out_dir,
                    help="experiment directory (default: runs/<name>)")
    ex.add_argument("--force", action="store_true",
                    help="delete an existing experiment directory first, then run (unlike a "
                    "run directory's --force, the old results are gone even if the new "
                    "experiment fails)")
    ex.add_argument("--resume", action="store_true",
                    help="keep the runs in --out that are complete (timing.txt and test.csv "
                    "for the same episodes) and train only the others; a partly trained run "
                    "starts again. Only for the same code and scenario: each run depends on "
                    "its scenario, algorithm and seed alone")
    _quiet_arg(ex)
    ex.set_defaults(func=_cmd_experiment)

    dp = sub.add_parser("deploy", help="run the market as separate processes over ZeroMQ "
                        "(docs/deploy.md)")
    _scenario_arg(dp)
    dp.add_argument("--policy", default="rule",
                    help="rule | nop2p | selfconsume | voltvar | consensus | consensus-critic | "
                    "ippo (fresh learners) | a training run directory (frozen policy)")
    dp.add_argument("--learn", action="store_true", help="a trained run keeps learning")
    dp.add_argument("--days", type=positive_int, default=1, help="days to run")
    dp.add_argument("--seed", type=non_negative_int, default=0,
                    help="learner seed (as for train)")
    dp.add_argument("--out", required=True, type=out_dir,
                    help="run directory to create (its parent must exist)")
    _force_arg(dp)
    _format_arg(dp)
    dp.add_argument("--latency-ms", type=milliseconds, default=None,
                    help="mean one-way latency on every link (default: the scenario's "
                    "deploy.latency_ms)")
    dp.add_argument("--jitter-ms", type=milliseconds, default=None,
                    help="standard deviation of a normal jitter on the latency (default: "
                    "deploy.jitter_ms)")
    dp.add_argument("--drop", type=probability, default=None,
                    help="message loss probability (default: deploy.drop)")
    dp.add_argument("--kill", type=_parse_kill, action="append",
                    help="AGENT@ROUND[:RESTART_ROUND]: kill a prosumer process and restart it "
                    "(repeatable; adds to the scenario's deploy.kills)")
    dp.add_argument("--partition", type=_parse_partition, action="append",
                    help="cut a link for a window of global rounds: A:B@START[-END], "
                    "e.g. a03:market@3-4 (repeatable; adds to the scenario's)")
    dp.add_argument("--bid-deadline-ms", type=milliseconds, default=None,
                    help="how long the market waits for bids (default: deploy."
                    "bid_deadline_ms)")
    dp.add_argument("--signal-timeout-ms", type=milliseconds, default=None,
                    help="how long a prosumer waits for the round's grid signal (default: "
                    "deploy.signal_timeout_ms)")
    dp.add_argument("--consensus-timeout-ms", type=milliseconds, default=None,
                    help="how long a learner waits for its neighbours' critics (default: "
                    "deploy.consensus_timeout_ms)")
    dp.add_argument("--base-port", type=port, default=None,
                    help="first TCP port of the deployment, 1024-65000: market = base, grid "
                    "= base+1, agent i = base+10+i (default: deploy.base_port)")
    dp.add_argument("--insecure", action="store_true",
                    help="plain TCP, no CURVE: no authentication or encryption (local "
                    "experiments only; every node log says so)")
    dp.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="local: one OS process per node on this machine, supervised by the "
                    "launcher; ray: one Ray actor per node, spread over a Ray cluster's "
                    "nodes, restarted by Ray (the [cluster] extra; docs/deploy.md)")
    dp.add_argument("--address", default=None,
                    help="with --engine ray: an existing Ray cluster (e.g. HEAD:6379); "
                    "default: start a local Ray instance")
    dp.add_argument("--ray-files", choices=("auto", "shared", "gathered"), default="auto",
                    help="with --engine ray: where each node writes. shared: the run "
                    "directory itself (a mount every Ray node sees at the same path); "
                    "gathered: its own machine, every checkpoint and its rows copied to "
                    "the run directory before the messages it covers are sent; auto: "
                    "shared where the node sees the run directory, else gathered")
    dp.set_defaults(func=_cmd_deploy)

    nd = sub.add_parser("node", help="run one node of a deployment (for several hosts)")
    nd.add_argument("role", choices=("market", "grid", "prosumer"), help="the node's role")
    nd.add_argument("--id", default=None, help="agent id (prosumer nodes)")
    nd.add_argument("--config", required=True, help="the deployment's deploy.json")
    nd.add_argument("--incarnation", type=non_negative_int, default=0,
                    help="> 0: resume from checkpoint")
    nd.add_argument("--key", default=None,
                    help="this node's secret key file (default: deploy.json's "
                    "security.key_dir/NAME.key_secret)")
    nd.add_argument("--insecure", action="store_true",
                    help="accept a deploy.json without keys (plain TCP) even with "
                    "endpoints on other hosts")
    nd.set_defaults(func=_cmd_node)

    ky = sub.add_parser("keys", help="CURVE key pairs for nodes started by hand "
                        "(docs/deploy.md)")
    ksub = _commands(ky, "keys_cmd")
    kn = ksub.add_parser("new", help="make key pairs on this host; prints the public keys")
    kn.add_argument("names", nargs="+", help="node names (market, grid, agent ids)")
    kn.add_argument("--dir", default="keys", help="where the pairs go (mode 0700)")
    ka = ksub.add_parser("add", help="put public key files (NAME.key) into deploy.json")
    ka.add_argument("--config", required=True, help="the deployment's deploy.json")
    ka.add_argument("files", nargs="+", help="public key files NAME.key")
    ky.set_defaults(func=_cmd_keys)

    sc = sub.add_parser("scenario", help="list, check or show scenario files "
                        "(docs/scenario.md)")
    ssub = _commands(sc, "scenario_cmd")
    ssub.add_parser("list", help="shipped scenarios")
    ssub.add_parser("doc", help="print the scenario reference (docs/scenario.md)")
    x = ssub.add_parser("check", help="validate a scenario")
    x.add_argument("file", help="a shipped scenario's name, a TOML file, or the JSON of "
                   "scenario show --format json")
    x = ssub.add_parser("show", help="print it fully resolved: every default filled in, "
                        "generated agents listed; scenario check reads the output back")
    x.add_argument("file", help="a shipped scenario's name or a scenario file")
    x.add_argument("--format", choices=("toml", "json"), default="toml",
                   help="output format")
    dg = ssub.add_parser("diagnose", help="violations and line loadings over each window with "
                         "the community's injections, with none, and with PV alone")
    dg.add_argument("file", help="a shipped scenario's name or a scenario file")
    dg.add_argument("--window", choices=("all", "train", "validation", "test"), default="all",
                    help="which window")
    dg.add_argument("--days", type=positive_int, default=None,
                    help="only the window's first days")
    dg.add_argument("--json", action="store_true", help="print the results as JSON")
    sc.set_defaults(func=_cmd_scenario)
    return p


def _user_error(err: BaseException) -> bool:
    """Errors that are the input's, not the program's: one line, exit status 2. Their
    classes are looked up by module only now, so that ``--help`` and ``logs`` load
    nothing heavy (a class whose module was never imported cannot have been raised)."""
    if isinstance(err, (OSError, MissingExtra, UsageError)):
        return True
    user_errors = {
        "peergrid.scenarios.definition.errors": ("ScenarioError",),
        "peergrid.agents.statefile": ("StateFileError",),
        "peergrid.comms.keys": ("KeyFileError",),
        "peergrid.comms.runlog": ("ParquetUnavailable",),
        "peergrid.scenarios.commands.compare": ("CompareError",),
        "peergrid.comms.raycluster": ("RayUnavailable", "RayClusterMismatch"),
    }
    return any(isinstance(err, getattr(sys.modules[module], name))
               for module, names in user_errors.items() if module in sys.modules
               for name in names)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except Exception as err:
        if args.verbose or not _user_error(err):
            raise
        print(f"peergrid: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
