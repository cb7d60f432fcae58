"""Values a user passes on the command line, checked before anything starts or is
written: argparse types (they turn a bad value into a one-line usage error) and the
library's own guard for counts. Imports nothing heavy: ``peergrid --help`` uses it."""

from __future__ import annotations

import argparse
import math


class MissingExtra(ImportError):
    """An optional part of peergrid whose packages are not installed: one line naming
    the extra to install."""

    def __init__(self, feature: str, extra: str, missing: str | None) -> None:
        super().__init__(f"{feature} needs the [{extra}] extra ({missing or 'a package'} is "
                         f"not installed): pip install -e '.[{extra}]'")


class UsageError(ValueError):
    """Options that do not go together: one line, exit status 2."""


def count(value: int | None, default: int, name: str) -> int:
    """``value``, or ``default`` when it is None; never ``value or default``, which
    would turn 0 into the default instead of an error."""
    chosen = default if value is None else value
    if isinstance(chosen, bool) or not isinstance(chosen, int) or chosen < 1:
        raise ValueError(f"{name} = {chosen!r}: must be a positive integer")
    return chosen


def _integer(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} {what}")
    return value


def positive_int(text: str) -> int:
    """A count (days, episodes, seeds, workers)."""
    return _integer(text, 1, "is not a positive integer")


def non_negative_int(text: str) -> int:
    return _integer(text, 0, "is negative")


def port(text: str) -> int:
    value = _integer(text, 1, "is not a TCP port (1-65535)")
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def probability(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not a probability in [0, 1]")
    return value


def milliseconds(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} ms is negative")
    return value


def out_dir(text: str) -> str:
    """A run directory to create: its parent must already exist and be writable."""
    from peergrid.scenarios.runtime.rundir import BadOutPath, check_out

    try:
        check_out(text, flag="")
    except BadOutPath as err:
        raise argparse.ArgumentTypeError(str(err).lstrip()) from None
    return text


def out_file(text: str) -> str:
    """A file to write: its directory must already exist."""
    from pathlib import Path

    import os

    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory, not a file")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: {path.parent} is not writable")
    return text


def existing_dir(text: str) -> str:
    """A run directory to read."""
    from pathlib import Path

    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not a directory")
    return text
