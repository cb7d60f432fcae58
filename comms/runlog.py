"""The one writer of a run directory's record files, for every runtime.

Rows are written as JSON Lines. ``offsets`` tells how far every file has been written;
a deployed node saves them with its checkpoint and a restarted node ``truncate``s back
to them, so a row written after the last checkpoint is not written twice.

Two ways to write, one format:

- ``buffer_rounds=0`` (the default, deployed nodes): every row is flushed to the
  operating system as it is written, so what a checkpoint counts is in the file and a
  killed node loses no recorded round.
- ``buffer_rounds=N`` (in-process runs: simulate, train, evaluate): rows are kept in
  memory and written every N rounds, at ``close`` and when the ``with`` block ends on
  an exception. A flush per row was most of the cost of recording a round, and an
  in-process run that dies is rerun, not resumed.

``fmt="parquet"`` converts the finished tables to Parquet at ``close`` (docs/logs.md):
JSON Lines stay the format while running, because an appended line survives a crash
and a Parquet file is only readable once complete.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from peergrid.agents.records import RoundRecord

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet")
AGENTS_PARQUET = "agents.parquet"
"""Every agent's records in one file (a Parquet run); JSON Lines keep one file per agent."""
TABLES = ("market", "grid")
_JSON_COLUMNS_KEY = b"peergrid.json_columns"
"""Parquet metadata: columns holding lists or dicts, stored as JSON text."""


class ParquetUnavailable(ImportError):
    """--format parquet without pyarrow installed."""


def require_parquet() -> None:
    """Fail before a run starts, in one line, if Parquet cannot be written."""
    try:
        import pyarrow  # noqa: F401  (importable: that is the check)
    except ImportError:
        raise ParquetUnavailable(
            "--format parquet needs pyarrow: pip install 'peergrid[parquet]'") from None


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format = {fmt!r}: must be one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        require_parquet()
    return fmt


class RunWriter:
    """Appends records to a run directory (see the module docstring for when rows
    reach the file)."""

    def __init__(self, run_dir: str | Path, buffer_rounds: int = 0, fmt: str = "jsonl") -> None:
        self.run_dir = Path(run_dir)
        self.buffer_rounds = buffer_rounds
        self.fmt = check_format(fmt)
        (self.run_dir / "agents").mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {}
        self._sizes: dict[str, int] = {}
        self._pending: dict[str, list[bytes]] = {}
        self._rounds_pending = 0
        self._closed = False

    def _file(self, relpath: str) -> IO[bytes]:
        f = self._files.get(relpath)
        if f is None:
            f = open(self.run_dir / relpath, "ab")
            self._files[relpath] = f
            self._sizes[relpath] = (self.run_dir / relpath).stat().st_size
        return f

    def write_row(self, relpath: str, row: dict[str, Any]) -> None:
        """Append one row to a file of the run (e.g. a node's market.jsonl)."""
        line = (json.dumps(row) + "\n").encode("utf-8")
        if self.buffer_rounds:
            self._pending.setdefault(relpath, []).append(line)
            return
        f = self._file(relpath)
        f.write(line)
        f.flush()
        self._sizes[relpath] += len(line)

    def write_round(self, records: Iterable[RoundRecord], market_row: dict[str, Any],
                    grid_row: dict[str, Any]) -> None:
        for r in records:
            self.write_row(f"agents/{r.agent}.jsonl", r.as_dict())
        self.write_row("market.jsonl", market_row)
        self.write_row("grid.jsonl", grid_row)
        if self.buffer_rounds:
            self._rounds_pending += 1
            if self._rounds_pending >= self.buffer_rounds:
                self.flush()

    def flush(self) -> None:
        """Write every buffered row (whole lines, one write per file)."""
        for rel, lines in self._pending.items():
            if lines:
                data = b"".join(lines)
                f = self._file(rel)
                f.write(data)
                f.flush()
                self._sizes[rel] += len(data)
                lines.clear()
        self._rounds_pending = 0

    def offsets(self, relpaths: Iterable[str]) -> dict[str, int]:
        """Bytes written so far to each of ``relpaths``."""
        self.flush()
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
        self.flush()
        for rel, size in offsets.items():
            path = self.run_dir / rel
            if path.is_file() and path.stat().st_size > size:
                with open(path, "r+b") as f:
                    f.truncate(size)
            if rel in self._sizes:  # open for appending: it now appends from here
                self._sizes[rel] = min(self._sizes[rel], size)

    def close(self, complete: bool = True) -> None:
        """Write what is buffered and close; a complete Parquet run is converted."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            for f in self._files.values():
                f.close()
            self._files.clear()
            self._closed = True
        if complete and self.fmt == "parquet":
            convert_to_parquet(self.run_dir)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        # on an exception the rows so far are kept as JSON Lines, not converted
        self.close(complete=exc_type is None)


# ---- reading and converting ----------------------------------------------------------


def read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON Lines file as pandas reads it (no dtype guessing: ints stay ints)."""
    import pandas as pd

    return pd.read_json(path, lines=True, dtype=False) if path.stat().st_size else pd.DataFrame()


