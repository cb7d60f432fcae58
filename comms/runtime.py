"""Shared set-up of a node process: its links and log from the deployment's spec."""

from __future__ import annotations

from pathlib import Path

from peergrid.agents.seeding import stream
from peergrid.comms.links import LinkModel, Partition
from peergrid.comms.node import Node, NodeLog
from peergrid.comms.spec import DeploySpec


def open_node(spec: DeploySpec, name: str) -> Node:
    """The socket shell of ``name``. The market beats to every node, every node to the
    market."""
    ln = spec.links
    links = LinkModel(
        name, lambda u, v: stream(ln.seed, f"link:{u}->{v}"),
        latency_ms=ln.latency_ms, jitter_ms=ln.jitter_ms, drop=ln.drop,
        partitions=[Partition(a, b, s, e) for a, b, s, e in ln.partitions],
    )
    log = NodeLog(Path(spec.out) / "nodes" / f"{name}.jsonl")
    beat_to = (*spec.agents, "grid") if name == "market" else ("market",)
    return Node(name, spec.scenario_id, spec.endpoints, links, log, heartbeat_to=beat_to,
                heartbeat_s=spec.timing.heartbeat_s)
