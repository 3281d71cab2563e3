"""The main job, end to end: train, evaluate on the held-out split, draw overlays and the loss curve (files in
the run directory, and in its TensorBoard events at the last training step).

`workbench train` and `make demo` both go through `train_and_evaluate`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from workbench.config import RunConfig
from workbench.engine.inference import LoadedRun, eval_dataset, evaluate_model, load_run
from workbench.engine.run_folder import releases_run_locks
from workbench.engine.tracking import log_evaluation
from workbench.engine.trainer import TrainResult, train


@releases_run_locks  # the run folder stays locked (engine/run_folder.py) through the evaluation's writes
def train_and_evaluate(cfg: RunConfig, run_dir: str | os.PathLike, device: str | None = None, resume: bool = False,
                       evaluate: bool = True, dataset=None, progress: bool = True, num_overlays: int = 6,
                       overwrite: bool = False):
    """Train, then (on the main process, when data.val is set) write metrics.json, loss_curve.png and
    overlays/ into `run_dir`: of best.pt when training evaluated as it went (solver.eval_period), else of the
    final weights; metrics.json's "checkpoint" says which. Returns (TrainResult, EvalResult or None)."""
    from workbench.engine.evaluate import write_metrics_json
    from workbench.drawing.loss_curve import plot_loss_curve

    result: TrainResult = train(cfg, run_dir, dataset=dataset, device=device, resume=resume, progress=progress,
                                overwrite=overwrite)
    run_dir = Path(run_dir)
    if int(os.environ.get("RANK", "0")) != 0:
        return result, None
    if (run_dir / "metrics.jsonl").is_file():
        plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png")
    if not (evaluate and cfg.data.val):
        return result, None
    val = eval_dataset(cfg)
    if result.best is not None:  # solver.eval_period: the best checkpoint, already evaluated and logged
        run = load_run(run_dir, device=result.model.device, checkpoint="best")
        metrics = result.best_metrics
        if metrics is None or metrics.checkpoint.get("step") != result.best.step:  # found before a resume
            metrics = evaluate_model(run.model, cfg.data.val, val, cfg.eval, progress=progress)
        step, scalars = result.best.step, False
    else:
        if cfg.solver.eval_period:
            print(f"[workbench] no evaluation gave a value of solver.best_metric {cfg.solver.best_metric}: "
                  "evaluating the final weights", flush=True)
        run = LoadedRun(cfg, result.model, run_dir, f"model_final.pt (step {result.steps})")
        metrics = evaluate_model(result.model, cfg.data.val, val, cfg.eval, progress=progress)
        step, scalars = result.steps, True
    metrics.checkpoint = {"file": run.checkpoint.split(" ")[0], "step": step,
                          **(result.best.to_dict() if result.best is not None else {})}
    write_metrics_json(metrics, run_dir / "metrics.json")
    overlays = draw_dataset_overlays(run, val, run_dir / "overlays", limit=num_overlays)
    log_evaluation(run_dir, cfg.log, step, metrics, overlays, scalars=scalars)
    print(metrics.table().to_string(index=False), flush=True)
    print(f"[workbench] metrics.json and overlays/ are of {run.checkpoint}", flush=True)
    return result, metrics


def _schema_names(run: LoadedRun) -> tuple[list[str], dict[str, list[str]]]:
    from workbench.engine.run_categories import run_category_names

    known = run_category_names(run.run_dir, run.cfg)
    categories = known[0] if known else [f"class{i}" for i in range(run.cfg.model.num_classes)]
    return categories, {a.name: list(a.values) for a in run.cfg.model.attributes}


@torch.no_grad()
def _draw(run: LoadedRun, item: dict, out_path: Path) -> Path:
    from workbench.engine.scoring import select_instances, take, to_numpy
    from workbench.drawing.overlay import draw_instances, save_png

    categories, attributes = _schema_names(run)
    if run.cfg.model.task != "instance":
        return _draw_regions(run, item, out_path, categories, attributes)
    pred = run.model([item])[0]
    multi = [a.name for a in run.cfg.model.attributes if a.multi]
    sel = select_instances(pred, run.cfg.eval, [n for n in attributes if n not in multi], multi)
    kept = take(to_numpy(pred), sel.index)
    kept["scores"] = sel.scores
    keep = sel.scores >= max(0.3, run.cfg.eval.score_threshold)  # draw the confident ones only
    image, kept["masks"] = _canvas(item, kept["masks"])
    drawn = draw_instances(image, kept, categories, attributes, index=np.flatnonzero(keep), alpha=0.3)
    save_png(drawn, out_path)
    return out_path


