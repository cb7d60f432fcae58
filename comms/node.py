"""The thin shell around an actor: sockets, the wire format, faults and a node log.

Socket pattern: every node binds one ROUTER socket (its inbox) and reaches each peer
through a DEALER connected to the peer's ROUTER, with its own name as routing id. So
every message is point to point (market ↔ prosumers, market → grid, grid → prosumers
and market, prosumer → neighbour prosumers) and every directed link has its own fault
model and its own counters; a broadcast is a loop over receivers, which at 13-64 nodes
costs nothing next to a round. Endpoints are ``tcp://host:port``, so the same processes
run on one machine or many.

Links are authenticated and encrypted with CURVE (``keys`` given): the inbox is a CURVE
server whose ZAP handler accepts a connection only from a public key of this deployment
(``deploy.json``'s allow-list) and names it by that key (ZeroMQ's ``User-Id``, set once
per connection: the key's node and the key itself), so the sender of a message is the
node whose key opened the connection, never a field it writes, and only while that key
is still the node's: once ``set_peers`` gives a node a new key (a restart), a connection
its old key opened stays open (ZeroMQ cannot close one peer of a ROUTER) but every
message on it is refused (``revoked key``). A header naming anyone else is refused.
Without keys (``--insecure``) the sender is the routing id the peer chose itself: anyone
who reaches the port can speak for anyone, and the node says so in its log. Every
message carries the sender's sequence number (its start time and a count, assigned as it
goes onto the socket), judged per connection: an old or replayed one is refused. Under
CURVE a connection is a session only its key's owner can open, so a restarted node (a
new connection) starts a new sequence whatever its clock says; with ``--insecure`` the
routing id names the connection, and a restart must start later than the last message
(its start time). Who may send what to whom is ``comms.messages.ROUTES``.

Whatever arrives is decoded by ``comms.wire``. Refused (with a reason): garbage, a
message larger than ``MAX_MESSAGE_BYTES`` (ZeroMQ drops it at the socket, unread), a
foreign scenario, a sender that is not a node of this deployment or not the connection
it came on, a connection opened with a key its node no longer has (revoked), a message
its sender's role may not send, a failed handshake (no key, or a key not on the list).
Dropped as duplicates: a second copy of a message that must not be applied twice,
remembered per sender for the last ``DUPLICATE_WINDOW`` rounds only. Resources stay
bounded under any flood: counters are per known peer, the first few refusals of a round
are logged in full and the rest counted per reason, once per round.

Heartbeats: every node tells the market it is alive every ``heartbeat_s`` and the market
tells every node; ``silent_for(peer)`` is what liveness is judged on (the receiver's own
monotonic clock). A heartbeat also carries the sender's wall clock, so the skew between
hosts is measured and logged, never used.
"""

from __future__ import annotations

import json
import struct
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from peergrid.comms.keys import NodeKeys, user_id
from peergrid.comms.links import LinkModel, LinkStats, Outbox
from peergrid.comms.messages import Heartbeat, Message, route_problem
from peergrid.comms.wire import MAX_MESSAGE_BYTES, Header, WireError, decode, encode

DUPLICATE_WINDOW = 4
"""Rounds (global) for which a message key is remembered per sender."""
KEYS_PER_ROUND = 1024
"""Distinct keys remembered per sender and round; a sender that exceeds it (a handful is
normal) has the rest refused, so the window stays bounded whatever the headers say."""
LOGGED_REFUSALS_PER_ROUND = 5
_MAX_REASONS = 32
_SEQ = struct.Struct("<QQ")
"""A message's last frame: the sender's start time (ns) and its count of messages."""
ZAP_DOMAIN = "peergrid"
_HANDSHAKE_EVENTS = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake protocol: not CURVE, or not ours",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "key not on the allow-list: connection refused",
}


