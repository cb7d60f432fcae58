"""Shared set-up of a node process: its scenario, links and log from ``deploy.json``."""

from __future__ import annotations

from pathlib import Path

from peergrid.comms.deployment import Deployment
from peergrid.comms.links import LinkModel, Partition
from peergrid.comms.node import Node, NodeLog


def open_node(dep: Deployment, name: str):
    """(scenario, node) for ``name`` of a deployment. The market beats to every node and
    every node to the market."""
    from peergrid.scenarios.loader import scenario_from_dump
    from peergrid.scenarios.seeding import stream

    scenario = scenario_from_dump(dep.scenario)
    d = scenario.deploy
    seed = scenario.scenario.seed
    links = LinkModel(
        name, lambda u, v: stream(seed, f"link:{u}->{v}"),
        latency_ms=d.latency_ms, jitter_ms=d.jitter_ms, drop=d.drop,
        partitions=[Partition(p.a, p.b, p.start_round, p.end_round) for p in d.partitions],
    )
    log = NodeLog(Path(dep.out) / "nodes" / f"{name}.jsonl")
    beat_to = (*dep.agents, "grid") if name == "market" else ("market",)
    node = Node(name, scenario.scenario.id, dep.endpoints, links, log, heartbeat_to=beat_to,
                heartbeat_s=d.heartbeat_ms / 1e3)
    return scenario, node
