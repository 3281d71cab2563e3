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
from workbench.engine.checkpoint import BEST_FILE, CheckpointError, load_checkpoint
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
    if not path.is_file() and checkpoint == "model_final.pt":
        path = run_dir / "last.pt"
    if not path.is_file() and checkpoint == BEST_FILE:
        raise CheckpointError(f"{path}: no best checkpoint in the run: it is kept when training evaluates as it goes "
                              f"(solver.eval_period > 0 with data.val); use the last checkpoint instead")
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
    from workbench.data.dataset import CocoAttributeDataset
    from workbench.data.transforms import build_augmentation

    if coco_path is None:
        coco_path, image_root = cfg.data.val, image_root or cfg.data.image_root or None
    if not coco_path:
        raise ConfigError("no evaluation data: set data.val in the config or pass --data")
    from workbench.engine.preflight import check_model_matches_data

    dataset = CocoAttributeDataset(coco_path, image_root, augmentation=build_augmentation(cfg.augment, train=False))
    check_model_matches_data(cfg.model, dataset.schema, str(coco_path))
    return dataset


def evaluate_model(model: MultiTaskMask2Former, coco_path: str, dataset, eval_cfg: EvalConfig,
                   progress: bool = True, batch_size: int = 4):
    """Predict every image of `dataset` and score it against `coco_path` (engine/evaluate.py)."""
    from workbench.engine.evaluate import evaluate_predictions

    preds = predict_dataset(model, dataset, batch_size=batch_size, progress=progress)
    return evaluate_predictions(coco_path, preds, dataset.schema, eval_cfg)
