"""TensorBoard event files in the run directory, beside metrics.jsonl: `tensorboard --logdir runs/` compares runs
(an ablation's cells are run directories too).

Scalars: `train/<term>` (the weighted final-stage losses and `train/total`) and `train/lr` at every logged
training step (solver.log_period); at each evaluation `eval/segm/<AP key>`, `eval/joint/<AP key>` (AP with
every labeled attribute right, in %), `eval/attribute_accuracy/<name>` (single-label groups),
`eval/attribute_f1/<name>/{micro,macro}` (multi-label groups) and `eval/iou_f1/<AP key>` (Fashionpedia's
AP(IoU+F1), when measured), plus prediction overlays as images `eval/overlay/<image id>`. Steps are training
steps, as in metrics.jsonl. `log.tensorboard: false` writes none.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from workbench.config import LogConfig


class TensorBoardLog:
    """One run's event writer. `purge_step`: events at or after it from an earlier, interrupted run of the same
    directory are hidden (a resumed run passes the first step it logs: the checkpoint's step + 1)."""

    def __init__(self, run_dir: str | os.PathLike, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def training(self, record: Mapping[str, float]) -> None:
        """One metrics.jsonl record {"step", "lr", "time", "data_time", "total", "loss_*"...} as train/<key>
        scalars (data_time: mean seconds per step spent waiting for the batch since the previous record)."""
        step = int(record["step"])
        for key, value in record.items():
            if key not in ("step", "time"):
                self.writer.add_scalar(f"train/{key}", float(value), step)
        self.writer.flush()  # on disk at every logged step, also when training stops on an error later

    def evaluation(self, step: int, metrics) -> None:
        """An `EvalResult` (engine/evaluate.py) as eval/<name> scalars (`EvalResult.scalars`: undefined values
        are left out)."""
        for name, value in metrics.scalars().items():
            self.writer.add_scalar(f"eval/{name}", value, step)
        self.writer.flush()

    def images(self, step: int, pngs: Sequence[str | os.PathLike], tag: str = "eval/overlay") -> None:
        """PNG files (the pipeline's overlays/) as images `<tag>/<file stem>`."""
        from PIL import Image

        for path in pngs:
            array = np.asarray(Image.open(path).convert("RGB"))
            self.writer.add_image(f"{tag}/{Path(path).stem}", array, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


def open_tensorboard(run_dir: str | os.PathLike, cfg: LogConfig, purge_step: int | None = None) -> TensorBoardLog | None:
    """A writer into `run_dir`, or None when `cfg.tensorboard` is off."""
    return TensorBoardLog(run_dir, purge_step) if cfg.tensorboard else None


def log_evaluation(run_dir: str | os.PathLike, cfg: LogConfig, step: int, metrics,
                   overlays: Sequence[str | os.PathLike] = (), scalars: bool = True) -> None:
    """One evaluation (an `EvalResult`) and its overlay PNGs into the run's events, at training step `step`
    (`scalars` False: the overlays only, the training loop logged the scalars at that step)."""
    tensorboard = open_tensorboard(run_dir, cfg)
    if tensorboard is not None:
        if scalars:
            tensorboard.evaluation(step, metrics)
        tensorboard.images(step, overlays)
        tensorboard.close()
