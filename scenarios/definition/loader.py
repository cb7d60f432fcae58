"""Load a scenario TOML file, validate all of it, and report every problem at once."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from peergrid.grid.feeders import bus_phases, feeder_buses
from peergrid.scenarios.definition import strict
from peergrid.scenarios.definition.errors import ScenarioError
from peergrid.scenarios.definition.profiles import PROFILE_YEAR, available_profiles
from peergrid.scenarios.definition.placement import place_agents
from peergrid.scenarios.definition.schema import Scenario


SHIPPED_DIR = Path(__file__).parent.parent / "files"


def builtin_scenarios() -> list[str]:
    """Names of the scenario files shipped with peergrid."""
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.toml"))


def resolve(name_or_path: str | Path) -> Path:
    """A path to an existing file, or the name of a shipped scenario."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SHIPPED_DIR / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    if path.is_dir():
        raise ScenarioError(str(name_or_path), ["a directory, not a scenario file"])
    raise ScenarioError(
        str(name_or_path),
        [f"no such file, and not a shipped scenario (shipped: {', '.join(builtin_scenarios())})"],
    )


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-", "model-")):
            out += f".{part}" if out else part
    return out or "(file)"


def pydantic_problems(err: ValidationError, prefix: tuple[str, ...] = (),
                      root: type[BaseModel] = Scenario) -> list[str]:
    """One line per validation error, naming the field (under ``prefix``) and value;
    ``root`` is the model validated, for the nearest known name of a misspelt field."""
    problems = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        where = _loc((*prefix, *e["loc"]))
        if e["type"] in ("missing",):
            problems.append(f"{where}: required field is missing")
        elif e["type"] == "extra_forbidden":
            loc = tuple(p for p in e["loc"] if not str(p).startswith(("function-", "model-")))
            problems.append(f"{where} = {e['input']!r}: unknown field"
                            f"{strict.did_you_mean(root, loc)}")
        elif e["type"].startswith("model") or "model" in str(e.get("ctx", "")):
            problems.append(f"{where}: {msg}")
        elif isinstance(e.get("input"), dict):
            problems.append(f"{where}: {msg}")
        else:
            problems.append(f"{where} = {e['input']!r}: {msg}")
    return problems


def _cross_checks(s: Scenario) -> list[str]:
    problems = []
    buses = feeder_buses(s.feeder.name)
    phases = bus_phases(s.feeder.name, s.feeder.model == "per_phase")
    loads, pvs = available_profiles()
    for i, a in enumerate(s.agents):
        if a.bus not in buses:
            problems.append(
                f"agents[{i}].bus = {a.bus!r}: not a bus of feeder {s.feeder.name!r} "
                f"({', '.join(buses)})"
            )
        elif a.phases is not None and not set(a.phases) <= set(phases[a.bus]):
            problems.append(f"agents[{i}].phases = {a.phases!r}: bus {a.bus} has phases "
                            f"{phases[a.bus]!r}")
        if a.load_profile not in loads:
            problems.append(f"agents[{i}].load_profile = {a.load_profile!r}: unknown profile")
        if a.pv_profile is not None and a.pv_profile not in pvs:
            problems.append(f"agents[{i}].pv_profile = {a.pv_profile!r}: unknown profile")
    end = s.scenario.start + dt.timedelta(days=s.scenario.days)
    if s.scenario.start.year != PROFILE_YEAR or end > dt.date(PROFILE_YEAR + 1, 1, 1):
        problems.append(
            f"scenario.start = {s.scenario.start.isoformat()!r}: with days = "
            f"{s.scenario.days} it must lie within the profile year {PROFILE_YEAR}"
        )
    return problems + fault_name_problems(s)


def fault_name_problems(s: Scenario) -> list[str]:
    """Faults must name nodes of the deployment: a typo would otherwise inject nothing."""
    agents = [a.id for a in s.agents]
    known = f"agents {agents[0]}..{agents[-1]}" if agents else "no agents"
    problems = []
    for i, p in enumerate(s.deploy.partitions):
        for end in ("a", "b"):
            name = getattr(p, end)
            if name not in (*agents, "market", "grid"):
                problems.append(f"deploy.partitions[{i}].{end} = {name!r}: not a node "
                                f"({known}, market, grid)")
    problems += [f"deploy.kills[{i}].agent = {k.agent!r}: not an agent ({known})"
                 for i, k in enumerate(s.deploy.kills) if k.agent not in agents]
    problems += [f"comms.faults.outages[{i}].agent = {o.agent!r}: not an agent ({known})"
                 for i, o in enumerate(s.comms.faults.outages) if o.agent not in agents]
    return problems