def _json_columns(df: pd.DataFrame) -> list[str]:
    """Object columns holding lists or dicts (a deployment's market rows): Parquet
    cannot store an empty struct, so these go in as JSON text and come back decoded."""
    return [c for c in df.columns if df[c].dtype == object
            and any(isinstance(v, (list, dict)) for v in df[c])]


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """``df`` as one Parquet file, written beside and renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    nested = _json_columns(df)
    if nested:
        df = df.copy()
        for c in nested:
            df[c] = [v if v is None or (isinstance(v, float) and math.isnan(v)) else json.dumps(v)
                     for v in df[c]]
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_JSON_COLUMNS_KEY] = json.dumps(nested).encode()
    table = table.replace_schema_metadata(meta)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_parquet(path: Path) -> pd.DataFrame:
    """A file ``write_parquet`` wrote, as the DataFrame it was written from."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ParquetUnavailable(
            f"{path}: reading Parquet records needs pyarrow: pip install 'peergrid[parquet]'"
        ) from None
    table = pq.read_table(path)
    nested = json.loads((table.schema.metadata or {}).get(_JSON_COLUMNS_KEY, b"[]"))
    df = table.to_pandas()
    for c in nested:
        df[c] = [v if v is None else json.loads(v) for v in df[c]]
    return df


def convert_to_parquet(run_dir: str | Path) -> list[Path]:
    """Rewrite a finished run's JSON Lines tables as Parquet (``agents.parquet``,
    ``market.parquet``, ``grid.parquet``) and remove the JSON Lines they came from.
    Each Parquet file is complete before any JSON Lines file is removed, and readers
    prefer the Parquet file, so a crash in between loses nothing."""
    import pandas as pd

    require_parquet()
    run_dir = Path(run_dir)
    agent_files = sorted((run_dir / "agents").glob("*.jsonl"))
    written: list[Path] = []
    if agent_files:
        frames = [read_jsonl(p) for p in agent_files]
        write_parquet(pd.concat(frames, ignore_index=True), run_dir / AGENTS_PARQUET)
        written.append(run_dir / AGENTS_PARQUET)
    tables = [n for n in TABLES if (run_dir / f"{n}.jsonl").is_file()]
    for name in tables:
        write_parquet(read_jsonl(run_dir / f"{name}.jsonl"), run_dir / f"{name}.parquet")
        written.append(run_dir / f"{name}.parquet")
    for p in [*agent_files, *(run_dir / f"{n}.jsonl" for n in tables)]:
        p.unlink()
    try:
        (run_dir / "agents").rmdir()  # emptied (a deployment keeps other files there)
    except OSError:
        pass
    log.info("%s: records converted to Parquet", run_dir)
    return written
