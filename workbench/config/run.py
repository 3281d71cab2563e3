"""One training run: `RunConfig` (model, solver, data, augmentation, evaluation, logging, seed, device), what
`workbench train --config FILE.yaml` reads, and `LogConfig`."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from workbench.config.data import AugmentConfig, DataConfig
from workbench.config.evaluation import EvalConfig
from workbench.config.model import ModelConfig
from workbench.config.solver import SolverConfig

__all__ = ["DEVICE_SPEC", "LogConfig", "RunConfig"]

DEVICE_SPEC = re.compile(r"auto|cpu|cuda(?::\d+)?")  # what device.resolve_device reads (any case, spaces around)


@dataclass(frozen=True)
class LogConfig:
    """What a run writes besides metrics.jsonl (engine/tracking.py). tensorboard: event files in the run
    directory with the training losses and lr, each evaluation's metrics and prediction overlays."""

    tensorboard: bool = True


@dataclass(frozen=True)
class RunConfig:
    """One training run: what `workbench train --config FILE.yaml` reads (see config_file.py).

    `model.num_classes` / `model.attributes` left out of the YAML are taken from the training data's schema.
    """

    model: ModelConfig
    solver: SolverConfig = field(default_factory=SolverConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"; the CLI's --device overrides it

    def __post_init__(self) -> None:
        if not DEVICE_SPEC.fullmatch(str(self.device).strip().lower()):
            raise ValueError(f"device: {self.device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.model.task != "instance" and self.solver.best_metric == SolverConfig.best_metric:
            # the default names instance segmentation's headline; a panoptic or semantic model has its own
            headline = {"panoptic": "panoptic/PQ", "semantic": "semantic/mIoU"}[self.model.task]
            object.__setattr__(self, "solver", dataclasses.replace(self.solver, best_metric=headline))
