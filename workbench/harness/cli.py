"""`workbench components`: build a tiny model and run every component alone on synthetic tensors."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("components", help="run each model component on synthetic tensors and print a report")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from workbench.harness.runners import run_all

    report = run_all(seed=args.seed)
    print(report)
    return 0 if report.ok else 1