class _Authenticator(ThreadAuthenticator):
    """ZAP for one node: a connection is accepted only with a key of this deployment,
    and every message it carries names that key's node and the key (``keys.user_id``);
    ``Node`` accepts it while the key is still that node's."""

    def __init__(self, ctx: zmq.Context, keys: NodeKeys) -> None:
        super().__init__(ctx)
        self.keys = keys

    def curve_user_id(self, client_public_key: bytes) -> str:  # once per connection
        key = z85.encode(client_public_key)
        name = self.keys.name_of(key)
        return "" if name is None else user_id(name, key)

    def callback(self, domain: str, key: bytes) -> bool:  # the credentials provider
        return self.keys.name_of(key) is not None


class NodeLog:
    """One JSON line per event: what a node saw, sent, dropped and why."""

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


class Refusals:
    """Refused messages per reason per round: the first few in full, the rest counted."""

    def __init__(self, log: NodeLog) -> None:
        self.log = log
        self.round: int | None = None
        self.counts: Counter[str] = Counter()
        self.logged = 0
        self.total = 0

    def add(self, global_round: int, peer: str, reason: str, **detail: Any) -> None:
        if global_round != self.round:
            self.flush()
            self.round = global_round
        self.total += 1
        code = reason.split(" = ")[0].split(":")[0][:60]
        if code not in self.counts and len(self.counts) >= _MAX_REASONS:
            code = "other"
        self.counts[code] += 1
        if self.logged < LOGGED_REFUSALS_PER_ROUND:
            self.logged += 1
            self.log.event("rejected", peer=peer[:64], reason=reason[:300], **detail)

    def roll(self, global_round: int) -> None:
        """The node has moved on to ``global_round``: write the last round's counts."""
        if self.counts and global_round != self.round:
            self.flush()

    def flush(self) -> None:
        """One line with this round's counts per reason (all of them, logged or not)."""
        if self.counts:
            self.log.event("rejected_count", k=self.round, counts=dict(self.counts),
                           total=sum(self.counts.values()))
        self.counts, self.logged = Counter(), 0


class EventQuota:
    """Events a peer can cause at will (a late or unexpected message, a resend, a
    refused bid or critic): the first few of each kind per round in full, the rest
    counted in one ``suppressed_count`` line per round, so no peer can fill the disk."""

    NOISY = frozenset({"late", "unexpected", "resend", "resend_early", "rejected",
                       "rejected_critic", "bid_refused", "stale_round_start", "bid_again"})

    def __init__(self, log: NodeLog) -> None:
        self.log = log
        self.round: int | None = None
        self.counts: Counter[str] = Counter()

    def event(self, global_round: int, event: str, fields: dict[str, Any]) -> None:
        if event not in self.NOISY:
            self.log.event(event, **fields)
            return
        if global_round != self.round:
            self.flush()
            self.round = global_round
        self.counts[event] += 1
        if self.counts[event] <= LOGGED_REFUSALS_PER_ROUND:
            self.log.event(event, **fields)

    def flush(self) -> None:
        over = {e: n - LOGGED_REFUSALS_PER_ROUND for e, n in self.counts.items()
                if n > LOGGED_REFUSALS_PER_ROUND}
        if over:
            self.log.event("suppressed_count", k=self.round, counts=over)
        self.counts = Counter()


class DuplicateWindow:
    """Keys of the last ``DUPLICATE_WINDOW`` global rounds, per sender."""

    def __init__(self) -> None:
        self._keys: dict[str, deque[tuple[int, set]]] = {}

    def seen(self, sender: str, global_round: int, key: tuple) -> bool:
        """True for a duplicate, and for anything past ``KEYS_PER_ROUND`` in a round."""
        rounds = self._keys.setdefault(sender, deque())
        while rounds and rounds[0][0] < global_round - DUPLICATE_WINDOW:
            rounds.popleft()
        for _, keys in rounds:
            if key in keys:
                return True
        if not rounds or rounds[-1][0] != global_round:
            rounds.append((global_round, set()))
        if len(rounds[-1][1]) >= KEYS_PER_ROUND:
            return True
        rounds[-1][1].add(key)
        return False

    def size(self) -> int:
        return sum(len(k) for r in self._keys.values() for _, k in r)


