"""Where a run is written: checked before anything starts, replaced whole or not at all.

A run directory's parent must exist (a typo in ``--out`` must not grow a tree of new
folders) and be a writable directory. ``--force`` over an old run writes the new one
into a staging directory beside it and swaps the two only when the new run is
complete, so a crash or Ctrl-C leaves the old run as it was and no file of the old
run (a figure, a summary) survives beside the new records.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


class RunDirectoryNotEmpty(FileExistsError):
    """Refuse to mix a new run into an existing one (recorded data is never lost)."""


class BadOutPath(OSError):
    """``--out`` names a place a run cannot be written to."""


def check_out(out: str | Path, flag: str = "--out") -> Path:
    """``out`` as a Path, if a run directory can be created there; else one line saying
    why, naming the path."""
    out = Path(out)
    # as the user wrote it, except for "." and "..", whose parent is found by resolving
    parent = out.parent if out.name not in ("", ".", "..") else out.resolve().parent
    if out.exists() and not out.is_dir():
        raise BadOutPath(f"{flag} {out}: exists and is not a directory")
    if not parent.exists():
        raise BadOutPath(f"{flag} {out}: parent directory {parent} does not exist "
                         "(create it first)")
    if not parent.is_dir():
        raise BadOutPath(f"{flag} {out}: {parent} is not a directory")
    if not os.access(out if out.exists() else parent, os.W_OK | os.X_OK):
        raise BadOutPath(f"{flag} {out}: {out if out.exists() else parent} is not writable")
    return out


def _empty(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


@contextmanager
def run_directory(out: str | Path, force: bool) -> Iterator[Path]:
    """Yield the directory to write the run into.

    A new or empty ``out`` is written in place (a crash leaves the partial run where the
    user looks). An existing run is refused without ``force``; with it, the new run goes
    to a staging directory that replaces ``out`` when the block ends without error.
    """
    out = check_out(out)
    if _empty(out):
        out.mkdir(exist_ok=True)
        yield out
        return
    if not force:
        raise RunDirectoryNotEmpty(
            f"--out {out}: directory exists and is not empty; choose another or pass --force")
    whole = out.resolve()
    if whole == Path.cwd().resolve() or whole in Path.cwd().resolve().parents:
        raise BadOutPath(f"--out {out}: is the current directory or holds it; --force cannot "
                         "replace it (run from elsewhere, or choose another --out)")
    _remove_stale_staging(whole)
    staging = Path(tempfile.mkdtemp(prefix=f".{whole.name}.", suffix=".new", dir=whole.parent))
    staging.chmod(_directory_mode())  # mkdtemp makes it private: the run is as readable as
    # a run directory made by mkdir
    try:
        yield staging
    except BaseException:
        log.warning("%s: the run did not complete; the old run is untouched, the partial "
                    "new one is in %s", out, staging)
        raise
    replace_dir(staging, whole)


def _directory_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _remove_stale_staging(out: Path) -> None:
    """Partial runs that an earlier forced run left beside ``out`` when it failed (its
    warning named them): the next forced run over ``out`` removes them."""
    for stale in out.parent.glob(f".{out.name}.*.new"):
        log.warning("%s: removing %s, a forced run that did not complete", out, stale)
        shutil.rmtree(stale, ignore_errors=True)


def replace_dir(new: Path, old: Path) -> None:
    """Put ``new`` where ``old`` is: two renames on one file system, then the old tree
    is deleted (a crash in between leaves both, never neither)."""
    retired = Path(tempfile.mkdtemp(prefix=f".{old.name}.", suffix=".old", dir=old.parent))
    os.rename(old, retired / old.name)
    os.rename(new, old)
    shutil.rmtree(retired)
