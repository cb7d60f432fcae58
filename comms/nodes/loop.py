"""The thin loop every node process runs: receive, hand to the protocol, do what it says.

Nothing a peer sends can raise out of this loop: the wire refuses what is malformed
(comms.node), the protocol objects judge the rest, and should one of them still raise on
a message, the loop logs the error and resumes from the last checkpoint (``serve``).
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time
import traceback
import zlib
from pathlib import Path
from collections.abc import Callable
from typing import Any

from peergrid.agents import statefile
from peergrid.comms.node import Node
from peergrid.comms.protocol.effects import Effects
from peergrid.comms.replica import Replica
from peergrid.comms.runlog import RunWriter


class Checkpoints:
    """A node's state and how far its rows had been written, saved after every bid and
    every booked round, so it has to be cheap: two files written in turn (``NAME.0``,
    ``NAME.1``), each a header (sequence number, length, CRC-32) and the state (a state
    file, ``agents.statefile``: no code runs when it is loaded),
    kept open and overwritten in place (no open, no rename per save: those cost more
    than the state itself). A save cut short by a crash leaves the other file intact,
    and ``load`` takes the newest file whose CRC holds. A killed process loses nothing
    written (the page cache survives it); a lost machine loses them, unless they are on
    a shared mount or a ``replica`` copies each save off the machine (comms.replica)."""

    _HEADER = struct.Struct("<QQI")

    def __init__(self, path: Path, writer: RunWriter, tables: list[str],
                 replica: Replica | None = None) -> None:
        self.path, self.writer, self.tables = path, writer, tables
        self.replica = replica
        """Copies each save to the run directory elsewhere (comms.replica), if any."""
        self._files: list[Any] = []
        self._seq = 0

    def _paths(self) -> list[Path]:
        return [self.path.with_name(f"{self.path.name}.{i}") for i in (0, 1)]

    @classmethod
    def read(cls, path: Path) -> dict[str, Any] | None:
        """The newest intact checkpoint at ``path`` ({state, offsets, seq}), or None."""
        best = None
        for p in (path.with_name(f"{path.name}.{i}") for i in (0, 1)):
            if not p.is_file():
                continue
            data = p.read_bytes()
            if len(data) < cls._HEADER.size:
                continue
            seq, n, crc = cls._HEADER.unpack_from(data)
            body = data[cls._HEADER.size:cls._HEADER.size + n]
            if len(body) != n or zlib.crc32(body) != crc:
                continue  # a save cut short: the other file holds the state before it
            if best is None or seq > best["seq"]:
                # a state file: loading it runs no code, whoever could write there
                best = {**statefile.loads(body, str(p)), "seq": seq}
        return best

    def load(self) -> Any:
        """The saved state (rows written after it are cut off), or None."""
        saved = self.read(self.path)
        if saved is None:
            return None
        self._seq = saved["seq"]
        self.writer.truncate(saved["offsets"])
        if self.replica is not None:
            self.replica.truncated(saved["offsets"])
        return saved["state"]

    def save(self, state: Any) -> None:
        if not self._files:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._files = [open(p, "r+b" if p.is_file() else "w+b")  # noqa: SIM115
                           for p in self._paths()]
        self._seq += 1
        body = statefile.dumps({"state": state, "offsets": self.writer.offsets(self.tables)})
        f = self._files[self._seq % 2]
        f.seek(0)
        f.write(self._HEADER.pack(self._seq, len(body), zlib.crc32(body)) + body)
        f.truncate()
        f.flush()
        if self.replica is not None:  # before the messages this save covers are sent
            self.replica.sync(self._paths()[self._seq % 2])

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []


def apply(fx: Effects, node: Node, writer: RunWriter, checkpoints: Checkpoints | None,
          global_round: int | None = None) -> None:
    """Rows and log lines first, then the checkpoint, then the messages: what a message
    announces is on disk before anyone can act on it. ``global_round``: the round the protocol is in
    now (the link faults scheduled by round follow it)."""
    if global_round is not None:
        node.global_round = global_round
    for table, row in fx.rows:
        if table == "ledger":
            (writer.run_dir / "ledger.json").write_text(json.dumps(row, default=float))
        else:
            writer.write_row(table, row)
    for event, fields in fx.events:
        if event in ("round", "consensus"):  # what the links carried so far (bytes too)
            fields = {**fields, "links": node.link_counters()}
        node.events.event(node.global_round, event, fields)
    if fx.checkpoint is not None and checkpoints is not None:
        checkpoints.save(fx.checkpoint)  # copied off the machine with the lines above
    for s in fx.sends:
        node.send(s.to, s.msg, s.episode, s.round)
    if fx.die:  # the injected crash: no clean-up at all
        os.kill(os.getpid(), signal.SIGKILL)


def serve(node: Node, make: Callable[[Any, int], Any], writer: RunWriter,
          checkpoints: Checkpoints, incarnation: int = 0, state: Any = None) -> None:
    """Run the protocol object ``make(state, incarnation)`` builds until it has
    finished; then log the node's counters and close.

    Should the protocol raise on a message (a bug: the wire and the protocol judge every
    message), the node recovers as if restarted, in process: the error is logged, what
    that message had half done is dropped, the last checkpoint is loaded (rows after it
    cut) and a new incarnation resumes from it, telling the market so."""
    errors = 0
    proto = make(state, incarnation)
    apply(proto.start(time.monotonic()), node, writer, checkpoints, proto.current_round)
    while not proto.finished:
        wait = min(max(proto.next_due() - time.monotonic(), 0.0), 1.0)
        for h, msg in node.receive(wait):
            try:
                fx = proto.on_message(time.monotonic(), h.sender, h.episode, h.round, msg)
            except Exception as err:
                errors += 1
                node.log.event("handler_error", peer=h.sender, kind=msg.kind,
                               error=f"{type(err).__name__}: {err}",
                               where=traceback.format_exc(limit=-2)[-600:])
                incarnation += 1
                proto = make(checkpoints.load(), incarnation)
                fx = proto.start(time.monotonic())
            apply(fx, node, writer, checkpoints, proto.current_round)
            if proto.finished:
                break
        if not proto.finished:
            apply(proto.on_tick(time.monotonic()), node, writer, checkpoints,
                  proto.current_round)
    node.log.event("exit", reason=getattr(proto, "exit_reason", "") or "finished",
                   handler_errors=errors, heartbeats=dict(node.heartbeats),
                   clock_skew_s={p: round(v, 4) for p, v in node.skew_s.items()})
    node.log.event("links", counters=node.link_counters())
    checkpoints.close()
    writer.close()
    node.close()
