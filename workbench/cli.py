"""The `workbench` command. Each subcommand lives next to the code it drives and registers itself here."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from workbench.errors import WorkbenchError
from workbench.threads import apply as apply_thread_policy

# module path -> that module's `add_parser(subparsers)`; kept as strings so `workbench --help` stays fast
# and an optional part (detectron2 adapter) never breaks the others.
COMMANDS = [
    "workbench.harness.cli",
    "workbench.ops.doctor",
    "workbench.data.cli",
    "workbench.engine.cli",
    "workbench.ablation.cli",
    "workbench.deploy.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def _pop_threads(argv: list[str]) -> tuple[list[str], str | None]:
    """`--threads N` / `--threads=N` taken out of argv wherever it stands (like --debug)."""
    rest, value = [], None
    it = iter(argv)
    for a in it:
        if a == "--threads":
            value = next(it, "")
        elif a.startswith("--threads="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
    return rest, value


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("WORKBENCH_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere: `workbench train ... --debug`
    argv, threads = _pop_threads(argv)
    parser = build_parser()
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors (or WORKBENCH_DEBUG=1); "
                        "accepted after any subcommand too")
    parser.add_argument("--threads", type=int, metavar="N", help="intra-op threads of this process and its workers "
                        "(default: WORKBENCH_THREADS, OMP_NUM_THREADS, else torch's); accepted after any subcommand")
    args = parser.parse_args(argv)
    try:
        policy = apply_thread_policy(threads)
        if policy.threads is not None:
            args.threads = policy.threads  # a subcommand's own --threads (ablate) sees the same value
        return int(args.func(args) or 0)
    except (WorkbenchError, OSError) as err:  # the one place user-fixable errors are reported
        # An OSError naming a path (a folder given for a file, a file for a folder, an existing output) is the
        # user's to fix; one about no path (a socket, the disk) is not, and keeps its traceback.
        theirs = isinstance(err, (WorkbenchError, FileNotFoundError, FileExistsError)) or err.filename is not None
        if debug or not theirs:
            raise
        print("\n".join([f"error: {err}", *getattr(err, "__notes__", [])]), file=sys.stderr)
        return getattr(err, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
