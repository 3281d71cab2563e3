"""What goes wrong in a dataset file, said so a person can find and fix it.

Every check in `data/` produces `Problem`s (a stable `code` tests can assert on, and a `where` that names the
file, line or field); functions that must stop raise one `DataError` listing all of them at once, so a user
fixes a whole folder in one pass instead of one typo per run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from workbench.errors import WorkbenchError

__all__ = ["DataError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One finding. `severity` is "error" (the data cannot be used) or "warning" (usable, probably a mistake)."""

    code: str
    where: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.message} [{self.code}]"


class DataError(WorkbenchError, ValueError):
    """Raised when input data cannot be used; `problems` holds every error found (at least one)."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        if not self.problems:
            raise ValueError("DataError needs at least one problem")
        if len(self.problems) == 1:
            text = str(self.problems[0])
        else:
            lines = [f"  {p}" for p in self.problems[:50]]
            if len(self.problems) > 50:
                lines.append(f"  ... and {len(self.problems) - 50} more")
            text = f"{len(self.problems)} problems:\n" + "\n".join(lines)
        super().__init__(text)

    @property
    def codes(self) -> list[str]:
        return [p.code for p in self.problems]