def _placement_checks(s: Scenario) -> list[str]:
    loads, pvs = available_profiles()
    rule = s.placement
    problems = [f"placement.load_profiles[{i}] = {p!r}: unknown profile"
                for i, p in enumerate(rule.load_profiles) if p not in loads]
    problems += [f"placement.pv_profiles[{i}] = {p!r}: unknown profile"
                 for i, p in enumerate(rule.pv_profiles) if p not in pvs]
    return problems


WINDOWS = ("train", "validation", "test")
"""The windows a scenario uses: training days, the validation window (tuning, model
selection) and the test window ``[scenario]`` every report is measured on."""


def scenario_windows(s: Scenario) -> list[tuple[dt.date, int]]:
    """(first day, days) of every window, in ``WINDOWS`` order."""
    a = s.algo
    return [(a.train_start, a.train_days), (a.validation_start, a.validation_days),
            (s.scenario.start, s.scenario.days)]


def in_window(s: Scenario, window: str) -> Scenario:
    """The scenario with its ``[scenario]`` window replaced by one of ``WINDOWS``."""
    if window not in WINDOWS:
        raise ValueError(f"window = {window!r}: one of {', '.join(WINDOWS)}")
    start, days = scenario_windows(s)[WINDOWS.index(window)]
    meta = s.scenario.model_copy(update={"start": start, "days": days})
    return s.model_copy(update={"scenario": meta})


def parse_scenario(data: dict[str, Any], source: str) -> Scenario:
    """Validate a scenario already read into a dict (from TOML or elsewhere)."""
    typed = strict.field_problems(data, Scenario)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        named = {t.split(" = ")[0] for t in typed}
        rest = [p for p in pydantic_problems(err) if p.split(" = ")[0].split(":")[0] not in named]
        raise ScenarioError(source, typed + rest) from None
    if typed:
        raise ScenarioError(source, typed)
    if scenario.placement is not None:
        problems = _placement_checks(scenario)
        if problems:
            raise ScenarioError(source, problems)
        try:
            meta = scenario.scenario
            agents = place_agents(scenario.feeder.name, scenario.placement, meta.seed,
                                  scenario_windows(scenario), meta.step_min)
        except ValueError as err:
            raise ScenarioError(source, [f"placement.{err}"]) from None
        scenario = scenario.model_copy(update={"agents": agents})
    problems = _cross_checks(scenario)
    if problems:
        raise ScenarioError(source, problems)
    return scenario


def read_scenario_file(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    """(raw dict, file name) of a scenario file, with syntax errors named: TOML, or the
    JSON that ``peergrid scenario show --format json`` prints (a ``.json`` file)."""
    path = resolve(name_or_path)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(path.read_text(encoding="utf-8")), path.name
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ScenarioError(path.name, [f"JSON syntax: {err}"]) from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f), path.name
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ScenarioError(path.name, [f"TOML syntax: {err}"]) from None


def to_file_text(scenario: Scenario, fmt: str = "toml") -> str:
    """The scenario fully resolved (every default filled in, generated agents listed), as
    a file ``load_scenario`` reads back to the same scenario. Unset optional fields are
    left out (TOML has no null), and the placement rule too: its agents are listed."""
    data = scenario.model_dump(mode="json" if fmt == "json" else "python", exclude_none=True,
                               exclude={"placement"})
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt != "toml":
        raise ValueError(f"format = {fmt!r}: toml or json")
    import tomli_w

    return tomli_w.dumps(data)


def load_scenario(name_or_path: str | Path, days: int | None = None) -> Scenario:
    """Read, validate and (optionally) override the horizon of a scenario. Generated
    agents come from the file's own window, so ``days`` never changes who they are."""
    data, source = read_scenario_file(name_or_path)
    scenario = parse_scenario(data, source)
    if days is None:
        return scenario
    dumped = scenario.model_dump(mode="json")
    dumped["scenario"]["days"] = days
    dumped["placement"] = None  # the agents were generated from the file's window
    return parse_scenario(dumped, f"{source} with days = {days}")


def scenario_from_dump(data: dict[str, Any]) -> Scenario:
    """A scenario written by ``model_dump`` (a manifest, a deployment file)."""
    data = dict(data)
    if data.get("agents"):
        data["placement"] = None  # the agents were already generated from it
    return Scenario.model_validate(data)
