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
  t - staleness, as a delay of that many steps would deliver it (asynchronous
  consensus); whether it arrives is judged at step t, like any message of step t (a
  stale read: an outage at t - staleness does not stop it). While the pipe fills
  (t < staleness) nothing is sent.
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

``Codec`` says how a vector travels: ``float32`` (exact), ``float16`` or ``int8``,
each with one float32 scale per tensor (its largest magnitude maps to 2^14 or 127: int8
rounds a tensor's small entries to zero, float16 keeps ~3 significant digits down to
1e-12 of the largest), or ``topk``: a whole float32 vector (a keyframe) every
``keyframe_every`` steps and in between only the ``topk_fraction`` largest entries of
its difference from the last keyframe (positions and values). A receiver that missed
the keyframe cannot use the differences from it until the next one: they count as lost.
Loss and edges are drawn independently per step (no bursts).
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from peergrid.agents.seeding import stream
from peergrid.agents.statefile import state_class

CODECS = ("float32", "float16", "int8", "topk")


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

    def covers(self, step: int) -> bool:
        return StepWindow(self.start_step, self.end_step).covers(step)


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

    def down(self, agent: str, step: int) -> bool:
        return any(o.agent == agent and o.covers(step) for o in self.faults.outages)

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

    def recipients(self, sender: str, neighbours: Sequence[str], step: int) -> tuple[str, ...]:
        """The neighbours ``sender`` sends to at ``step``."""
        return tuple(b for b in neighbours if self.sends(sender, b, step))

    def heard(self, receiver: str, neighbours: Sequence[str], step: int) -> list[str]:
        """The neighbours whose vectors of ``step`` reach ``receiver``."""
        return [b for b in neighbours if self.arrives(b, receiver, step)]


@functools.lru_cache(maxsize=4096)  # an edge is drawn by both ends' sends and arrives
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


def stale(history: list[tuple[int, Any]], value: Any, step: int, lag: int
          ) -> tuple[list[tuple[int, Any]], Any | None]:
    """``history`` (values labelled by step) with ``value`` of ``step`` added and what
    is too old for ``lag`` dropped, and the value of step - ``lag`` (None if there is
    none: the pipe is filling, or that step was not seen)."""
    kept = [(t, v) for t, v in history if t >= step - lag] + [(step, value)]
    return kept, next((v for t, v in kept if t == step - lag), None)


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

    @classmethod
    def exact(cls, values: np.ndarray) -> Encoded:
        return cls("float32", values, _EMPTY_F, _EMPTY_I, -1)


_EMPTY_F = np.zeros(0, np.float32)
_EMPTY_I = np.zeros(0, np.int32)
_RANGE = {"float16": 2.0**14, "int8": 127.0}
"""What a tensor's largest magnitude maps to: int8's largest level; for float16 a power
of two well inside its range, so that neither the largest entries overflow nor the
small ones (Adam's second moments, ~1e-8) underflow as they would unscaled."""
_DTYPE = {"float32": np.float32, "float16": np.float16, "int8": np.int8, "topk": np.float32}


