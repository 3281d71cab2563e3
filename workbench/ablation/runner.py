"""Run every cell of a grid, each into a normal run directory, resumably and without letting one crash stop
the rest.

<out>/grid.yaml                   the resolved grid (base inlined); `workbench ablate <out>/grid.yaml` reruns it
<out>/<key>/seed<s>/              one run directory per cell: config.yaml, metrics.jsonl, last.pt, model_final.pt,
                                  loss_curve.png (as `workbench train` writes them), plus
    metrics.json                  evaluation (engine/evaluate.py); its presence marks the cell finished
    train.json                    {"seconds", "steps", "lr", "trained_in"}: training time of the model evaluated
    status.json                   {"status": "done" | "failed", "seconds", "fingerprint", ...}
    failed.json                   only after a crash: {"error", "type", "traceback"}; removed once the cell succeeds
    log.txt                       the cell's stdout

Rerunning skips finished cells (metrics.json present) and retrains unfinished ones from scratch, so train time
is always one uninterrupted run. A cell whose config.yaml differs from the grid's (the grid was edited) is an
error before anything runs: mix-ups between old and new results never reach a table.

Train time is measured after a warm-up: before the first cell that trains, one untimed training step of its
config runs in a temporary folder (a process's first forward/backward is several times slower and would
otherwise be charged to whichever cell comes first).

Cells that differ only in `eval` settings (e.g. an `eval.scoring` axis) train once: the first trains, the
others copy its weights, record `trained_in`, and only evaluate.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from workbench.ablation.fingerprint import environment_fingerprint
from workbench.ablation.grid import Cell, Grid, OutputStateError, SyntheticData
from workbench.config_file import read_yaml, run_config_from_dict, to_dict
from workbench.engine.trainer import absolute_data_paths

__all__ = ["CellOutcome", "check_stale", "prepare_synthetic", "run_cell", "run_grid"]

RunCell = Callable[[Cell, Path], None]


@dataclass
class CellOutcome:
    cell: Cell
    run_dir: Path
    status: str  # "done" | "skipped" (finished earlier) | "failed"
    seconds: float = 0.0
    error: str | None = None


# ---- small file helpers -------------------------------------------------------------------------------------------
def _write_json(path: Path, data) -> None:
    from workbench.data.io import write_json_atomic

    write_json_atomic(path, data, indent=2)


def _read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def _diff_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _diff_keys(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)]
    return [] if a == b else [prefix]


def _config_of(run_dir: Path) -> dict | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    return to_dict(absolute_data_paths(run_config_from_dict(read_yaml(path))))


# ---- data ---------------------------------------------------------------------------------------------------------
def prepare_synthetic(spec: SyntheticData, folder: Path, progress: bool = True, task: str = "instance") -> Path:
    """Synthesise, convert and validate the shapes data of `task` once (COCO-with-attributes for instance, COCO
    panoptic with sky / ground stuff for panoptic and semantic: SyntheticData.paths); a marker makes reruns free.
    Returns `folder`."""
    from workbench.data.synthetic import synthetic_splits

    folder = Path(folder)
    marker = folder / "synthetic.json"
    wanted = {"train_images": spec.train_images, "val_images": spec.val_images, "image_size": spec.image_size}
    if spec.patterns:  # only then: markers of existing single-label data stay valid
        wanted["patterns"] = True
    if task != "instance":
        wanted["stuff"] = True
    if marker.is_file():
        if _read_json(marker) == wanted:
            return folder
        raise OutputStateError(f"{folder} holds synthetic data made with {_read_json(marker)}, not {wanted}; "
                        "remove the folder or set synthetic.dir elsewhere")
    synthetic_splits(folder, spec.train_images, spec.val_images, spec.image_size, progress=progress,
                     patterns=spec.patterns, task="instance" if task == "instance" else "panoptic")
    _write_json(marker, wanted)
    return folder


# ---- one cell -----------------------------------------------------------------------------------------------------
def _trained_model_dir(run_dir: Path, cell: Cell, siblings: Sequence[tuple[Cell, Path]]) -> Path | None:
    """A finished training of this cell's model: its own (evaluation crashed), else a sibling's that differs only
    in eval settings."""
    for other, other_dir in [(cell, run_dir), *siblings]:  # configs on disk match: run_grid checked them
        if other.train_key == cell.train_key and (other_dir / "model_final.pt").is_file() \
                and (other_dir / "train.json").is_file():
            return other_dir
    return None


def run_cell(cell: Cell, run_dir: Path, device: str | None = None,
             siblings: Sequence[tuple[Cell, Path]] = ()) -> None:
    """Train (or reuse a sibling's training) and evaluate one cell into `run_dir`; writes train.json and
    metrics.json (last, so its presence means finished)."""
    from workbench.config_file import dump_yaml
    from workbench.device import resolve_device
    from workbench.engine.evaluate import write_metrics_json
    from workbench.engine.inference import eval_dataset, evaluate_model, load_run
    from workbench.engine.tracking import log_evaluation
    from workbench.engine.trainer import train

    cfg = cell.config
    donor = _trained_model_dir(run_dir, cell, siblings)
    if donor is None:
        result = train(cfg, run_dir, device=device, progress=False, overwrite=True)  # unfinished: from scratch
        model = result.model
        _write_json(run_dir / "train.json", {"seconds": result.seconds, "steps": result.steps, "lr": result.lr,
                                             "last_losses": result.last_losses, "trained_in": "."})
        if (run_dir / "metrics.jsonl").is_file():
            from workbench.drawing.loss_curve import plot_loss_curve

            plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png")
    else:
        dev = resolve_device(device if device is not None else cfg.device)
        model = load_run(donor, device=dev).model
        if donor != run_dir:
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(donor / "model_final.pt", run_dir / "model_final.pt")
            dump_yaml(cfg, run_dir / "config.yaml")
            record = _read_json(donor / "train.json")
            record["trained_in"] = os.path.relpath(donor, run_dir)
            _write_json(run_dir / "train.json", record)
            print(f"[ablate] weights from {donor} (differs only in eval settings); evaluating", flush=True)
    metrics = evaluate_model(model, cfg.data.val, eval_dataset(cfg), cfg.eval, progress=False)
    log_evaluation(run_dir, cfg.log, _read_json(run_dir / "train.json")["steps"], metrics)  # TensorBoard, per cell
    write_metrics_json(metrics, run_dir / "metrics.json")
    print(metrics.table().to_string(index=False), flush=True)


def warm_up(cfg, device: str | None = None) -> None:
    """One untimed training step of `cfg` in a temporary folder (first-call costs stay out of train times)."""
    import io
    import tempfile

    from workbench.engine.trainer import train

    with tempfile.TemporaryDirectory(prefix="ablate-warmup-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        train(cfg, tmp, device=device, progress=False, max_iter=1)


# ---- the grid -----------------------------------------------------------------------------------------------------
def check_stale(cells: Sequence[Cell], out: Path) -> None:
    """Raise if a cell folder already holds a run of a different config (the grid or base was edited)."""
    stale = []
    for cell in cells:
        existing = _config_of(out / cell.name)
        if existing is None:
            continue
        wanted = to_dict(absolute_data_paths(cell.config))  # compared resolved: the trainer stores them so
        diff = [k for k in _diff_keys(existing, wanted) if k != "device"]
        if diff:
            stale.append(f"{cell.name} (differs at {', '.join(diff[:5])})")
    if stale:
        raise OutputStateError(f"{out} holds runs of a different config: {'; '.join(stale[:5])}"
                        f"{f' and {len(stale) - 5} more' if len(stale) > 5 else ''}. Use a new --out, or delete "
                        "those cell folders to rerun them")


def run_grid(grid: Grid, out: str | os.PathLike, device: str | None = None, progress: bool = True,
             cell_fn: RunCell | None = None) -> list[CellOutcome]:
    """Run every unfinished cell of `grid` into `out`; returns one outcome per cell, in grid order.

    `cell_fn(cell, run_dir)` replaces the default train + evaluate (`run_cell`); it must write
    run_dir/metrics.json to mark success. Exceptions of a cell are recorded in its failed.json and the next
    cell runs (KeyboardInterrupt still stops everything).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = grid.cells(out)
    if grid.synthetic is not None:  # the data each task needs: the shapes, or the shapes with stuff
        for folder, task in {grid.synthetic.folder(out, t): t for t in grid.tasks()}.items():
            prepare_synthetic(grid.synthetic, folder, progress=progress, task=task)
    check_stale(cells, out)
    import yaml

    (out / "grid.yaml").write_text(yaml.safe_dump(grid.to_dict(), sort_keys=False))
    fingerprint = environment_fingerprint(_resolved(device, cells))
    _write_json(out / "fingerprint.json", fingerprint)
    dirs = [(cell, out / cell.name) for cell in cells]
    outcomes: list[CellOutcome] = []
    counts = {"done": 0, "skipped": 0, "failed": 0}
    warmed = cell_fn is not None  # only the real trainer needs it
    bar = tqdm(dirs, desc="ablate", unit="cell", disable=not progress, dynamic_ncols=True)
    for cell, run_dir in bar:
        bar.set_description(f"ablate {cell.name}")
        if (run_dir / "metrics.json").is_file():
            outcomes.append(CellOutcome(cell, run_dir, "skipped"))
            counts["skipped"] += 1
            bar.set_postfix(counts, refresh=False)
            continue
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "failed.json").unlink(missing_ok=True)
        started = time.perf_counter()
        status: dict = {"cell": cell.key, "values": cell.values, "seed": cell.seed, "fingerprint": fingerprint,
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            if not warmed:
                warmed = True
                warm_up(cell.config, device)
            with open(run_dir / "log.txt", "w") as log, contextlib.redirect_stdout(log):
                if cell_fn is None:
                    run_cell(cell, run_dir, device=device, siblings=[d for d in dirs if d[0] is not cell])
                else:
                    cell_fn(cell, run_dir)
            if not (run_dir / "metrics.json").is_file():
                raise RuntimeError(f"the cell finished without writing {run_dir / 'metrics.json'}")
        except Exception as err:  # noqa: BLE001 -- recorded with its traceback; the other cells still run
            seconds = time.perf_counter() - started
            message = f"{type(err).__name__}: {err}"
            _write_json(run_dir / "failed.json", {"error": message, "type": type(err).__name__,
                                                  "traceback": traceback.format_exc()})
            _write_json(run_dir / "status.json", {**status, "status": "failed", "seconds": seconds, "error": message})
            outcomes.append(CellOutcome(cell, run_dir, "failed", seconds, message))
            counts["failed"] += 1
            tqdm.write(f"[ablate] {cell.name} failed: {message} (see {run_dir / 'failed.json'})")
        else:
            seconds = time.perf_counter() - started
            _write_json(run_dir / "status.json", {**status, "status": "done", "seconds": seconds})
            outcomes.append(CellOutcome(cell, run_dir, "done", seconds))
            counts["done"] += 1
        bar.set_postfix(counts, refresh=False)
    bar.close()
    return outcomes


def _resolved(device: str | None, cells: Sequence[Cell]) -> str:
    """The device the cells will use (for the fingerprint); an unavailable one fails here, before any cell."""
    from workbench.device import resolve_device

    return str(resolve_device(device if device is not None else (cells[0].config.device if cells else "auto")))