def _canvas(item: dict, masks: np.ndarray, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The item's image (3, H', W') as (H, W, 3) uint8 at `size` (default: the masks' (N, H, W) size, or the
    image's own when there are none; bilinear when they differ), image and masks enlarged by a whole factor when
    small so captions stay legible."""
    image = item["image"].permute(1, 2, 0).numpy()
    h, w = size or (masks.shape[-2:] if len(masks) else image.shape[:2])
    if image.shape[:2] != (h, w):
        image = np.asarray(torch.nn.functional.interpolate(
            item["image"][None].float(), size=(h, w), mode="bilinear")[0].permute(1, 2, 0).clamp(0, 255).byte())
    scale = max(1, 384 // max(h, w))
    if scale > 1:
        image = image.repeat(scale, 0).repeat(scale, 1)
        masks = masks.repeat(scale, 1).repeat(scale, 2)
    return image, masks


def _draw_regions(run: LoadedRun, item: dict, out_path: Path, categories, attributes) -> Path:
    """A panoptic model's segments (things and stuff, each with its query and attributes) or a semantic model's
    class regions, at the image's own size."""
    from workbench.drawing.overlay import draw_instances, save_png
    from workbench.drawing.segments import panoptic_regions, semantic_regions

    pred = run.model.predict([item], tasks=run.cfg.model.task)[0]
    if run.cfg.model.task == "panoptic":
        from workbench.engine.run_categories import run_carried_attributes

        regions, captions = panoptic_regions(pred, categories, attributes, run_carried_attributes(run.run_dir,
                                                                                                  run.cfg))
    else:
        regions, captions = semantic_regions(pred, categories)
    image, regions["masks"] = _canvas(item, regions["masks"], tuple(regions["masks"].shape[-2:]))
    save_png(draw_instances(image, regions, categories, attributes, alpha=0.35, captions=captions), out_path)
    return out_path


def draw_dataset_overlays(run: LoadedRun, dataset, out_dir: Path, limit: int = 6) -> list[Path]:
    return [_draw(run, dataset[i], out_dir / f"{dataset[i].get('image_id', i)}.png")
            for i in range(min(limit, len(dataset)))]


def overlay_names(image_paths: Sequence[str], out_dir: str | os.PathLike) -> list[Path]:
    """Output path per input, unique over all inputs: `<stem>.png` for a stem no other input has; inputs sharing
    a stem get the next free `<stem>_<k>.png` (k = 1, 2, ... in input order, skipping names another input's own
    stem takes: `a/x.png`, `b/x.png`, `a/x_1.png` -> x_2, x_3, x_1). Refuses an output folder that holds an
    input (an overlay could replace it)."""
    from collections import Counter

    from workbench.errors import WorkbenchError

    out_dir = Path(out_dir)
    inside = [p for p in image_paths if out_dir.exists() and Path(p).resolve().parent == out_dir.resolve()]
    if inside:
        raise WorkbenchError(f"--out {out_dir} holds input image(s) {inside[:3]}: overlays would be written among "
                             "(and could replace) them; choose another output folder")
    stems = Counter(Path(p).stem for p in image_paths)
    taken = {stem for stem, n in stems.items() if n == 1}
    names = []
    for p in image_paths:
        stem = Path(p).stem
        if stems[stem] == 1:
            names.append(out_dir / f"{stem}.png")
            continue
        k = 1
        while f"{stem}_{k}" in taken:
            k += 1
        taken.add(f"{stem}_{k}")
        names.append(out_dir / f"{stem}_{k}.png")
    return names


def draw_predictions(run: LoadedRun, image_paths: Sequence[str], out_dir: str | os.PathLike,
                     failures: list[str] | None = None) -> list[Path]:
    """PNG overlays for arbitrary image files of any size (`workbench predict`), named by `overlay_names`.

    An unreadable image is skipped and its error appended to `failures` (raised when that is None), so one bad
    file in a list does not stop the rest."""
    from workbench.data.dataset import read_image
    from workbench.data.problems import DataError

    out = []
    for path, target in zip(image_paths, overlay_names(image_paths, out_dir)):
        try:
            image = read_image(path)
        except DataError as err:
            if failures is None:
                raise
            failures.append(str(err))
            continue
        item = {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))}
        out.append(_draw(run, item, target))
    return out
