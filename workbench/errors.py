"""The base of every error a user can fix: the CLI prints its message alone (no traceback) and exits with
`exit_code`. Anything else is a bug and keeps its traceback. `--debug` / WORKBENCH_DEBUG=1 shows tracebacks
for these too."""
from __future__ import annotations


class WorkbenchError(Exception):
    """An error whose message names the file / field and the fix. exit_code: 1 = data or run state, 2 = usage."""

    exit_code = 1


class UsageError(WorkbenchError):
    """A command line that cannot run as given (a missing or contradictory option): exit code 2, as argparse."""

    exit_code = 2
