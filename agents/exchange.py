"""The consensus exchange over an unreliable network: one fault schedule and one
encoding, the same in both runtimes.

At every consensus step ``t`` (counted over the whole run) each agent sends its shared
vector (``consensus_parameters``) to its graph neighbours, and each averages what
arrived. ``ExchangeFaults`` says what the network does to those messages, as a pure
function of the run's seed, the two agents' names and ``t``: every node of a deployment
computes it for its own links and the in-process trainer for all of them, with the same
draws, so both runtimes lose the same messages (tests/test_exchange_faults.py).

- ``loss``: each message is lost with this probability (one draw per link and step);
  it was sent (its bytes count) but never arrives.
- ``staleness``: the vector that arrives at step t is the one the sender had at step
  t - staleness (a delay of that many steps, as in asynchronous consensus); while the
  pipe fills (t < staleness) nothing arrives, and nothing is sent.
- ``partitions``: step windows in which every link between the two halves of the graph
  (``halves``, a Kernighan-Lin bisection) loses everything sent over it.
- ``outages``: an agent off the network for a step window: it sends nothing and hears
  nothing (it keeps learning on its own data, and keeps its own vector).
- ``edge_up``: a time-varying graph (Zhang et al.'s time-varying weight matrices): each
  edge is present at a step with this probability, drawn once per edge and step for
  both directions; an absent edge carries nothing either way (nothing is sent).

A neighbour whose vector did not arrive has its weight moved to the agent's own
(``agents.topology.consensus_average``): with an edge absent both ways the step's matrix
stays doubly stochastic; a one-way loss makes it only row-stochastic.

``Codec`` says how a vector travels: ``float32`` (exact), ``float16``, ``int8`` with
one scale per tensor, or ``topk``: a whole float32 vector (a keyframe) every
``keyframe_every`` steps and in between only the ``topk_fraction`` largest entries of its
difference from the last keyframe (positions and values). A receiver that missed the
keyframe cannot use the differences from it until the next one: they count as lost.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from peergrid.agents.seeding import stream
from peergrid.agents.statefile import state_class

CODECS = ("float32", "float16", "int8", "topk")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class StepWindow:
    """Consensus steps ``start_step`` to ``end_step``, both included."""

    start_step: int
    end_step: int

    def covers(self, step: int) -> bool:
        return self.start_step <= step <= self.end_step


@dataclass(frozen=True)
class Outage:
    agent: str
    start_step: int
    end_step: int


@dataclass(frozen=True)
class ExchangeFaults:
    loss: float = 0.0
    staleness: int = 0
    edge_up: float = 1.0
    partitions: tuple[StepWindow, ...] = ()
    outages: tuple[Outage, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss = {self.loss}: a probability in [0, 1]")
        if not 0.0 <= self.edge_up <= 1.0:
            raise ValueError(f"edge_up = {self.edge_up}: a probability in [0, 1]")
        if self.staleness < 0:
            raise ValueError(f"staleness = {self.staleness}: must be 0 or more steps")

    @property
    def active(self) -> bool:
        return bool(self.loss or self.staleness or self.edge_up < 1.0 or self.partitions
                    or self.outages)


@dataclass(frozen=True)
class Codec:
    kind: str = "float32"
    topk_fraction: float = 0.1
    keyframe_every: int = 10

    def __post_init__(self) -> None:
        if self.kind not in CODECS:
            raise ValueError(f"codec = {self.kind!r}: choose from {', '.join(CODECS)}")
        if not 0.0 < self.topk_fraction <= 1.0:
            raise ValueError(f"topk_fraction = {self.topk_fraction}: must be in (0, 1]")
        if self.keyframe_every < 1:
            raise ValueError(f"keyframe_every = {self.keyframe_every}: must be at least 1")


@dataclass(frozen=True)
class Exchange:
    """The exchange's settings, the same for every agent of a run."""

    faults: ExchangeFaults = field(default_factory=ExchangeFaults)
    codec: Codec = field(default_factory=Codec)
    seed: int = 0
    """The run's seed (the draws of ``loss`` and ``edge_up``)."""
    half: dict[str, int] = field(default_factory=dict)
    """Each agent's half of the graph (0 or 1) for ``partitions``."""

    @property
    def plain(self) -> bool:
        """No fault and exact vectors: Zhang et al.'s step."""
        return not self.faults.active and self.codec.kind == "float32"

    def down(self, agent: str, step: int) -> bool:
        return any(o.agent == agent and o.start_step <= step <= o.end_step
                   for o in self.faults.outages)

    def edge_present(self, a: str, b: str, step: int) -> bool:
        if self.faults.edge_up >= 1.0:
            return True
        u, v = sorted((a, b))
        return bool(_draw(self.seed, "consensus-edge", u, v, step) < self.faults.edge_up)

    def sends(self, sender: str, receiver: str, step: int) -> bool:
        """Whether ``sender`` sends its vector to ``receiver`` at ``step``."""
        return (step >= self.faults.staleness and not self.down(sender, step)
                and self.edge_present(sender, receiver, step))

    def arrives(self, sender: str, receiver: str, step: int) -> bool:
        """Whether what ``sender`` sends ``receiver`` at ``step`` arrives."""
        if not self.sends(sender, receiver, step) or self.down(receiver, step):
            return False
        if any(w.covers(step) for w in self.faults.partitions) and \
                self.half.get(sender, 0) != self.half.get(receiver, 0):
            return False
        return not (self.faults.loss and
                    _draw(self.seed, "consensus-loss", sender, receiver, step) < self.faults.loss)


