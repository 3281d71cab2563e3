"""Gradient accumulation: one optimizer step's forward and backward over its micro-batches.

The effective batch is solver.batch_size (over all processes) x solver.accumulate. Each micro-batch's loss
terms are normalised over the whole effective batch (`EffectiveBatch`, model/criterion.py), so the gradients
the micro-batches add up in `.grad` (and DDP averages over processes) are those of one batch of all of them.
"""
from __future__ import annotations

import contextlib
import functools
import math
import operator
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from workbench.model import MultiTaskMask2Former
from workbench.model.criterion import EffectiveBatch


def effective_batch(model: MultiTaskMask2Former, micro_batches: list[list[dict]], world_size: int = 1
                    ) -> EffectiveBatch | None:
    """The loss denominators of the whole optimizer step (this process's micro-batches, summed over processes);
    None for one micro-batch on one process, whose loss normalises over itself exactly as without."""
    if len(micro_batches) == 1 and world_size == 1:
        return None
    totals = functools.reduce(operator.add, (model.loss_totals(micro) for micro in micro_batches))
    if world_size > 1:
        summed = totals.to_tensor().to(model.device)
        dist.all_reduce(summed)
        totals = totals.with_values(summed.cpu())
    return EffectiveBatch(totals, world_size)


def accumulate_gradients(net: nn.Module, micro_batches: list[list[dict]], generator: torch.Generator,
                         effective: EffectiveBatch | None, scaler: torch.amp.GradScaler,
                         autocast: Callable[[], contextlib.AbstractContextManager],
                         on_nonfinite: Callable[[dict, list[dict]], None]) -> dict[str, float]:
    """Forward and backward of each micro-batch into the parameters' .grad (zeroed by the caller), normalised over
    the whole step (`effective`), so the summed gradients are those of one batch of all the micro-batches.
    Under DDP only the last backward all-reduces the gradients (`no_sync` on the others). One host sync per
    micro-batch reads every term for the NaN guard and the log. Returns each term summed over the micro-batches:
    the step's loss."""
    summed: dict[str, float] = {}
    for index, micro in enumerate(micro_batches):
        inner = index < len(micro_batches) - 1 and isinstance(net, nn.parallel.DistributedDataParallel)
        with net.no_sync() if inner else contextlib.nullcontext():
            with autocast():
                losses = net(micro, generator=generator, effective=effective)
            total = sum(losses.values())
            values = dict(zip([*losses, "total"], torch.stack([v.detach().float() for v in losses.values()]
                                                               + [total.detach().float()]).tolist()))
            if not all(math.isfinite(v) for v in values.values()):
                on_nonfinite(losses, micro)
            scaler.scale(total).backward()
        for key, value in values.items():
            summed[key] = summed[key] + value if key in summed else value
    return summed
