"""Optimisation: `SolverConfig` (lr and its scaling rule, schedule, checkpoints, evaluation period), read by
engine/trainer.py."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CHECKPOINT_ACTIVATIONS", "SolverConfig"]

CHECKPOINT_ACTIVATIONS = ("none", "backbone", "decoder", "all")


@dataclass(frozen=True)
class SolverConfig:
    """Optimisation (engine/trainer.py). `base_lr` is for `reference_batch` images per step: with
    `scale_lr` the trainer uses base_lr * batch_size / reference_batch (the linear scaling rule) and prints it.
    Defaults are upstream Mask2Former's COCO schedule (AdamW 1e-4 at batch 16, poly, clip 0.01)."""

    base_lr: float = 1e-4
    reference_batch: int = 16
    batch_size: int = 16
    scale_lr: bool = True
    weight_decay: float = 0.05
    backbone_lr_multiplier: float = 0.1
    # lr x this for the heads your data defines (class head, attribute heads), e.g. > 1 when fine-tuning
    head_lr_multiplier: float = 1.0
    # "none" | "backbone" (backbone frozen) | "trunk" (all but the class and attribute heads frozen): frozen
    # parameters get requires_grad=False and no optimizer state
    freeze: str = "none"
    max_iter: int = 368750
    warmup_iters: int = 10
    warmup_factor: float = 1.0
    schedule: str = "poly"  # "poly" | "step"
    poly_power: float = 0.9
    steps: tuple[int, ...] = (327778, 355092)
    gamma: float = 0.1
    clip_grad_norm: float = 0.01  # upstream clips the full model's gradient norm; 0 = off
    amp: str = "off"  # "off" | "bf16" (CPU or CUDA) | "fp16" (CUDA): autocast; changes the numbers
    checkpoint_period: int = 5000
    log_period: int = 20
    num_workers: int = 0
    keep_checkpoints: int = 2  # last.pt + this many last_step<N>.pt in all; resume falls back to an older one
    compile: bool = False  # torch.compile the backbone and decoder: ~30 s first step, then ~0.97x on the demo
    # gradient accumulation: each optimizer step sums the gradients of this many batches of batch_size, normalised
    # as one batch of batch_size x accumulate (the effective batch: lr rule, warm-up and log use it)
    accumulate: int = 1
    # evaluate on data.val every this many steps (metrics.jsonl, TensorBoard, progress bar) and keep best.pt by
    # best_metric; 0 = only once, at the end
    eval_period: int = 0
    best_metric: str = "segm/AP"  # "segm/AP", "joint/AP", "attribute_accuracy/<name>", ...; panoptic and semantic
    # models: "panoptic/PQ" (their default), "joint_panoptic/PQ", "semantic/mIoU" (their default) ...
    # recompute activations in the backward instead of keeping them (torch.utils.checkpoint): less memory, ~1.3x
    # the step time; "none" | "backbone" (its stages) | "decoder" (pixel-decoder encoder + transformer decoder
    # layers) | "all"
    checkpoint_activations: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.batch_size <= 0 or self.reference_batch <= 0:
            raise ValueError("solver.batch_size and solver.reference_batch must be > 0")
        if not (self.base_lr > 0 and self.max_iter > 0):  # `not >`: a NaN base_lr fails too
            raise ValueError("solver.base_lr and solver.max_iter must be > 0")
        if self.warmup_iters < 0 or self.num_workers < 0:
            raise ValueError(f"solver.warmup_iters and solver.num_workers must be >= 0, got {self.warmup_iters} and "
                             f"{self.num_workers}")
        if self.schedule not in ("poly", "step"):
            raise ValueError(f"solver.schedule must be 'poly' or 'step', got {self.schedule!r}")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"solver.amp must be off|bf16|fp16, got {self.amp!r}")
        if self.freeze not in ("none", "backbone", "trunk"):
            raise ValueError(f"solver.freeze must be 'none', 'backbone' or 'trunk', got {self.freeze!r}")
        if self.head_lr_multiplier < 0 or self.backbone_lr_multiplier < 0:
            raise ValueError("solver.head_lr_multiplier and solver.backbone_lr_multiplier must be >= 0")
        if self.keep_checkpoints < 1:
            raise ValueError(f"solver.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.checkpoint_period <= 0 or self.log_period <= 0:
            raise ValueError("solver.checkpoint_period and solver.log_period must be > 0")
        if isinstance(self.accumulate, bool) or not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise ValueError(f"solver.accumulate must be an integer >= 1 (batches per optimizer step), got "
                             f"{self.accumulate!r}")
        if isinstance(self.eval_period, bool) or not isinstance(self.eval_period, int) or self.eval_period < 0:
            raise ValueError(f"solver.eval_period must be an integer >= 0 (0 = evaluate at the end only), got "
                             f"{self.eval_period!r}")
        if "/" not in self.best_metric:
            raise ValueError(f"solver.best_metric must be '<group>/<name>' as evaluation names it, e.g. 'segm/AP', "
                             f"'joint/AP' or 'attribute_accuracy/<attribute>'; got {self.best_metric!r}")
        if self.checkpoint_activations not in CHECKPOINT_ACTIVATIONS:
            raise ValueError(f"solver.checkpoint_activations must be one of {CHECKPOINT_ACTIVATIONS}, got "
                             f"{self.checkpoint_activations!r}")

    @property
    def effective_batch(self) -> int:
        """Images per optimizer step over all processes: batch_size (over all processes) x accumulate."""
        return self.batch_size * self.accumulate