def _draw(seed: int, name: str, a: str, b: str, step: int) -> float:
    """One uniform draw of (a, b, step): independent of every other link and step."""
    return float(stream(seed, name, zlib.crc32(a.encode()), zlib.crc32(b.encode()),
                        step).random())


def halves(graph: nx.Graph, order: Sequence[str], seed: int) -> dict[str, int]:
    """The graph split into two halves with few edges between them (Kernighan-Lin),
    each agent's half as 0 or 1 (the half holding ``order[0]`` is 0)."""
    if graph.number_of_nodes() < 2:
        return {a: 0 for a in order}
    a, _ = nx.algorithms.community.kernighan_lin_bisection(graph, seed=seed)
    first = 0 if order[0] in a else 1
    return {n: (0 if n in a else 1) ^ first for n in order}


def consensus_index(epochs_done: int, period: int) -> int:
    """The run-wide number of the consensus step after the ``epochs_done``-th epoch (a
    step follows every ``period``-th epoch)."""
    return epochs_done // period - 1


def segments_of(layout: Sequence[tuple[str, tuple[int, ...]]]) -> tuple[int, ...]:
    """Sizes of the tensors in a ``consensus_parameters`` vector: the parameters, then
    their two Adam moments (``int8`` scales each on its own)."""
    sizes = tuple(math.prod(shape) for name, shape in layout if name != "moments")
    return sizes * 3 if any(name == "moments" for name, _ in layout) else sizes


@dataclass(frozen=True)
class Encoded:
    """A vector as it travels (the fields of a ``critic`` message)."""

    codec: str
    values: np.ndarray
    scales: np.ndarray
    """int8: one float32 scale per tensor; else empty."""
    index: np.ndarray
    """topk: int32 positions of ``values`` in the difference; else empty."""
    keyframe: int
    """topk: the step of the keyframe this is (``index`` empty) or differs from; -1 else."""


_EMPTY_F = np.zeros(0, np.float32)
_EMPTY_I = np.zeros(0, np.int32)


@state_class
class Sender:
    """One agent's outgoing side: the vectors of the last ``staleness`` steps and, for
    ``topk``, the keyframe it last sent."""

    def __init__(self, exchange: Exchange, segments: Sequence[int]) -> None:
        self.exchange, self.segments = exchange, tuple(segments)
        self.history: list[np.ndarray] = []
        self.keyframe: tuple[int, np.ndarray] | None = None

    def message(self, vector: np.ndarray, step: int, sending: bool) -> Encoded | None:
        """Record ``vector`` (the agent's at ``step``) and, when ``sending`` to anyone,
        the encoding of what it sends at ``step`` (its vector ``staleness`` steps ago)."""
        lag = self.exchange.faults.staleness
        self.history.append(np.asarray(vector, np.float32))
        del self.history[:-(lag + 1)]
        if not sending or len(self.history) <= lag:
            return None
        return self._encode(self.history[0], step)

    def _encode(self, v: np.ndarray, step: int) -> Encoded:
        c = self.exchange.codec
        if c.kind == "float32":
            return Encoded("float32", v, _EMPTY_F, _EMPTY_I, -1)
        if c.kind == "float16":
            return Encoded("float16", np.clip(v, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16),
                           _EMPTY_F, _EMPTY_I, -1)
        if c.kind == "int8":
            if sum(self.segments) != v.size:
                raise ValueError(f"int8: a vector of {v.size} values for tensors of "
                                 f"{sum(self.segments)}")
            bounds = np.cumsum((0, *self.segments))[:-1]
            peak = np.maximum.reduceat(np.abs(v), bounds) if v.size else _EMPTY_F
            scales = (peak / 127.0).astype(np.float32)
            per_value = np.repeat(np.where(scales > 0, scales, 1.0).astype(np.float32),
                                  self.segments)
            q = np.clip(np.rint(v / per_value), -127, 127).astype(np.int8)
            return Encoded("int8", q, scales, _EMPTY_I, -1)
        if self.keyframe is None or step % c.keyframe_every == 0:
            self.keyframe = (step, v)
            return Encoded("topk", v, _EMPTY_F, _EMPTY_I, step)
        key_step, key = self.keyframe
        diff = v - key
        k = max(1, math.ceil(c.topk_fraction * v.size))
        index = np.sort(np.argpartition(np.abs(diff), -k)[-k:]).astype(np.int32)
        return Encoded("topk", diff[index], _EMPTY_F, index, key_step)


