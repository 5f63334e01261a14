"""The errors dlum raises for bad input: each carries a message meant for a person."""
from __future__ import annotations


class DLUMError(Exception):
    """Base class of dlum's own errors."""


class InputError(DLUMError, ValueError):
    """An image, ROI or file that cannot be used. The message names the file and the problem."""

    def __init__(self, problem: str, source: str | None = None):
        self.problem = problem
        self.source = source
        super().__init__(f"{source}: {problem}" if source else problem)


class CohortError(DLUMError, ValueError):
    """A cohort or predictions table with problems; ``problems`` lists every one of them."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{head}{len(self.problems)} problem(s) in the table:\n{lines}")


class CheckpointError(DLUMError, ValueError):
    """A checkpoint folder that is missing, incomplete or not a dlum checkpoint."""