class Node:
    def __init__(self, name: str, scenario_id: str, endpoints: Mapping[str, str],
                 links: LinkModel, log: NodeLog, heartbeat_to: tuple[str, ...] = (),
                 heartbeat_s: float = 0.5, keys: NodeKeys | None = None,
                 neighbours: frozenset[str] = frozenset()) -> None:
        self.name, self.scenario_id = name, scenario_id
        self.endpoints = dict(endpoints)
        self.keys, self.neighbours = keys, frozenset(neighbours)
        self.ctx = zmq.Context.instance()
        self.auth: _Authenticator | None = None
        self.inbox = self.ctx.socket(zmq.ROUTER)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        if keys is not None:
            self.auth = _Authenticator(self.ctx, keys)
            self.auth.start()
            self.auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self.auth)
            self.inbox.curve_secretkey, self.inbox.curve_publickey = keys.secret, keys.public
            self.inbox.curve_server = True
            self.inbox.zap_domain = ZAP_DOMAIN.encode()
        self.monitor = self.inbox.get_monitor_socket(sum(_HANDSHAKE_EVENTS))
        try:
            self.inbox.bind(self.endpoints[name])
        except zmq.ZMQError:
            self.monitor.close(0)
            self.inbox.close(0)
            if self.auth is not None:
                self.auth.stop()
            raise
        self._peers: dict[str, zmq.Socket] = {}
        self.outbox = Outbox(links)
        self.log = log
        if keys is None:
            log.event("insecure", warning="links are plain TCP: no authentication, no "
                      "encryption; anyone who reaches this port can speak for any node "
                      "(--insecure)")
        else:
            log.event("secure", mechanism="CURVE", allowed=len(keys.peers))
        self.refusals = Refusals(log)
        self.events = EventQuota(log)
        self.duplicates = DuplicateWindow()
        self.boot_ns = time.time_ns()
        self._sent = 0
        self.last_seq: dict[tuple[str, bytes], tuple[int, int]] = {}
        """The last sequence number accepted per (sender, connection)."""
        self.global_round = 0
        self.heartbeat_to, self.heartbeat_s = tuple(heartbeat_to), heartbeat_s
        self._next_beat = 0.0
        self.started = time.monotonic()
        self.last_heard: dict[str, float] = {}
        self.skew_s: dict[str, float] = {}
        """Peer's wall clock minus ours, the largest over its heartbeats (a lower bound:
        what remains of the one-way delay is in it)."""
        self.heartbeats: Counter[str] = Counter()

    def _peer(self, name: str) -> zmq.Socket:
        sock = self._peers.get(name)
        if sock is None:
            sock = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            if self.keys is None:  # the receiver's only clue to who sent it
                sock.setsockopt_string(zmq.ROUTING_ID, self.name)
            else:  # who sent it is the key: the routing id stays ZeroMQ's own
                sock.curve_secretkey, sock.curve_publickey = self.keys.secret, self.keys.public
                sock.curve_serverkey = self.keys.peers[name]
            sock.setsockopt(zmq.SNDHWM, 10_000)
            sock.connect(self.endpoints[name])
            self._peers[name] = sock
        return sock

    def send(self, receiver: str, msg: Message, episode: int = -1, rnd: int = -1) -> bool:
        """Send through the link's fault model (control messages, the deployment's own
        tooling, bypass it); False when the link lost it."""
        data = encode(Header(self.scenario_id, episode, rnd, self.name, msg.kind), msg)
        if msg.control:
            return self._send_now(self._peer(receiver), data)
        # the socket is looked up when the message goes out (after any injected delay):
        # the peer may have moved in the meantime (set_peers)
        return self.outbox.send(receiver, data, self.global_round,
                                lambda d: self._send_now(self._peer(receiver), d))

    def _send_now(self, sock: zmq.Socket, data: bytes) -> bool:
        """Onto the socket, numbered now (after any injected delay, so numbers go out
        in order); False when a dead peer's queue is full: lost, as on a network."""
        self._sent += 1
        try:
            sock.send_multipart([data, _SEQ.pack(self.boot_ns, self._sent)], zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def set_peers(self, endpoints: Mapping[str, str],
                  public_keys: Mapping[str, bytes] | None = None) -> None:
        """Peers now at these endpoints (with these keys, under CURVE): a peer restarted
        on another host (comms.raylaunch). The connection to a peer that moved is closed
        and the next message opens one to its new address; only the new key can accept
        it (it is the connection's server key) or speak for that peer (the allow-list):
        a connection its old key opened to this inbox before (its old incarnation, if
        still alive) stays open, as ZeroMQ cannot close one peer of a ROUTER, but from
        now on every message on it is refused (``revoked key``), unread ones included.
        No message kind moves a peer: this is called by whoever started the node, from
        the node's own thread (ZeroMQ sockets are not thread-safe)."""
        changed = []
        for name, endpoint in endpoints.items():
            key = None if public_keys is None or self.keys is None else public_keys[name]
            same_key = key is None or self.keys.peers.get(name) == key
            if self.endpoints.get(name) == endpoint and same_key:
                continue
            changed.append(name)
            self.endpoints[name] = endpoint
            if not same_key:
                self.keys = replace(self.keys, peers={**self.keys.peers, name: key})
            sock = self._peers.pop(name, None)
            if sock is not None:
                sock.close(0)  # what it still held was for the peer's dead process
        if self.auth is not None and self.keys is not None:
            self.auth.keys = self.keys  # one reference swap: the ZAP thread sees old or new
        if changed:
            self.log.event("peers", changed=changed,
                           allowed=len(self.keys.peers) if self.keys else None)

    def silent_for(self, peer: str) -> float:
        """Seconds since ``peer`` was last heard (since this node started if never)."""
        return time.monotonic() - self.last_heard.get(peer, self.started)

    def _beat(self) -> None:
        now = time.monotonic()
        if not self.heartbeat_to or now < self._next_beat:
            return
        self._next_beat = now + self.heartbeat_s
        beat = Heartbeat(self.global_round, time.time())
        for peer in self.heartbeat_to:
            self.send(peer, beat)

    def receive(self, timeout_s: float) -> list[tuple[Header, Message]]:
        """Messages accepted within ``timeout_s`` (sends due in the meantime go out)."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        accepted: list[tuple[Header, Message]] = []
        self.refusals.roll(self.global_round)
        while True:
            self._beat()
            wait = min(deadline - time.monotonic(), self.heartbeat_s if self.heartbeat_to
                       else float("inf"))
            due = self.outbox.flush()
            if due is not None:
                wait = min(wait, due)
            self._handshakes()
            if self.inbox.poll(max(int(wait * 1000), 0) if wait > 0 else 0):
                for _ in range(10_000):  # a flood cannot keep this loop from returning
                    try:
                        frames = self.inbox.recv_multipart(zmq.NOBLOCK, copy=False)
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

    def _stats(self, peer: str) -> LinkStats:
        return self.outbox.stats[peer if peer in self.endpoints else "(unknown)"]

    def _handshakes(self) -> None:
        """Connections refused before any message (no CURVE, or a key not listed)."""
        for _ in range(1000):  # bounded, like the inbox: a flood of handshakes waits
            if not self.monitor.poll(0):
                break
            event = recv_monitor_message(self.monitor)
            reason = _HANDSHAKE_EVENTS.get(event["event"])
            if reason is not None:
                self._stats("(handshake)").rejected += 1
                self.refusals.add(self.global_round, "(handshake)", reason,
                                  errno=event.get("value"))

    def _sender(self, frames: list[zmq.Frame]) -> tuple[str, str | None]:
        """Who sent it, and why not if its key was revoked: under CURVE the node whose
        key opened the connection, while that is still its key (the connection's
        ``User-Id`` is the node and the key, looked up in the allow-list as it is now);
        without keys the routing id the sender chose."""
        if self.keys is None:
            return frames[0].bytes.decode("utf-8", "replace"), None
        try:
            uid = frames[1].get("User-Id") if len(frames) > 1 else ""
        except zmq.ZMQError:  # no metadata: not from an authenticated connection
            return "", None
        name = self.keys.user_ids.get(uid)
        if name is not None:
            return name, None
        name, _, key = uid.rpartition(" ")  # a z85 key has no space
        if not key:
            return uid, None
        return name, (f"revoked key: {key[:8]}... is no longer {name}'s key (the connection "
                      "was opened before set_peers replaced it)")

    def _accept(self, frames: list[zmq.Frame]) -> tuple[Header, Message] | None:
        identity, revoked = self._sender(frames) if frames else ("?", None)
        st = self._stats(identity)
        k = self.global_round
        if len(frames) != 3:
            st.rejected += 1
            self.refusals.add(k, identity, f"frames: {len(frames) - 1}, expected 2")
            return None
        if revoked is not None:
            st.rejected += 1
            self.refusals.add(k, identity, revoked)
            return None
        if identity not in self.endpoints:
            st.rejected += 1
            self.refusals.add(k, identity, f"unknown peer: {identity!r} is not a node here")
            return None
        data, seq_frame = frames[1].bytes, frames[2].bytes
        try:
            header, msg = decode(data, self.scenario_id)
        except WireError as err:
            st.rejected += 1
            self.refusals.add(k, identity, str(err), bytes=len(data))
            return None
        if header.sender != identity:
            st.rejected += 1
            self.refusals.add(k, identity, f"spoofed sender: {header.sender!r} "
                              f"does not match the connection {identity!r}")
            return None
        problem = route_problem(header.kind, identity, self.name, self.neighbours)
        if problem is not None:
            st.rejected += 1
            self.refusals.add(k, identity, problem, kind=header.kind)
            return None
        # numbered last, and only what passed the rest moves the count on: a message
        # refused above cannot push a sender's numbers ahead of its real stream
        if len(seq_frame) != _SEQ.size:
            st.rejected += 1
            self.refusals.add(k, identity, "sequence: not a sequence number")
            return None
        seq = _SEQ.unpack(seq_frame)
        connection = (identity, frames[0].bytes)
        last = self.last_seq.get(connection)
        if last is not None and seq <= last:
            st.rejected += 1
            self.refusals.add(k, identity, f"replayed or old: sequence {seq} after {last}",
                              kind=header.kind)
            return None
        if last is None:  # a new connection of this sender: its old ones are gone
            for old in [c for c in self.last_seq if c[0] == identity]:
                del self.last_seq[old]
        self.last_seq[connection] = seq
        self.last_heard[identity] = time.monotonic()
        if isinstance(msg, Heartbeat):  # counted and measured here, judged by the protocol
            self.heartbeats[identity] += 1
            # the largest sample is the one least delayed in transit: the best estimate
            skew = msg.wall_s - time.time()
            self.skew_s[identity] = max(skew, self.skew_s.get(identity, skew))
            return header, msg
        if not msg.repeatable and self.duplicates.seen(identity, k, header.key):
            st.duplicates += 1
            self.refusals.add(k, identity, f"duplicate: {header.kind}",
                              episode=header.episode, round=header.round)
            return None
        st.received += 1
        st.received_bytes += len(data)
        return header, msg

    def link_counters(self) -> dict[str, dict[str, int]]:
        return {peer: {k: v for k, v in vars(s).items() if k != "latency_s"}
                for peer, s in self.outbox.stats.items()}

    def close(self) -> None:
        self.refusals.flush()
        self.events.flush()
        deadline = time.monotonic() + 2.0
        while self.outbox.flush() is not None and time.monotonic() < deadline:
            time.sleep(0.005)
        for sock in self._peers.values():
            sock.close(linger=2000)  # let queued messages (the final stop) go out
        self.inbox.disable_monitor()
        self.monitor.close(0)
        self.inbox.close(0)
        if self.auth is not None:
            self.auth.stop()
        # a multiprocessing child ends with os._exit, which would discard what is still
        # queued: terminating the context waits (up to the linger) until it is sent
        self.ctx.term()
        self.log.close()