@state_class
class Receiver:
    """One agent's incoming side: the keyframe it last heard from each neighbour."""

    def __init__(self, segments: Sequence[int]) -> None:
        self.segments = tuple(segments)
        self.keyframes: dict[str, tuple[int, np.ndarray]] = {}

    def decode(self, sender: str, e: Encoded) -> np.ndarray | None:
        """The float32 vector ``e`` carries, or None when it cannot be rebuilt (a
        difference from a keyframe this agent never heard)."""
        if e.codec == "float32":
            return np.asarray(e.values, np.float32)
        if e.codec == "float16":
            return e.values.astype(np.float32)
        if e.codec == "int8":
            if e.scales.size != len(self.segments) or e.values.size != sum(self.segments):
                return None
            return e.values.astype(np.float32) * np.repeat(e.scales, self.segments)
        if e.index.size == 0:  # a keyframe
            v = np.asarray(e.values, np.float32)
            self.keyframes[sender] = (e.keyframe, v)
            return v
        held = self.keyframes.get(sender)
        if (held is None or held[0] != e.keyframe or e.index.size != e.values.size
                or e.index.min() < 0 or e.index.max() >= held[1].size):
            return None
        v = held[1].copy()
        v[e.index] += e.values
        return v


@dataclass
class StepLog:
    """What one consensus step did: who sent, and which (sender, receiver) messages
    arrived and were used."""

    step: int
    sent: dict[str, tuple[Encoded, tuple[str, ...]]] = field(default_factory=dict)
    used: set[tuple[str, str]] = field(default_factory=set)


class GroupExchange:
    """Every agent's sender and receiver in one process: the exchange a deployment's
    nodes run over the network, for the in-process trainer."""

    def __init__(self, exchange: Exchange, order: Sequence[str], weights: np.ndarray,
                 segments: Sequence[int]) -> None:
        self.exchange, self.order = exchange, list(order)
        self.neighbours = {a: [b for j, b in enumerate(order) if weights[i, j] > 0 and b != a]
                           for i, a in enumerate(order)}
        self.senders = {a: Sender(exchange, segments) for a in order}
        self.receivers = {a: Receiver(segments) for a in order}
        self.stacked_history: list = []
        """The stacked runtime's snapshots of every agent's shared tensors (staleness)."""

    def step(self, step: int, vectors: Mapping[str, np.ndarray],
             sent_vectors: Mapping[str, np.ndarray] | None = None
             ) -> tuple[dict[str, dict[str, np.ndarray]], StepLog]:
        """What each agent hears at ``step`` (neighbour -> decoded vector), given every
        agent's current vector (``sent_vectors``: what each puts on the wire instead,
        a liar's forgery)."""
        x, log = self.exchange, StepLog(step)
        sent_vectors = sent_vectors or vectors
        for a in self.order:
            to = tuple(b for b in self.neighbours[a] if x.sends(a, b, step))
            enc = self.senders[a].message(sent_vectors[a], step, bool(to))
            if enc is not None:
                log.sent[a] = (enc, to)
        heard: dict[str, dict[str, np.ndarray]] = {a: {} for a in self.order}
        for a, (enc, to) in log.sent.items():
            for b in to:
                if x.arrives(a, b, step):
                    v = self.receivers[b].decode(a, enc)
                    if v is not None:
                        heard[b][a] = v
                        log.used.add((a, b))
        return heard, log

    def state_dict(self) -> dict:
        return {"senders": {a: (s.history, s.keyframe) for a, s in self.senders.items()},
                "receivers": {a: r.keyframes for a, r in self.receivers.items()},
                "stacked_history": self.stacked_history}

    def load_state_dict(self, state: dict) -> None:
        for a, (history, keyframe) in state["senders"].items():
            self.senders[a].history, self.senders[a].keyframe = list(history), keyframe
        for a, keyframes in state["receivers"].items():
            self.receivers[a].keyframes = dict(keyframes)
        self.stacked_history = list(state["stacked_history"])
