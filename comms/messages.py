"""Every message a deployment exchanges: one frozen dataclass per kind.

This module is the vocabulary; ``comms.wire`` derives its checks from the field types
declared here (``int``, ``float``, ``str``, ``bool``, ``dict[str, float]``,
``dict[str, str]``, ``np.ndarray``), so a field added here is checked on the wire with
no second list to keep in step. Floats must be finite unless named in ``nan_ok`` (a
grid-only settlement has no market totals; a failed power flow has no voltages).
Magnitudes a scenario allows are checked by the receiving node, which knows the scenario.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from peergrid.agents.exchange import Encoded

from peergrid.market.bid import Bid
from peergrid.market.operator import MarketResult
from peergrid.market.sdr import Tariff
from peergrid.market.settlement import Settlement


@dataclass(frozen=True)
class Message:
    kind: ClassVar[str] = ""
    control: ClassVar[bool] = False
    """Deployment tooling (hello, stop, crash, heartbeat), not the market's network: it
    bypasses the injected link faults."""
    nan_ok: ClassVar[frozenset[str]] = frozenset()
    repeatable: ClassVar[bool] = False
    """Sent again on purpose (a retry), and handled idempotently by the receiver: not
    dropped as a duplicate."""

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RoundStart(Message):
    """Market -> prosumer: act for global round ``k``; bids count until ``deadline_s``
    after this arrives (judged on the receiver's own monotonic clock)."""

    kind: ClassVar[str] = "round_start"
    repeatable: ClassVar[bool] = True
    k: int
    deadline_s: float
    incarnation: int
    """The receiver's incarnation as the market knows it: a start queued for a process
    that has since died and been restarted is recognised as stale by its successor."""


@dataclass(frozen=True)
class BidMessage(Message):
    """Prosumer -> market: its bid and metered position for round ``k``."""

    kind: ClassVar[str] = "bid"
    repeatable: ClassVar[bool] = True
    k: int
    bus: str
    bid_kwh: float
    surplus_kwh: float
    q_kvar: float
    volt_var_kva: float
    q_max_kvar: float

    @staticmethod
    def of(k: int, bid: Bid) -> BidMessage:
        return BidMessage(k, bid.bus, bid.bid_kwh, bid.surplus_kwh, bid.q_kvar,
                          bid.volt_var_kva, bid.q_max_kvar)

    def to_bid(self, agent: str, round_index: int) -> Bid:
        return Bid(agent, self.bus, round_index, self.bid_kwh, self.surplus_kwh, self.q_kvar,
                   self.volt_var_kva, self.q_max_kvar)


@dataclass(frozen=True)
class SettlementMessage(Message):
    """Market -> prosumer: its settlement of round ``k``, the round's tariff and the
    clearing's public totals (NaN where the round was not cleared)."""

    kind: ClassVar[str] = "settlement"
    repeatable: ClassVar[bool] = True
    nan_ok: ClassVar[frozenset[str]] = frozenset({"sdr", "tsp_kwh", "tbp_kwh",
                                                  "net_import_kwh"})
    k: int
    p2p_bought_kwh: float
    p2p_sold_kwh: float
    grid_import_kwh: float
    grid_export_kwh: float
    buy_price_per_kwh: float
    sell_price_per_kwh: float
    sdr: float
    payment: float
    grid_only_payment: float
    retail_price: float
    feed_in_price: float
    traded: bool
    """False: the agent's bid missed the clearing and it traded with the grid only."""
    tsp_kwh: float
    tbp_kwh: float
    net_import_kwh: float

    @staticmethod
    def of(k: int, s: Settlement, tariff: Tariff, traded: bool,
           market: MarketResult | None = None) -> SettlementMessage:
        c = market.clearing if market is not None else None
        nan = float("nan")
        return SettlementMessage(
            k=k, **asdict(s), retail_price=tariff.retail_price_per_kwh,
            feed_in_price=tariff.feed_in_price_per_kwh, traded=traded,
            tsp_kwh=c.tsp_kwh if c else nan, tbp_kwh=c.tbp_kwh if c else nan,
            net_import_kwh=market.net_import_kwh if market else nan)

    def settlement(self) -> Settlement:
        return Settlement(**{f: getattr(self, f) for f in Settlement.__dataclass_fields__})


@dataclass(frozen=True)
class Positions(Message):
    """Market -> grid: the metered positions of the agents whose bids were cleared."""

    kind: ClassVar[str] = "positions"
    repeatable: ClassVar[bool] = True
    k: int
    surplus_kwh: dict[str, float]
    q_kvar: dict[str, float]
    volt_var_kva: dict[str, float]
    q_max_kvar: dict[str, float]
    bus: dict[str, str]


@dataclass(frozen=True)
class VoltageReport(Message):
    """Grid -> prosumer: the power flow's outcome of round ``k`` as this agent needs it."""

    kind: ClassVar[str] = "grid_signal"
    repeatable: ClassVar[bool] = True
    nan_ok: ClassVar[frozenset[str]] = frozenset({"vm_pu", "max_line_loading_pct"})
    k: int
    vm_pu: dict[str, float]
    converged: bool
    voltage_penalty: dict[str, float]
    line_penalty: dict[str, float]
    volt_var_q_kvar: dict[str, float]
    max_line_loading_pct: float


@dataclass(frozen=True)
class RoundDone(Message):
    """Prosumer or grid -> market: round ``k`` is booked here."""

    kind: ClassVar[str] = "round_done"
    repeatable: ClassVar[bool] = True
    k: int


@dataclass(frozen=True)
class Resend(Message):
    """Prosumer -> market: my settlement of round ``k`` has not come (attempt n)."""

    kind: ClassVar[str] = "resend"
    repeatable: ClassVar[bool] = True
    k: int
    surplus_kwh: float
    attempt: int


@dataclass(frozen=True)
class Critic(Message):
    """Prosumer -> neighbour: what it shares for one consensus step; ``layout`` names
    the parameters' shapes, so a vector of another network is refused, not averaged."""

    kind: ClassVar[str] = "critic"
    update: int
    step: int
    layout: str
    params: np.ndarray
    """The vector as ``codec`` encodes it (agents.exchange)."""
    codec: str = "float32"
    scales: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    keyframe: int = -1

    @classmethod
    def of(cls, update: int, step: int, layout: str, e: Encoded) -> Critic:
        return cls(update, step, layout, e.values, e.codec, e.scales, e.index, e.keyframe)

    def encoded(self) -> Encoded:
        return Encoded(self.codec, self.params, self.scales, self.index, self.keyframe)


@dataclass(frozen=True)
class Hello(Message):
    """Any node -> market, at start: who I am, which incarnation (0 = first start)."""

    kind: ClassVar[str] = "hello"
    repeatable: ClassVar[bool] = True
    control: ClassVar[bool] = True
    pid: int
    incarnation: int
    next_k: int
    """The first global round this node has not booked yet."""


@dataclass(frozen=True)
class Heartbeat(Message):
    """Every node -> market, and market -> every node, periodically: alive, at round
    ``k``; ``wall_s`` is the sender's wall clock, to measure (not to judge) skew."""

    kind: ClassVar[str] = "heartbeat"
    repeatable: ClassVar[bool] = True
    control: ClassVar[bool] = True
    k: int
    wall_s: float


@dataclass(frozen=True)
class Stop(Message):
    kind: ClassVar[str] = "stop"
    repeatable: ClassVar[bool] = True
    control: ClassVar[bool] = True


@dataclass(frozen=True)
class Crash(Message):
    """Market -> prosumer: the injected crash of ``[[deploy.kills]]``."""

    kind: ClassVar[str] = "crash"
    repeatable: ClassVar[bool] = True
    control: ClassVar[bool] = True
    k: int


KINDS: dict[str, type[Message]] = {
    cls.kind: cls for cls in (RoundStart, BidMessage, SettlementMessage, Positions,
                              VoltageReport, RoundDone, Resend, Critic, Hello, Heartbeat, Stop,
                              Crash)
}


def layout_hash(shapes: list[tuple[str, tuple[int, ...]]]) -> str:
    """A short name for a parameter layout (names and shapes, in order)."""
    text = ";".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


MARKET, GRID, PROSUMER = "market", "grid", "prosumer"
_TO_MARKET = frozenset({MARKET})
ROUTES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    # kind: (roles that may send it, roles that may receive it)
    "round_start": (frozenset({MARKET}), frozenset({PROSUMER})),
    "bid": (frozenset({PROSUMER}), _TO_MARKET),
    "settlement": (frozenset({MARKET}), frozenset({PROSUMER})),
    "positions": (frozenset({MARKET}), frozenset({GRID})),
    "grid_signal": (frozenset({GRID}), frozenset({PROSUMER})),
    "round_done": (frozenset({PROSUMER, GRID}), _TO_MARKET),
    "resend": (frozenset({PROSUMER}), _TO_MARKET),
    "critic": (frozenset({PROSUMER}), frozenset({PROSUMER})),  # and graph neighbours only
    "hello": (frozenset({PROSUMER, GRID}), _TO_MARKET),
    "heartbeat": (frozenset({MARKET, GRID, PROSUMER}), frozenset({MARKET, GRID, PROSUMER})),
    "stop": (frozenset({MARKET}), frozenset({GRID, PROSUMER})),
    "crash": (frozenset({MARKET}), frozenset({PROSUMER})),
}
"""Who may send what to whom: a node refuses any other message, whatever it says."""


def role_of(name: str) -> str:
    return name if name in (MARKET, GRID) else PROSUMER


def route_problem(kind: str, sender: str, receiver: str,
                  neighbours: frozenset[str] = frozenset()) -> str | None:
    """Why ``sender`` may not send a ``kind`` message to ``receiver`` (None: it may).
    Heartbeats go between the market and every node; critics between graph neighbours."""
    senders, receivers = ROUTES[kind]
    s, r = role_of(sender), role_of(receiver)
    if s not in senders or r not in receivers:
        return f"role: a {s} may not send {kind} to a {r}"
    if kind == "heartbeat" and MARKET not in (s, r):
        return f"role: heartbeats go to and from the market, not {s} to {r}"
    if kind == "critic" and sender not in neighbours:
        return f"role: {sender} is not a graph neighbour of {receiver}"
    return None
assert set(ROUTES) == set(KINDS), "every kind needs its route"
