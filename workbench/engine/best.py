"""The best checkpoint: evaluation during training (`solver.eval_period`) keeps `best.pt` by `solver.best_metric`.

`best.pt` holds the weights, the config, the step, the metric's name and value and the whole evaluation (as in
metrics.json); it is written atomically like every checkpoint. Higher is better for every metric evaluation
produces (AP, accuracy, F1). The trainer's resumable checkpoints carry the best-so-far value, so a resumed run
replaces best.pt only when it does better.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import ModelConfig, RunConfig
from workbench.config_file import ConfigError, to_dict
from workbench.engine.checkpoint import BEST_FILE, save_checkpoint
from workbench.engine.evaluate import AP_KEYS


def metric_names(model: ModelConfig) -> list[str]:
    """Every name `EvalResult.scalars()` (or, for a panoptic or semantic model, `SegmentationEvalResult.scalars()`)
    can produce for a model with these attribute groups."""
    semantic = [f"semantic/{key}" for key in ("mIoU", "fwIoU", "mACC", "pACC")]
    if model.task == "semantic":
        return semantic
    if model.task == "panoptic":
        pq = [f"{key}{suffix}" for suffix in ("", "_th", "_st") for key in ("PQ", "SQ", "RQ")]
        names = [f"{group}/{key}" for group in ("panoptic", "joint_panoptic") for key in pq]
        names += [f"panoptic_attribute_accuracy/{a.name}" for a in model.attributes if not a.multi]
        names += [f"panoptic_attribute_f1/{a.name}/{average}" for a in model.attributes if a.multi
                  for average in ("micro", "macro")]
        return names + semantic
    names = [f"{group}/{key}" for group in ("segm", "joint") for key in AP_KEYS]
    names += [f"attribute_accuracy/{a.name}" for a in model.attributes if not a.multi]
    multi = [a.name for a in model.attributes if a.multi]
    names += [f"attribute_f1/{name}/{average}" for name in multi for average in ("micro", "macro")]
    if multi:
        names += [f"iou_f1/{key}" for key in AP_KEYS]
    return names


def check_best_metric(name: str, model: ModelConfig) -> None:
    """Before training: `solver.best_metric` must be a name evaluation produces for this model."""
    known = metric_names(model)
    if name not in known:
        raise ConfigError(f"solver.best_metric: {name!r} is not a metric evaluation produces for this model; "
                          f"choose one of {known}")


@dataclass(frozen=True)
class Best:
    """The best evaluation so far: `metric` (a name of EvalResult.scalars()), its `value` and training `step`."""

    metric: str
    value: float
    step: int

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "step": self.step}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Best | None":
        return None if not data else cls(str(data["metric"]), float(data["value"]), int(data["step"]))

    def describe(self) -> str:
        return f"step {self.step}, {self.metric} {self.value:.4g}"


def improved(best: Best | None, metric: str, metrics, step: int) -> Best | None:
    """The new Best when `metrics` (an EvalResult) beats `best` on `metric` (ties keep the earlier step), else
    None. A value evaluation left undefined (e.g. an accuracy with no true positives) never becomes best."""
    value = metrics.scalars().get(metric)
    if value is None or (best is not None and best.metric == metric and value <= best.value):
        return None
    return Best(metric, value, step)


def save_best(run_dir: str | os.PathLike, best: Best, model_state: dict, config: dict, metrics) -> Path:
    path = Path(run_dir) / BEST_FILE
    save_checkpoint(path, {"model": model_state, "config": config, **best.to_dict(),
                           "metrics": metrics.to_dict()})
    return path


class PeriodicEvaluation:
    """solver.eval_period: evaluate the model on data.val, log the metrics to TensorBoard (eval/<name> at the
    step), write best.pt when solver.best_metric improved, and give the metrics.jsonl record ({"step", "eval":
    {name: value}, "best": ...}). The validation set is read once."""

    def __init__(self, cfg: RunConfig, run_dir: str | os.PathLike) -> None:
        from workbench.engine.inference import eval_dataset

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.dataset = eval_dataset(cfg)

    def __call__(self, model, step: int, best: Best | None, tensorboard) -> tuple[Any, Best | None, dict]:
        """(EvalResult, the new Best or None, the metrics.jsonl record) of `model` at training `step`."""
        from workbench.engine.inference import evaluate_model

        metrics = evaluate_model(model, self.cfg.data.val, self.dataset, self.cfg.eval, progress=False)
        model.train()
        new_best = improved(best, self.cfg.solver.best_metric, metrics, step)
        if new_best is not None:
            metrics.checkpoint = {"file": BEST_FILE, **new_best.to_dict()}
            save_best(self.run_dir, new_best, model.state_dict(), to_dict(self.cfg), metrics)
        current = new_best or best
        if tensorboard is not None:
            tensorboard.evaluation(step, metrics)
        record = {"step": step, "eval": metrics.scalars(), "best": current.to_dict() if current else None}
        return metrics, new_best, record
