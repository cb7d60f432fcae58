"""What every node of one deployment needs to know: a JSON file the launcher writes.

``deploy.json`` holds the resolved scenario, the number of days, the seed, the policy
("rule", "nop2p", "selfconsume", "voltvar", a fresh online learner of
``ONLINE_ALGORITHMS``, or a
training run directory), whether a trained policy keeps learning, the output directory
and every node's endpoint. To spread nodes over hosts, edit the endpoints (each node
binds its own, so use the host's address there) and start each node by hand with
``peergrid node ROLE --id NAME --config deploy.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from peergrid.agents.learners.config import ONLINE_ALGORITHMS


@dataclass(frozen=True)
class Deployment:
    scenario: dict[str, Any]
    days: int
    seed: int
    policy: str
    learn: bool
    out: str
    endpoints: dict[str, str]
    agents: list[str]

    @staticmethod
    def endpoints_for(agents: list[str], host: str, base_port: int) -> dict[str, str]:
        ep = {"market": f"tcp://{host}:{base_port}", "grid": f"tcp://{host}:{base_port + 1}"}
        ep.update({a: f"tcp://{host}:{base_port + 10 + i}" for i, a in enumerate(agents)})
        return ep

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @staticmethod
    def read(path: str | Path) -> Deployment:
        return Deployment(**json.loads(Path(path).read_text()))

    @property
    def learners(self) -> bool:
        return self.policy in ONLINE_ALGORITHMS or self.learn
