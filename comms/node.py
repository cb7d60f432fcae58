"""The thin shell around an actor: sockets, the wire format, faults and a node log.

Socket pattern: every node binds one ROUTER socket (its inbox) and reaches each peer
through a DEALER connected to the peer's ROUTER, with its own name as routing id. So
every message is point to point (market ↔ prosumers, market → grid, grid → prosumers
and market, prosumer → neighbour prosumers) and every directed link has its own fault
model and its own counters; a broadcast is a loop over receivers, which at 13-64 nodes
costs nothing next to a round. Endpoints are ``tcp://host:port``, so the same processes
run on one machine or many.

Whatever arrives is decoded by ``comms.wire``; garbage, foreign scenarios, spoofed
senders and duplicates (same kind, episode, round, sender) are logged with the reason
and counted, and the node carries on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import zmq

from peergrid.comms.links import LinkModel, Outbox
from peergrid.comms.wire import Header, WireError, decode, encode


class NodeLog:
    """One JSON line per event, flushed: what a node saw, sent, dropped and why."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._t0 = time.monotonic()

    def event(self, event: str, **fields: Any) -> None:
        row = {"t_s": round(time.monotonic() - self._t0, 6), "event": event, **fields}
        self._f.write(json.dumps(row, default=float) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class Node:
    def __init__(self, name: str, scenario_id: str, endpoints: Mapping[str, str],
                 links: LinkModel, log: NodeLog) -> None:
        self.name, self.scenario_id = name, scenario_id
        self.endpoints = dict(endpoints)
        self.ctx = zmq.Context.instance()
        self.inbox = self.ctx.socket(zmq.ROUTER)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.bind(self.endpoints[name])
        self._peers: dict[str, zmq.Socket] = {}
        self.outbox = Outbox(links)
        self.log = log
        self.seen: set[tuple[str, int, int, str]] = set()
        self.global_round = 0

    def _peer(self, name: str) -> zmq.Socket:
        sock = self._peers.get(name)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt_string(zmq.ROUTING_ID, self.name)
            sock.setsockopt(zmq.SNDHWM, 10_000)
            sock.connect(self.endpoints[name])
            self._peers[name] = sock
        return sock

    def send(self, receiver: str, kind: str, episode: int, rnd: int, body: dict[str, Any],
             control: bool = False) -> bool:
        """Send through the link's fault model; ``control`` messages (hello, stop, crash:
        the deployment tooling, not the market's network) bypass it."""
        data = encode(Header(self.scenario_id, episode, rnd, self.name, kind), body)
        sock = self._peer(receiver)
        if control:
            sock.send(data)
            return True
        return self.outbox.send(receiver, data, self.global_round,
                                lambda d: sock.send(d, zmq.NOBLOCK))

    def receive(self, timeout_s: float) -> list[tuple[Header, dict[str, Any]]]:
        """Messages accepted within ``timeout_s`` (sends due in the meantime go out)."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        accepted: list[tuple[Header, dict[str, Any]]] = []
        while True:
            wait = deadline - time.monotonic()
            due = self.outbox.flush()
            if due is not None:
                wait = min(wait, due)
            if self.inbox.poll(max(int(wait * 1000), 0) if wait > 0 else 0):
                while True:
                    try:
                        frames = self.inbox.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = self._accept(frames)
                    if msg is not None:
                        accepted.append(msg)
                if accepted:
                    self.outbox.flush()
                    return accepted
            if time.monotonic() >= deadline:
                return accepted

    def _accept(self, frames: list[bytes]) -> tuple[Header, dict[str, Any]] | None:
        identity = frames[0].decode("utf-8", "replace") if frames else "?"
        st = self.outbox.stats[identity]
        if len(frames) != 2:
            st.rejected += 1
            self.log.event("rejected", peer=identity, reason=f"{len(frames) - 1} frames, expected 1")
            return None
        try:
            header, body = decode(frames[1], self.scenario_id)
        except WireError as err:
            st.rejected += 1
            self.log.event("rejected", peer=identity, reason=str(err), bytes=len(frames[1]))
            return None
        if header.sender != identity:
            st.rejected += 1
            self.log.event("rejected", peer=identity, reason=f"sender {header.sender!r} "
                           f"does not match the connection {identity!r}")
            return None
        if header.kind == "resend":  # an idempotent request: may come several times
            st.received += 1
            return header, body
        if header.key in self.seen:
            st.duplicates += 1
            self.log.event("duplicate", peer=identity, kind=header.kind, episode=header.episode,
                           round=header.round)
            return None
        self.seen.add(header.key)
        st.received += 1
        st.received_bytes += len(frames[1])
        return header, body

    def link_counters(self) -> dict[str, dict[str, int]]:
        return {peer: {k: v for k, v in vars(s).items() if k != "latency_s"}
                for peer, s in self.outbox.stats.items()}

    def close(self) -> None:
        deadline = time.monotonic() + 2.0
        while self.outbox.flush() is not None and time.monotonic() < deadline:
            time.sleep(0.005)
        for sock in self._peers.values():
            sock.close(linger=2000)  # let queued messages (the final stop) go out
        self.inbox.close(0)
        # a multiprocessing child ends with os._exit, which would discard what is still
        # queued: terminating the context waits (up to the linger) until it is sent
        self.ctx.term()
        self.log.close()
