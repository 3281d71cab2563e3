"""The base of every error a user can fix: the CLI prints its message alone (no traceback) and exits with
`exit_code`. Anything else is a bug and keeps its traceback. `--debug` / WORKBENCH_DEBUG=1 shows tracebacks
for these too."""
from __future__ import annotations


class WorkbenchError(Exception):
    """An error whose message names the file / field and the fix. exit_code: 1 = data or run state, 2 = usage."""

    exit_code = 1


class UsageError(WorkbenchError, ValueError):
    """An option or argument that cannot be used as given (missing, contradictory or out of range): exit code 2,
    as argparse's own usage errors."""

    exit_code = 2
