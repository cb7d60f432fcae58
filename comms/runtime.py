"""Shared set-up of a node process: its links and log from the deployment's spec."""

from __future__ import annotations

from pathlib import Path

from peergrid.agents.seeding import stream
from peergrid.comms.keys import NodeKeys, node_keys, secret_path
from peergrid.comms.links import LinkModel, Partition
from peergrid.comms.node import Node, NodeLog
from peergrid.comms.spec import DeploySpec


def open_node(spec: DeploySpec, name: str, key_file: str | None = None,
              keys: NodeKeys | None = None, node_type: type[Node] = Node) -> Node:
    """The socket shell of ``name``. The market beats to every node, every node to the
    market. Its secret key: ``keys`` (a pair made in this process: comms.raylaunch),
    else ``key_file``, else ``security.key_dir/NAME.key_secret``."""
    ln = spec.links
    links = LinkModel(
        name, lambda u, v: stream(ln.seed, f"link:{u}->{v}"),
        latency_ms=ln.latency_ms, jitter_ms=ln.jitter_ms, drop=ln.drop,
        partitions=[Partition(a, b, s, e) for a, b, s, e in ln.partitions],
    )
    if keys is None and spec.security is not None:
        sec = spec.security
        keys = node_keys(name, Path(key_file) if key_file else secret_path(
            Path(spec.out) / sec.key_dir, name), sec.public_keys, spec.endpoints)
    log = NodeLog(Path(spec.out) / "nodes" / f"{name}.jsonl")
    beat_to = (*spec.agents, "grid") if name == "market" else ("market",)
    node = spec.prosumers.get(name)
    neighbours = frozenset(node.learning.neighbours) if node and node.learning else frozenset()
    return node_type(name, spec.scenario_id, spec.endpoints, links, log, heartbeat_to=beat_to,
                heartbeat_s=spec.timing.heartbeat_s, keys=keys, neighbours=neighbours)
