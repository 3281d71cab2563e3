"""Run a trained model over a dataset, and load trained runs from their directory."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from workbench.config import EvalConfig, RunConfig
from workbench.config_file import ConfigError, read_yaml, run_config_from_dict
from workbench.engine.checkpoint import BEST_FILE, CheckpointError, load_checkpoint, load_latest, step_files
from workbench.model import MultiTaskMask2Former, build_model


@dataclass
class LoadedRun:
    cfg: RunConfig
    model: MultiTaskMask2Former
    run_dir: Path
    checkpoint: str = ""  # which weights: "best.pt (step 1500, segm/AP 70.1)", "model_final.pt (step 2000)", ...


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
             checkpoint: str = "model_final.pt") -> LoadedRun:
    """A run directory's resolved config.yaml and weights, in eval mode. `checkpoint`: "last" (=
    "model_final.pt", else `last.pt` of an unfinished run), "best" (`best.pt`, kept by solver.eval_period) or a
    file name in the run directory."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: no config.yaml (made by `workbench train`)")
    cfg = run_config_from_dict(read_yaml(cfg_path))
    checkpoint = {"last": "model_final.pt", "best": BEST_FILE}.get(checkpoint, checkpoint)
    path = run_dir / checkpoint
    if checkpoint == "model_final.pt":  # last: model_final.pt, else the newest readable training checkpoint
        saved, path = _final_or_latest(run_dir)
    else:
        if not path.is_file() and checkpoint == BEST_FILE:
            raise CheckpointError(f"{path}: no best checkpoint in the run: it is kept when training evaluates as it "
                                  f"goes (solver.eval_period > 0 with data.val); use the last checkpoint instead")
        saved = load_checkpoint(path, map_location="cpu")
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise CheckpointError(f"{path}: no 'model' state dict in it (a checkpoint written by `workbench train` has "
                              f"one)")
    model = build_model(cfg.model)
    own = model.state_dict()
    missing = [k for k in own if k not in saved["model"]]
    unexpected = [k for k in saved["model"] if k not in own]
    wrong = [f"{k} {tuple(v.shape)} (config.yaml builds {tuple(own[k].shape)})" for k, v in saved["model"].items()
             if k in own and torch.is_tensor(v) and v.shape != own[k].shape]
    if missing or unexpected or wrong:
        first = (wrong or [f"missing {k}" for k in missing] or [f"unexpected {k}" for k in unexpected])[0]
        raise CheckpointError(f"{path} does not fit the model {cfg_path} describes ({len(wrong)} tensors of "
                              f"another shape, {len(missing)} missing, {len(unexpected)} unexpected; first: {first}): "
                              f"was config.yaml edited after training?")
    model.load_state_dict(saved["model"])
    step = saved.get("step")
    what = f"step {step}" if step is not None else "final weights"
    if "metric" in saved:
        what += f", {saved['metric']} {float(saved['value']):.4g}"
    return LoadedRun(cfg, model.to(device).eval(), run_dir, f"{path.name} ({what})")


def _final_or_latest(run_dir: Path) -> tuple[dict, Path]:
    """model_final.pt; when it is missing or unreadable, checkpoint.load_latest's newest readable checkpoint."""
    import sys

    final = run_dir / "model_final.pt"
    if final.is_file():
        try:
            return load_checkpoint(final, map_location="cpu"), final
        except CheckpointError as err:
            print(f"[workbench] WARNING: {err}; using the newest readable training checkpoint instead",
                  file=sys.stderr, flush=True)
    elif not (run_dir / "last.pt").is_file() and not step_files(run_dir):
        raise FileNotFoundError(f"{run_dir}: no model_final.pt, last.pt or last_step<N>.pt: the run has no weights "
                                "yet (train it first)")
    return load_latest(run_dir, map_location="cpu")


@torch.no_grad()
def predict_dataset(model: MultiTaskMask2Former, dataset, batch_size: int = 4, progress: bool = True,
                    limit: int | None = None) -> dict[Any, dict]:
    """{image_id: prediction dict on CPU} for every item of `dataset` (eval mode, no augmentation)."""
    model.eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    out: dict[Any, dict] = {}
    for start in tqdm(range(0, n, batch_size), desc="predict", disable=not progress, dynamic_ncols=True):
        items = [dataset[i] for i in range(start, min(n, start + batch_size))]
        for item, pred in zip(items, model(items)):
            out[item.get("image_id", start)] = _to_cpu(pred)
    return out


def _to_cpu(x):
    if torch.is_tensor(x):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    return x


def eval_dataset(cfg: RunConfig, coco_path: str | None = None, image_root: str | None = None):
    """The evaluation split as a dataset with test-time resizing (no random augmentation)."""
    from workbench.data.segmentation import open_dataset
    from workbench.data.transforms import build_augmentation

    explicit = coco_path is not None  # `eval --data`: the run's data.val was checked against data.train in training
    if coco_path is None:
        coco_path, image_root = cfg.data.val, image_root or cfg.data.image_root or None
    if not coco_path:
        raise ConfigError("no evaluation data: set data.val in the config or pass --data")
    from workbench.engine.preflight import check_model_matches_data

    dataset = open_dataset(coco_path, cfg.model.task, image_root,
                           augmentation=build_augmentation(cfg.augment, train=False))
    check_model_matches_data(cfg.model, dataset.schema, str(coco_path))
    if explicit:
        check_eval_kinds(cfg, dataset.schema, str(coco_path))
    return dataset


def check_eval_kinds(cfg: RunConfig, schema, where: str) -> None:
    """The data scored must give each group the kind the run's training data gave it (preflight.py); when the
    training data is gone, a multi-label head scored on single-label data is said out loud (it may be an
    ablation of `kind`: evaluate.align_kinds scores it as its most probable value)."""
    import sys

    from workbench.data.segmentation import source_schema
    from workbench.engine.preflight import check_kinds_agree

    if cfg.data.train and Path(cfg.data.train).exists():
        if Path(cfg.data.train).resolve() != Path(where).resolve():
            check_kinds_agree(source_schema(cfg.data.train), cfg.data.train, schema, where)
        return
    single = set(schema.single_label_names)
    scored = [a.name for a in cfg.model.attributes if a.multi and a.name in single]
    if scored:
        print(f"[workbench] NOTE: {where} labels {scored} with one value per instance; the model's heads for "
              f"them are multi-label (sigmoid): each is scored as its most probable value (the run's training "
              f"data {cfg.data.train or '(none)'} is not there to say which kind it trained on)",
              file=sys.stderr, flush=True)


def evaluate_model(model: MultiTaskMask2Former, coco_path: str, dataset, eval_cfg: EvalConfig,
                   progress: bool = True, batch_size: int = 4):
    """Predict every image of `dataset` and score it: against `coco_path` for an instance model
    (engine/evaluate.py: segm AP, joint AP, attributes); PQ (+ joint PQ, attributes) and mIoU for a panoptic
    one, mIoU for a semantic one (engine/evaluate_segments.py)."""
    from workbench.engine.evaluate import evaluate_predictions

    if model.cfg.task != "instance":
        from workbench.data.io import data_record
        from workbench.engine.evaluate_segments import evaluate_segments

        result = evaluate_segments(model, dataset, model.cfg.task, progress=progress, batch_size=batch_size,
                                   semantic=True)
        import dataclasses

        return dataclasses.replace(result, data=data_record(coco_path if Path(coco_path).is_file()
                                                            else Path(coco_path) / "classes.yaml"))
    preds = predict_dataset(model, dataset, batch_size=batch_size, progress=progress)
    return evaluate_predictions(coco_path, preds, dataset.schema, eval_cfg)
