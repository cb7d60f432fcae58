"""Consensus over a communication graph: neighbours average what they may share.

After Zhang et al. (ICML 2018), networked agents: each agent takes its local steps on
its own reward, then replaces the parameters it shares by the weighted average over
itself and its neighbours in the communication graph (doubly stochastic weights,
``agents.topology.metropolis_weights``). What is shared is a learner's
``consensus_parameters``: the critic and the team-reward estimator for the networked
actor-critic (``PPOGroup`` mode ``"networked"``, the paper's method), the critic alone
for the ``consensus-critic`` ablation. Rewards, actors and data never leave an agent.

``cooperative_update`` runs one update of a group of learners in process: every epoch
each learner takes its actor, critic (and estimator) minibatch steps, and every
``consensus_period`` epochs a consensus step averages what is shared. With
``weights=None`` there is no consensus step: independent learning.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Protocol

import numpy as np

from peergrid.agents.aggregation import Aggregation
from peergrid.agents.exchange import GroupExchange, StepLog, consensus_index, stale
from peergrid.agents.poisoning import Liar


class SharedHolder(Protocol):
    def consensus_parameters(self, agent: str) -> np.ndarray: ...
    def set_consensus_parameters(self, agent: str, vector: np.ndarray) -> None: ...


def consensus_step(holder: SharedHolder, order: Sequence[str], weights: np.ndarray,
                   aggregation: Aggregation | None = None, liar: Liar | None = None,
                   exchange: GroupExchange | None = None, step: int = 0) -> StepLog | None:
    """ω_i ← Σ_j c_ij ω_j for every agent at once (all read before any is written), or
    the robust ``aggregation`` of what each agent hears; with a ``liar``, its neighbours
    hear its forged vector (it keeps its own). With an ``exchange``, only what its fault
    schedule delivers at consensus step ``step`` is heard, as it decodes (the missing
    neighbours' weights go to the agent's own); returns what was sent and used."""
    rule = aggregation or Aggregation()
    stacked = getattr(holder, "average_shared", None)
    exact = exchange is None or exchange.exchange.codec.kind == "float32"
    if stacked is not None and rule.rule == "metropolis" and liar is None and exact:
        if exchange is None:
            stacked(order, weights)  # every agent in one stack: one product per tensor
            return None
        return _masked_step(holder, order, weights, exchange, step)
    values = {a: holder.consensus_parameters(a) for a in order}
    sent = dict(values)
    if liar is not None:
        sent[liar.agent] = liar.forge(values[liar.agent])
    log = None
    if exchange is None:
        heard = {a: sent for a in order}
    else:
        heard, log = exchange.step(step, values, sent)
    for i, a in enumerate(order):
        row = {b: weights[i, j] for j, b in enumerate(order) if weights[i, j] > 0}
        holder.set_consensus_parameters(a, rule.combine(a, {**heard[a], a: values[a]}, row))
    return log


def _masked_step(holder, order: Sequence[str], weights: np.ndarray, exchange: GroupExchange,
                 step: int) -> StepLog:
    """The stacked Metropolis step over what the schedule delivers: each agent's row
    keeps the weights of the neighbours heard and moves the rest to its own (as
    ``consensus_average`` does one agent at a time); a stale step averages the
    neighbours' snapshot from ``staleness`` steps ago with each agent's current own."""
    x, log = exchange.exchange, StepLog(step)
    idx = {a: i for i, a in enumerate(order)}
    heard = np.zeros(weights.shape, dtype=bool)
    for a in order:
        to = x.recipients(a, exchange.neighbours[a], step)
        if to:
            log.sent[a] = (None, to)
        for b in to:
            if x.arrives(a, b, step):
                heard[idx[b], idx[a]] = True
                log.used.add((a, b))
    w = weights / weights.sum(axis=1, keepdims=True)
    off = np.where(heard, w, 0.0)
    np.fill_diagonal(off, 0.0)
    effective = off + np.diag(1.0 - off.sum(axis=1))
    lag = x.faults.staleness
    if lag == 0:
        holder.average_shared(order, effective)
        return log
    exchange.stacked_history, old = stale(exchange.stacked_history, holder.shared_snapshot(),
                                          step, lag)
    if old is None:  # nobody has a vector that old (a sender would send nothing)
        log.sent.clear()
        log.used.clear()
        return log
    holder.average_shared(order, effective, sent=old)
    return log


def consensus_due(epochs_before: int, epoch: int, period: int) -> bool:
    """Whether a consensus step follows ``epoch`` of an update that starts after
    ``epochs_before`` epochs of earlier updates: the period counts epochs over the whole
    run, so a period longer than one update's epochs still averages (every few updates)."""
    return (epochs_before + epoch + 1) % period == 0


def update_steps(learner, epochs: int, consensus_period: int | None = 1,
                 epochs_before: int = 0) -> Generator[int, None, dict[str, float]]:
    """One PPO update, the loop both runtimes run: yields each epoch after which a
    consensus step is due (the caller performs it before resuming: in process
    ``consensus_step`` over a group, deployed an exchange with the neighbours over the
    network); returns the mean losses. ``learner`` is one agent's learner or a group;
    ``consensus_period`` None: independent learning (no consensus step)."""
    learner.begin_update()
    totals: dict[str, float] = {}
    for e in range(epochs):
        for k, v in (learner.update_epoch() or {}).items():
            totals[k] = totals.get(k, 0.0) + v
        if consensus_period is not None and consensus_due(epochs_before, e, consensus_period):
            yield e
    learner.end_update()
    return {k: v / max(epochs, 1) for k, v in totals.items() if k != "actor_loss"}


def cooperative_update(group, epochs: int, weights: np.ndarray | None = None,
                       consensus_period: int = 1, epochs_before: int = 0,
                       aggregation: Aggregation | None = None,
                       liar: Liar | None = None, exchange: GroupExchange | None = None,
                       on_step: Callable[[int, int, StepLog], None] | None = None
                       ) -> dict[str, float]:
    """One update of a group in process; consensus on what it shares when ``weights``
    (over the faults and encoding of ``exchange``; ``on_step(epoch, step, log)`` after
    each consensus step)."""
    steps = update_steps(group, epochs, None if weights is None else consensus_period,
                         epochs_before)
    while True:
        try:
            e = next(steps)
        except StopIteration as done:
            return done.value
        step = consensus_index(epochs_before + e + 1, consensus_period)
        log = consensus_step(group, group.ids, weights, aggregation, liar, exchange, step)
        if on_step is not None and log is not None:
            on_step(e, step, log)


def disagreement(vectors: Sequence[np.ndarray]) -> float:
    """Largest distance of any agent's parameters from their mean."""
    stack = np.stack(vectors)
    return float(np.max(np.linalg.norm(stack - stack.mean(axis=0), axis=1)))


def critic_disagreement(holder, order: Sequence[str]) -> float:
    return disagreement([holder.critic_parameters(a) for a in order])


def estimator_disagreement(holder, order: Sequence[str]) -> float:
    return disagreement([holder.estimator_parameters(a) for a in order])
