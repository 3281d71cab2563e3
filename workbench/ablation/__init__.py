"""Ablations: a grid of run configs (axes over config fields by dotted path, times seeds), run resumably into
run directories, summarised as mean ± std tables (CSV, Markdown, LaTeX) and plots with an environment
fingerprint. `workbench ablate GRID.yaml --out DIR`; see grid.py for the file format."""
from workbench.ablation.fingerprint import environment_fingerprint
from workbench.ablation.grid import Axis, Cell, Grid, GridError, OutputStateError, load_grid
from workbench.ablation.runner import CellOutcome, run_grid
from workbench.ablation.tables import aggregate, collect_runs, write_tables

__all__ = ["Axis", "Cell", "CellOutcome", "Grid", "GridError", "OutputStateError", "aggregate", "collect_runs",
           "environment_fingerprint", "load_grid", "run_grid", "write_tables"]