def _per_value_scales(v: np.ndarray, segments: Sequence[int], top: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """One scale per tensor (its largest magnitude / ``top``), and that scale repeated
    over the tensor's values (1 where a tensor is all zeros)."""
    if sum(segments) != v.size:
        raise ValueError(f"a vector of {v.size} values for tensors of {sum(segments)}")
    bounds = np.cumsum((0, *segments))
    peaks = [float(np.abs(v[lo:hi]).max(initial=0.0)) for lo, hi in zip(bounds[:-1], bounds[1:])]
    scales = (np.asarray(peaks) / top).astype(np.float32)
    return scales, np.repeat(np.where(scales > 0, scales, 1.0).astype(np.float32), segments)


@state_class
class Sender:
    """One agent's outgoing side: its vectors of the last ``staleness`` steps (each with
    its step) and, for ``topk``, the keyframe it last sent."""

    def __init__(self, exchange: Exchange, segments: Sequence[int]) -> None:
        self.exchange, self.segments = exchange, tuple(segments)
        self.history: list[tuple[int, np.ndarray]] = []
        self.keyframe: tuple[int, np.ndarray] | None = None

    def message(self, vector: np.ndarray, step: int, sending: bool) -> Encoded | None:
        """Record ``vector`` (the agent's at ``step``) and, when ``sending`` to anyone,
        the encoding of what it sends at ``step``: its vector of step - staleness
        (nothing if it has none, as while the pipe fills)."""
        self.history, old = stale(self.history, np.array(vector, np.float32), step,
                                  self.exchange.faults.staleness)
        if not sending or old is None:
            return None
        return self._encode(old, step)

    def _encode(self, v: np.ndarray, step: int) -> Encoded:
        c = self.exchange.codec
        if c.kind == "float32":
            return Encoded.exact(v)
        if c.kind in _RANGE:
            scales, per_value = _per_value_scales(v, self.segments, _RANGE[c.kind])
            scaled = v / per_value
            if c.kind == "int8":
                return Encoded("int8", np.clip(np.rint(scaled), -127, 127).astype(np.int8),
                               scales, _EMPTY_I, -1)
            return Encoded("float16", scaled.astype(np.float16), scales, _EMPTY_I, -1)
        if self.keyframe is None or step % c.keyframe_every == 0:
            self.keyframe = (step, v)
            return Encoded("topk", v, _EMPTY_F, _EMPTY_I, step)
        key_step, key = self.keyframe
        diff = v - key
        k = max(1, math.ceil(c.topk_fraction * v.size))
        index = np.sort(np.argpartition(np.abs(diff), -k)[-k:]).astype(np.int32)
        return Encoded("topk", diff[index], _EMPTY_F, index, key_step)


class Undecodable(ValueError):
    """A vector that cannot be rebuilt (its reason): left out of the average."""


@state_class
class Receiver:
    """One agent's incoming side: what it accepts (its codec, the tensors' sizes) and
    the keyframe it last heard from each neighbour. Everything a neighbour sends is
    checked before use: a malformed vector is refused, never averaged or allowed to
    raise in the node."""

    def __init__(self, segments: Sequence[int], codec: Codec | None = None) -> None:
        self.segments = tuple(segments)
        self.size = sum(self.segments)
        self.codec = codec or Codec()
        self.keyframes: dict[str, tuple[int, np.ndarray]] = {}

    def decode(self, sender: str, e: Encoded) -> np.ndarray:
        """The float32 vector ``e`` carries; ``Undecodable`` with the reason if it does
        not fit, or is a difference from a keyframe this agent did not hear."""
        kind, n = self.codec.kind, self.size
        if e.codec != kind:
            raise Undecodable(f"codec {e.codec!r:.20}, expected {kind!r}")
        values = e.values
        if values.ndim != 1 or values.dtype != _DTYPE[kind]:
            raise Undecodable(f"values of shape {values.shape} and dtype {values.dtype}, "
                              f"expected one {np.dtype(_DTYPE[kind])} vector")
        if kind == "topk" and e.index.size:
            return self._difference(sender, e)
        if values.size != n:
            raise Undecodable(f"{values.size} values, expected {n}")
        if kind == "float32":
            return values.astype(np.float32, copy=True)
        if kind in _RANGE:
            scales = e.scales
            if (scales.shape != (len(self.segments),) or scales.dtype != np.float32
                    or (scales < 0).any()):
                raise Undecodable(f"scales of shape {scales.shape}, expected "
                                  f"{len(self.segments)} non-negative float32")
            with np.errstate(over="ignore"):
                return _finite(values.astype(np.float32) * np.repeat(scales, self.segments))
        if e.keyframe < 0:
            raise Undecodable(f"a keyframe of step {e.keyframe}")
        v = values.astype(np.float32, copy=True)
        self.keyframes[sender] = (e.keyframe, v)
        return v.copy()

    def _difference(self, sender: str, e: Encoded) -> np.ndarray:
        index, n = e.index, self.size
        if (index.ndim != 1 or index.dtype.kind != "i" or index.size != e.values.size
                or index.size > n):
            raise Undecodable(f"{index.size} positions of dtype {index.dtype} for "
                              f"{e.values.size} values")
        if index[0] < 0 or index[-1] >= n or (index.size > 1 and (np.diff(index) <= 0).any()):
            raise Undecodable(f"positions not increasing within 0..{n - 1}")
        held = self.keyframes.get(sender)
        if held is None or held[0] != e.keyframe:
            raise Undecodable(f"a difference from the keyframe of step {e.keyframe}, which "
                              "this agent did not hear")
        v = held[1].copy()
        with np.errstate(over="ignore"):
            v[index] += e.values
        return _finite(v)


def _finite(v: np.ndarray) -> np.ndarray:
    if not np.isfinite(v).all():
        raise Undecodable("values beyond float32 once decoded")
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
        self.receivers = {a: Receiver(segments, exchange.codec) for a in order}
        self.stacked_history: list[tuple[int, Any]] = []
        """The stacked runtime's snapshots of every agent's shared tensors, with their
        steps (staleness)."""

    def step(self, step: int, vectors: Mapping[str, np.ndarray],
             sent_vectors: Mapping[str, np.ndarray] | None = None
             ) -> tuple[dict[str, dict[str, np.ndarray]], StepLog]:
        """What each agent hears at ``step`` (neighbour -> decoded vector), given every
        agent's current vector (``sent_vectors``: what each puts on the wire instead,
        a liar's forgery)."""
        x, log = self.exchange, StepLog(step)
        sent_vectors = sent_vectors or vectors
        for a in self.order:
            to = x.recipients(a, self.neighbours[a], step)
            enc = self.senders[a].message(sent_vectors[a], step, bool(to))
            if enc is not None:
                log.sent[a] = (enc, to)
        heard: dict[str, dict[str, np.ndarray]] = {a: {} for a in self.order}
        for a, (enc, to) in log.sent.items():
            for b in to:
                if x.arrives(a, b, step):
                    try:
                        heard[b][a] = self.receivers[b].decode(a, enc)
                    except Undecodable:  # a top-k difference from a keyframe lost
                        continue
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
