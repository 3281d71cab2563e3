"""The `workbench` command. Each subcommand lives next to the code it drives and registers itself here."""
from __future__ import annotations

import argparse
import importlib
import sys

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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
