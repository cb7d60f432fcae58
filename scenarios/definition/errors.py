"""Scenario errors: every problem in a file, one line each, naming file, field and value."""

from __future__ import annotations


class ScenarioError(ValueError):
    """A scenario file (or a value derived from it) that cannot be run."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {source}: {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {source}:\n{lines}")
