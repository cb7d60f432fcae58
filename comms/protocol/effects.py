"""What a protocol object asks its node to do: the only way it touches the world."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peergrid.comms.messages import Message


@dataclass(frozen=True)
class Send:
    to: str
    msg: Message
    episode: int = -1
    round: int = -1


@dataclass
class Effects:
    sends: list[Send] = field(default_factory=list)
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(file of the run directory, row): market.jsonl, grid.jsonl, agents/<id>.jsonl."""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """Node-log events (nodes/<name>.jsonl)."""
    checkpoint: Any = None
    """State to save (the latest wins); the node writes it after the rows."""
    die: bool = False
    """The injected crash: the node kills itself, with no clean-up."""

    def send(self, to: str, msg: Message, episode: int = -1, rnd: int = -1) -> None:
        self.sends.append(Send(to, msg, episode, rnd))

    def write(self, table: str, row: dict[str, Any]) -> None:
        self.rows.append((table, row))

    def log(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def take(self) -> Effects:
        """What was asked since the last take; cleared."""
        out = Effects(self.sends, self.rows, self.events, self.checkpoint, self.die)
        self.sends, self.rows, self.events, self.checkpoint = [], [], [], None
        return out
