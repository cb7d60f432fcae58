"""Repository-level promises: docs match the code, and the import rules hold."""

from __future__ import annotations

from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent


def test_scenario_reference_is_generated_from_the_current_schema():
    from peergrid.scenarios.definition.schemadoc import render

    committed = (ROOT / "docs" / "scenario.md").read_text()
    assert committed.strip() == render().strip(), "run: peergrid scenario doc > docs/scenario.md"


PACKAGES = ("agents", "market", "grid", "comms", "scenarios")
CORE = ("agents", "market", "grid")


def _imports() -> dict[str, set[str]]:
    """Every module of the tree -> the modules it imports (at any depth of its code)."""
    import ast

    found: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            module = "peergrid." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
            found[module] = names
    return found


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if parts[0] == "peergrid" and len(parts) > 1 else parts[0]


# imports that go up a layer, to be removed (never added to); none left: the nodes build
# their actors from the ready-made spec in deploy.json, never from the scenario
KNOWN_UPWARD: set[tuple[str, str]] = set()


def test_the_core_imports_neither_processes_nor_scenarios_and_market_grid_no_torch():
    problems = []
    for module, names in _imports().items():
        layer = _top(module)
        for name in names:
            if layer in CORE and (_top(name) in ("comms", "scenarios", "zmq", "msgpack")):
                problems.append(f"{module} imports {name}")
            if layer in ("market", "grid") and _top(name) in ("torch", "agents"):
                problems.append(f"{module} imports {name}")
    assert problems == []


def test_no_cycles_between_top_level_packages_beyond_the_known_upward_imports():
    import networkx as nx

    upward = set()
    g = nx.DiGraph()
    for module, names in _imports().items():
        for name in names:
            if _top(name) in PACKAGES and _top(name) != _top(module):
                if (module, name) in KNOWN_UPWARD:
                    upward.add((module, name))
                else:
                    g.add_edge(_top(module), _top(name))
    assert list(nx.simple_cycles(g)) == []
    assert upward == KNOWN_UPWARD, "an upward import is gone: remove it from KNOWN_UPWARD"
    # and the layer order holds: commands/runtime above comms above the core
    assert sorted(g.edges) == sorted(
        (a, b) for a, b in g.edges if PACKAGES.index(a) > PACKAGES.index(b)
        or (a in CORE and b in CORE)), sorted(g.edges)


def test_the_import_check_sees_imports_inside_functions():
    assert "peergrid.agents.learners.ppo" in _imports()["peergrid.comms.nodes.prosumer"]


def test_the_scenario_layers_import_downwards_only():
    """definition (what a scenario is) < runtime (how it runs in process) < commands."""
    order = ["definition", "runtime", "commands"]
    problems = []
    for module, names in _imports().items():
        parts = module.split(".")
        if parts[1] != "scenarios" or len(parts) < 4:
            continue
        mine = order.index(parts[2])
        for name in names:
            p = name.split(".")
            if p[:2] == ["peergrid", "scenarios"] and len(p) > 2 and p[2] in order \
                    and order.index(p[2]) > mine:
                problems.append(f"{module} imports {name}")
            if mine == 0 and p[:2] == ["peergrid", "comms"]:
                problems.append(f"{module} imports {name}")
    assert problems == []
    assert sorted(p.name for p in (ROOT / "scenarios").glob("*.py")) == ["__init__.py"]
