"""`peergrid deploy`: the scenario as separate processes over ZeroMQ, with faults."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from peergrid.comms.deployment import Deployment
from pydantic import ValidationError

from peergrid.comms.launcher import launch
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


def deploy(scenario: Scenario, source: str, policy: str, out: str | Path, days: int = 1,
           seed: int = 0, learn: bool = False, force: bool = False) -> tuple[Path, dict]:
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
                   episodes_reset_daily=True)
    t0 = time.perf_counter()
    exits = launch(dep)
    (out / "timing.txt").write_text(f"wall_s {time.perf_counter() - t0:.2f}\n")
    return out, exits
