"""What `peergrid deploy` hands every node, ready-made: ``deploy.json``.

A node process builds its protocol object from its part of this spec alone (its agent's
devices and profile window, the tariff, the learner settings and seed, its neighbours and
weights, its policy); it never loads or rebuilds a scenario. Plain dataclasses of the
core's own types, written and read as JSON with pydantic (``DeploySpec.write`` /
``read``); a file that does not fit is refused naming the field.

To spread the nodes over hosts, edit the endpoints (each node binds its own, so use the
host's address there) and start each node by hand with
``peergrid node ROLE --id NAME --config deploy.json [--key NAME.key_secret]``
(docs/deploy.md: keys for hand-started hosts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import TypeAdapter, ValidationError

from peergrid.agents.learners.config import ONLINE_ALGORITHMS, LearnerConfig, LearnerInit
from peergrid.agents.spaces import ACTION_DIM, OBS_DIM
from peergrid.agents.prosumer import ProsumerSpec, PublicSignals
from peergrid.comms.protocol.market import MarketTiming, Window
from peergrid.comms.protocol.prosumer import Learning, Market, ProsumerTiming
from peergrid.grid.build import FeederChoice
from peergrid.grid.penalty import PenaltyRule


@dataclass(frozen=True)
class WindowSpec:
    steps_per_day: int
    hours: list[int]
    """Hour of each global round, one day past the window (the state after the last
    round is observed too)."""
    hour_frac: list[float]
    times: list[str]
    """ISO time of each round of the window."""

    def window(self) -> Window:
        return Window(self.steps_per_day, self.hours, self.times)

    @property
    def n_rounds(self) -> int:
        return len(self.times)


@dataclass(frozen=True)
class Timing:
    bid_deadline_s: float
    signal_timeout_s: float
    consensus_timeout_s: float
    down_after_s: float
    idle_exit_s: float
    heartbeat_s: float
    restart_budget: int
    restart_backoff_s: float


@dataclass(frozen=True)
class LinkSpec:
    """The injected network faults (comms.links), drawn from ``seed``."""

    seed: int
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    drop: float = 0.0
    partitions: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(a, b, start_round, end_round): the link between a and b is cut."""


@dataclass(frozen=True)
class Security:
    """CURVE on every link (absent: plain TCP, ``--insecure``)."""

    public_keys: dict[str, str]
    """Every node's public key (z85): each node's allow-list."""
    key_dir: str
    """Where each node finds its ``NAME.key_secret`` (unless `peergrid node --key`)."""


@dataclass(frozen=True)
class Kill:
    agent: str
    at_round: int
    restart_round: int | None = None


@dataclass(frozen=True)
class MarketNode:
    retail: list[float]
    feed_in: list[float]
    max_kwh: dict[str, float]
    """The largest metered position each agent's devices allow in one round."""
    day_end_allowance_s: float
    """Extra wait at a day's end while learners update."""


@dataclass(frozen=True)
class GridNode:
    feeder: FeederChoice
    buses: dict[str, str]
    connections: dict[str, list[str]]
    dt_h: float
    rule: PenaltyRule


@dataclass(frozen=True)
class OnlineLearner:
    """A fresh learner of ``algo`` (or the base a trained one is loaded into)."""

    algo: str
    config: LearnerConfig
    seed: int
    reward_scale: float
    mode: str
    public_dim: int
    estimator_dim: int
    shared_seed: int

    def learner_init(self, agent_id: str) -> LearnerInit:
        """What the agent's ``PPOLearner`` is built with."""
        return LearnerInit(agent_id, OBS_DIM, ACTION_DIM, self.config, self.seed,
                           self.reward_scale, self.mode, self.public_dim, self.estimator_dim,
                           self.shared_seed)


@dataclass(frozen=True)
class Policy:
    kind: Literal["reference", "online", "trained"]
    name: str = ""
    """reference: the policy's name (agents.policies); online/trained: the algorithm."""
    file: str = ""
    """trained: this agent's policy, cut out of the run by `peergrid deploy`."""
    learn: bool = False
    """trained: keep learning online."""
    learner: OnlineLearner | None = None


@dataclass(frozen=True)
class ProsumerNode:
    spec: ProsumerSpec
    load_kw: list[float]
    pv_kw: list[float]
    dt_h: float
    initial_signals: PublicSignals
    slack_vm_pu: float
    market: Market
    policy: Policy
    learning: Learning | None = None


@dataclass(frozen=True)
class DeploySpec:
    scenario_id: str
    out: str
    days: int
    seed: int
    agents: list[str]
    endpoints: dict[str, str]
    window: WindowSpec
    timing: Timing
    links: LinkSpec
    kills: list[Kill]
    market: MarketNode
    grid: GridNode
    prosumers: dict[str, ProsumerNode]
    security: Security | None = None

    def write(self, path: Path) -> None:
        path.write_bytes(self.to_json())

    def to_json(self) -> bytes:
        """deploy.json's bytes (also what comms.raylaunch hands its actors)."""
        return _ADAPTER.dump_json(self, indent=1)

    @staticmethod
    def read(path: str | Path) -> DeploySpec:
        return DeploySpec.from_json(Path(path).read_bytes(), str(path))

    @staticmethod
    def from_json(data: bytes, where_from: str = "deploy.json") -> DeploySpec:
        try:
            return _ADAPTER.validate_json(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ValueError(f"{where_from}: {where}: {first['msg']} "
                             f"({err.error_count()} problem(s))") from None

    @property
    def learners(self) -> bool:
        return any(p.learning is not None for p in self.prosumers.values())

    def market_timing(self) -> MarketTiming:
        t = self.timing
        return MarketTiming(t.bid_deadline_s, t.signal_timeout_s, t.down_after_s,
                            self.market.day_end_allowance_s)

    def prosumer_timing(self) -> ProsumerTiming:
        t = self.timing
        return ProsumerTiming(t.signal_timeout_s, t.consensus_timeout_s, t.down_after_s,
                              t.idle_exit_s)


_ADAPTER = TypeAdapter(DeploySpec)

__all__ = ["DeploySpec", "ONLINE_ALGORITHMS"]
