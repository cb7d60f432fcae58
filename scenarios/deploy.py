"""`peergrid deploy`: the scenario as separate processes over ZeroMQ, with faults."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from peergrid.agents.learners.config import ONLINE_ALGORITHMS
from peergrid.comms.deployment import Deployment
from peergrid.comms.launcher import launch
from peergrid.scenarios.community import for_policy
from peergrid.scenarios.errors import ScenarioError
from peergrid.scenarios.loader import fault_name_problems, pydantic_problems
from peergrid.scenarios.logs import write_manifest
from peergrid.scenarios.schema import Scenario
from peergrid.scenarios.simulate import prepare_run_dir


def with_faults(scenario: Scenario, **overrides: Any) -> Scenario:
    """The scenario with ``[deploy]`` fields replaced (CLI options win over the file)."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    if not changes:
        return scenario
    data = scenario.deploy.model_dump()
    data.update(changes)
    try:
        deploy = type(scenario.deploy).model_validate(data)
    except ValidationError as err:
        raise ScenarioError("command line", pydantic_problems(err, ("deploy",))) from None
    s = scenario.model_copy(update={"deploy": deploy})
    problems = fault_name_problems(s)
    if problems:
        raise ScenarioError("command line", problems)
    return s


def check_policy(scenario: Scenario, policy: str, learn: bool) -> None:
    """Refuse, before any process starts, a policy the nodes could not load: otherwise
    every prosumer process would fail on its own and the market trade without them."""
    from peergrid.agents.policies import REFERENCE_POLICIES
    from peergrid.scenarios.logs import read_manifest

    if policy in (*REFERENCE_POLICIES, *ONLINE_ALGORITHMS):
        if learn:
            raise ScenarioError("--learn", [f"--policy {policy}: --learn continues a "
                                            "trained run (--policy runs/NAME)"])
        return
    manifest = read_manifest(policy)  # names the directory if it is not a run
    if not (Path(policy) / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{policy}: no checkpoint.pt (is this a training run?)")
    algo = manifest.get("run", {}).get("algo")
    trained = [a["id"] for a in manifest["scenario"].get("agents") or []]
    problems = []
    missing = [a.id for a in scenario.agents if a.id not in trained]
    if missing:
        problems.append(f"{len(missing)} agent(s) of this scenario ({', '.join(missing[:5])}"
                        f"{', ...' if len(missing) > 5 else ''}) have no trained policy here; "
                        f"it was trained for {len(trained)} agents "
                        f"({manifest['scenario_source']})")
    if learn and algo not in ONLINE_ALGORITHMS:
        problems.append(f"--learn continues a decentralised learner "
                        f"({', '.join(ONLINE_ALGORITHMS)}), not {algo}")
    if problems:
        raise ScenarioError(str(policy), problems)


def deploy(scenario: Scenario, source: str, policy: str, out: str | Path, days: int = 1,
           seed: int = 0, learn: bool = False, force: bool = False) -> tuple[Path, dict]:
    check_policy(scenario, str(policy), learn)
    scenario = for_policy(scenario, str(policy))
    out = prepare_run_dir(out, force)
    for sub in ("nodes", "checkpoints"):
        for f in (out / sub).glob("*"):
            f.unlink()
    agents = [a.id for a in scenario.agents]
    d = scenario.deploy
    dep = Deployment(
        scenario=scenario.model_dump(mode="json"), days=days, seed=seed, policy=str(policy),
        learn=learn, out=str(out), agents=agents,
        endpoints=Deployment.endpoints_for(agents, d.host, d.base_port),
    )
    write_manifest(out, source, scenario, runtime="zeromq", policy=str(policy), days=days,
                   start=scenario.scenario.start.isoformat(), train_seed=seed, learn=learn,
                   soc_carried_over=True)
    t0 = time.perf_counter()
    exits = launch(dep)
    (out / "timing.txt").write_text(f"wall_s {time.perf_counter() - t0:.2f}\n")
    return out, exits
