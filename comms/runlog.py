"""The one writer of a run directory's JSON Lines files, for every runtime.

Each row is one flushed line. ``offsets`` tells how far every file has been written;
a deployed node saves them with its checkpoint and a restarted node ``truncate``s back
to them, so a row written after the last checkpoint is not written twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from peergrid.agents.records import RoundRecord


class RunWriter:
    """Appends records to a run directory, one flushed line per record."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        (self.run_dir / "agents").mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {}
        self._sizes: dict[str, int] = {}

    def _file(self, relpath: str) -> IO[bytes]:
        f = self._files.get(relpath)
        if f is None:
            f = open(self.run_dir / relpath, "ab")  # noqa: SIM115
            self._files[relpath] = f
            self._sizes[relpath] = (self.run_dir / relpath).stat().st_size
        return f

    def write_row(self, relpath: str, row: dict[str, Any]) -> None:
        """Append one row to a file of the run (e.g. a node's market.jsonl)."""
        f = self._file(relpath)
        line = (json.dumps(row) + "\n").encode("utf-8")
        f.write(line)
        f.flush()
        self._sizes[relpath] += len(line)

    def write_round(self, records: Iterable[RoundRecord], market_row: dict[str, Any],
                    grid_row: dict[str, Any]) -> None:
        for r in records:
            self.write_row(f"agents/{r.agent}.jsonl", r.as_dict())
        self.write_row("market.jsonl", market_row)
        self.write_row("grid.jsonl", grid_row)

    def offsets(self, relpaths: Iterable[str]) -> dict[str, int]:
        """Bytes written so far to each of ``relpaths``."""
        out = {}
        for rel in relpaths:
            if rel in self._sizes:  # written here: counted, no system call
                out[rel] = self._sizes[rel]
                continue
            path = self.run_dir / rel
            out[rel] = path.stat().st_size if path.is_file() else 0
        return out

    def truncate(self, offsets: Mapping[str, int]) -> None:
        """Cut each file back to its saved length (rows after a checkpoint are redone)."""
        for rel, size in offsets.items():
            path = self.run_dir / rel
            if path.is_file() and path.stat().st_size > size:
                with open(path, "r+b") as f:
                    f.truncate(size)
            if rel in self._sizes:  # open for appending: it now appends from here
                self._sizes[rel] = min(self._sizes[rel], size)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
