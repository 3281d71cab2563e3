"""`workbench ablate GRID.yaml --out DIR`."""
from __future__ import annotations

from pathlib import Path

from workbench.errors import UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("ablate", help="run a grid of configs x seeds; write mean ± std tables and plots",
                       description="Run every cell of an ablation grid (a base config, axes over config fields by "
                       "dotted path, seeds) into DIR/<cell>/seed<s>/, skipping finished cells, then write "
                       "DIR/ablation.{csv,md,tex,json} and DIR/plot_<axis>.png.")
    p.add_argument("grid", help="grid YAML: base (config mapping or file), axes {dotted.path: [values]}, seeds")
    p.add_argument("--out", required=True, help="output folder (rerun with the same folder to resume)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the base config's, else auto)")
    p.add_argument("--seeds", type=int, default=None, help="override the grid's seeds with 0..N-1")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (torch.set_num_threads); 1 is often fastest for tiny models")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("--tables-only", action="store_true", help="only (re)write the tables from finished cells")
    p.set_defaults(func=run_ablate)


def run_ablate(args) -> int:
    from workbench.ablation.grid import load_grid
    from workbench.ablation.runner import run_grid
    from workbench.ablation.tables import write_tables

    if args.threads is not None and args.threads < 1:
        raise UsageError(f"workbench ablate: --threads {args.threads}: give at least 1 (torch CPU threads)")
    grid = load_grid(args.grid)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)  # recorded in the fingerprint (torch_threads)
    if args.seeds is not None:
        grid = grid.with_seeds(args.seeds)
    out = Path(args.out)
    if args.dry_run:
        cells = grid.cells(out)
        for cell in cells:
            print(f"{out / cell.name}  {cell.values}")
        print(f"{len(cells)} cells ({len(cells) // len(grid.seeds)} configurations x {len(grid.seeds)} seeds)")
        return 0
    failed = 0
    if args.tables_only and not out.is_dir():
        raise UsageError(f"--tables-only: {out} is not a folder; give the --out of an earlier `workbench ablate` run")
    if not args.tables_only:
        outcomes = run_grid(grid, out, device=args.device)
        failed = sum(o.status == "failed" for o in outcomes)
        print(f"[ablate] {sum(o.status == 'done' for o in outcomes)} run, "
              f"{sum(o.status == 'skipped' for o in outcomes)} already finished, {failed} failed", flush=True)
        for o in outcomes:
            if o.status == "failed":
                print(f"[ablate] FAILED {o.run_dir}: {o.error}", flush=True)
    paths = write_tables(grid, out)
    print(paths["markdown"].read_text())
    print("[ablate] wrote " + ", ".join(str(p) for p in paths.values()), flush=True)
    return 1 if failed else 0
