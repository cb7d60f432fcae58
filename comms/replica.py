"""A node's files copied to the run directory on another machine before it sends.

A deployment on Ray whose run directory is not on a file system every Ray node sees
(no shared mount) still gathers everything into the driver's run directory: each actor
that cannot see it writes its files into a directory of its own machine and a
``Replica`` copies them to the driver's store (comms.runstore: a ZeroMQ server in the
driver, which writes the run directory) at every checkpoint, before the messages that
checkpoint covers are sent (``comms.nodes.loop.apply``: rows, checkpoint, then sends). So the run
directory holds every node's records and newest checkpoint exactly as its own disk
would, and a node restarted on another machine after its machine is lost resumes from
them with the local semantics (every round booked once, rows after the checkpoint
redone). What is lost with a machine is only what was never covered by a checkpoint:
the node log's lines since its last one.

Three kinds of copy:
- ``at``: a record file from an offset (the store cuts its copy there first, so rows a
  restart cut back are cut in the copy too);
- ``whole``: a small file replaced whole (the checkpoint just saved, the market's ledger);
- ``log``: a node log's lines from an offset of the machine's copy, appended (every
  incarnation's, in order; the store skips what it already has of that copy, so a
  copy sent twice is written once, and a new incarnation on the same machine sends
  what its predecessor had not).

This module moves no bytes itself: ``push`` does (comms.runstore.StoreClient).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

Item = tuple[str, str, int, bytes]
"""(kind, path relative to the run directory, offset (``at``: in the record file;
``log``: in the machine's copy of the node log; ``whole``: 0), bytes)."""
LEDGER = "ledger.json"


def _read(path: Path, start: int, whole_lines: bool = False) -> bytes:
    if not path.is_file():
        return b""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    if whole_lines:  # a line being written is copied once it is whole
        data = data[:data.rfind(b"\n") + 1]
    return data


class Replica:
    """The copying side, in the node's process: ``sync`` after every checkpoint save
    (blocking: it returns once the store has written), ``truncated`` when a restart cuts
    the record files back."""

    def __init__(self, local: Path, name: str, tables: Iterable[str],
                 push: Callable[[list[Item]], object], ledger: bool = False,
                 log_from: int = 0) -> None:
        self.local, self.push = local, push
        self.tables = list(tables)
        self.log_rel = f"nodes/{name}.jsonl"
        self.ledger = ledger
        # what the store already holds: the files were seeded from it
        self._sent = {rel: self._size(rel) for rel in self.tables}
        self._log_sent = log_from  # what the store has of this machine's node log
        self._ledger_sent: bytes | None = (local / LEDGER).read_bytes() \
            if ledger and (local / LEDGER).is_file() else None
        self._cut: set[str] = set()

    def _size(self, rel: str) -> int:
        p = self.local / rel
        return p.stat().st_size if p.is_file() else 0

    def truncated(self, offsets: Mapping[str, int]) -> None:
        """The record files were cut back to ``offsets`` (a checkpoint loaded)."""
        for rel, n in offsets.items():
            if rel in self._sent and n < self._sent[rel]:
                self._sent[rel] = n
                self._cut.add(rel)

    def items(self, checkpoint: Path | None = None) -> list[Item]:
        """What the store lacks: rows since the last copy, the checkpoint just saved,
        a changed ledger, the node log's new lines."""
        out: list[Item] = []
        for rel in self.tables:
            start = self._sent[rel]
            data = _read(self.local / rel, start)
            if data or rel in self._cut:
                out.append(("at", rel, start, data))
        if checkpoint is not None:
            out.append(("whole", checkpoint.relative_to(self.local).as_posix(), 0,
                        checkpoint.read_bytes()))
        if self.ledger and (self.local / LEDGER).is_file():
            ledger = (self.local / LEDGER).read_bytes()
            if ledger != self._ledger_sent:
                out.append(("whole", LEDGER, 0, ledger))
        log = _read(self.local / self.log_rel, self._log_sent, whole_lines=True)
        if log:
            out.append(("log", self.log_rel, self._log_sent, log))
        return out

    def sync(self, checkpoint: Path | None = None) -> None:
        """Copy what is new to the store; returns once it is written there."""
        items = self.items(checkpoint)
        if not items:
            return
        self.push(items)
        for kind, rel, start, data in items:
            if kind == "at":
                self._sent[rel] = start + len(data)
                self._cut.discard(rel)
            elif kind == "log":
                self._log_sent += len(data)
            elif rel == LEDGER:
                self._ledger_sent = data


def seed_files(out: Path, role: str, name: str) -> dict[str, bytes]:
    """What a node reads from the run directory when it starts: its record file and
    checkpoints (to resume from), the market's ledger (a prosumer's ``finish`` run, the
    market's own), a trained prosumer's policy. Copied into its own directory."""
    rels = [*checkpoint_files(name), *node_tables(role, name)]
    if role in ("market", "prosumer"):
        rels.append(LEDGER)
    if role == "prosumer":
        rels.append(f"policies/{name}.state")
    return {rel: (out / rel).read_bytes() for rel in rels if (out / rel).is_file()}


def checkpoint_files(name: str) -> list[str]:
    """A node's two checkpoint files (``comms.nodes.loop.Checkpoints``)."""
    return [f"checkpoints/{name}.state.0", f"checkpoints/{name}.state.1"]


def node_tables(role: str, name: str) -> list[str]:
    """The record files a node writes (what its checkpoints count)."""
    return {"market": ["market.jsonl"], "grid": ["grid.jsonl"]}.get(
        role, [f"agents/{name}.jsonl"])
