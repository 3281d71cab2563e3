"""Learning rate: the linear scaling rule and the warmup + poly/step schedule.

The seed project trained at batch 2 with the lr tuned for batch 16 and lost most of its AP; the trainer
therefore scales by default and prints what it did.
"""
from __future__ import annotations

from dataclasses import dataclass

from workbench.config import SolverConfig


@dataclass(frozen=True)
class ScaledLR:
    lr: float
    message: str


def scaled_lr(solver: SolverConfig, batch_size: int | None = None) -> ScaledLR:
    """lr = base_lr * batch / reference_batch when `solver.scale_lr`, else base_lr; with a readable reason.

    `batch_size` is the total batch over all processes (defaults to `solver.batch_size`).
    """
    batch = solver.batch_size if batch_size is None else batch_size
    if not solver.scale_lr:
        return ScaledLR(solver.base_lr, f"lr {solver.base_lr:.3g} (linear scaling off; batch {batch}, "
                                        f"reference {solver.reference_batch})")
    lr = solver.base_lr * batch / solver.reference_batch
    return ScaledLR(lr, f"lr {lr:.3g} = base_lr {solver.base_lr:.3g} x batch {batch} / reference "
                        f"{solver.reference_batch} (linear scaling rule; solver.scale_lr: false keeps base_lr)")


def lr_factor(solver: SolverConfig, step: int) -> float:
    """Multiplier of the lr at `step` (0-based): linear warmup from `warmup_factor`, then poly or step decay."""
    if solver.schedule == "poly":
        decay = max(0.0, 1.0 - step / solver.max_iter) ** solver.poly_power
    else:
        decay = solver.gamma ** sum(1 for s in solver.steps if step >= s)
    if step < solver.warmup_iters:
        alpha = step / solver.warmup_iters
        decay *= solver.warmup_factor * (1 - alpha) + alpha
    return decay
