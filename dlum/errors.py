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
    """A cohort, predictions or reads table with problems.

    ``problems`` lists every one as text (``records`` as :class:`dlum.tables.Problem` where the
    reader knew the row, column and value); ``more`` counts problems past the reader's bound
    that were not listed.
    """

    def __init__(self, problems: list, source: str | None = None, more: int = 0):
        self.records = list(problems)
        self.problems = [str(p) for p in self.records]
        self.source = source
        self.more = int(more)
        head = f"{source}: " if source else ""
        total = len(self.problems) + self.more
        shown = self.problems[:20]
        lines = "\n".join(f"  - {p}" for p in shown)
        rest = total - len(shown)
        tail = f"\n  … and {rest} more" if rest > 0 else ""
        super().__init__(f"{head}{total} problem(s) in the table:\n{lines}{tail}")

    @property
    def count(self) -> int:
        """Every problem found, listed or not."""
        return len(self.problems) + self.more


class CheckpointError(DLUMError, ValueError):
    """A checkpoint folder that is missing, incomplete or not a dlum checkpoint."""


class StudyError(DLUMError, ValueError):
    """A reading-session request the study store refuses (a wrong code, a read out of order or
    submitted twice, a session not open yet). The message is meant for the reader or the admin."""
