"""Activation checkpointing (solver.checkpoint_activations): a segment's inner activations are not kept for the
backward but recomputed there from its inputs (torch.utils.checkpoint, non-reentrant), trading ~1/3 more compute
for memory. The numbers do not change:
- dropout and stochastic depth draw the same values when recomputed (`preserve_rng_state`: the global RNG is
  rewound for the recomputation); point sampling runs outside every segment (matcher and criterion, with their
  explicit torch.Generator), so it is drawn once;
- BatchNorm in training mode would update its running statistics a second time during the recomputation: the
  recomputation restores them afterwards, so a checkpointed step leaves the same statistics as a plain one.

The segments (each module's `checkpoint_segments` flag, set by `MultiTaskMask2Former.checkpoint_activations`):
the backbone's stem and stages, the pixel decoder's encoder layers and its 1/4-resolution FPN level, the
transformer decoder's layers. Measured (bench/memory.py): a whole stage per segment kept less at the peak than
one segment per block (the block outputs it keeps outweigh the smaller recomputation).
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

MODES = {"none": (), "backbone": ("backbone",), "decoder": ("pixel_decoder", "decoder"),
         "all": ("backbone", "pixel_decoder", "decoder")}


class _RestoreRunningStats(contextlib.AbstractContextManager):
    """Around a recomputation: BatchNorm buffers (running mean/var, batches tracked) of `module` put back as
    they were, so the recomputed forward does not count the batch twice."""

    def __init__(self, module: nn.Module) -> None:
        self.norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                      and m.track_running_stats and m.training]
        self.saved: list[list[torch.Tensor]] = []

    def __enter__(self):
        self.saved = [[b.clone() for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
                      for m in self.norms]
        return self

    def __exit__(self, *exc) -> None:
        for m, saved in zip(self.norms, self.saved):
            for buffer, value in zip([b for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                                      if b is not None], saved):
                buffer.copy_(value)


def run_segment(owner: nn.Module, segment: nn.Module | None, fn: Callable, *args):
    """fn(*args) (the forward of `segment`, a part of `owner`; None: one without BatchNorm), through
    torch.utils.checkpoint when `owner.checkpoint_segments` is set and autograd records (training); plainly otherwise (inference, no_grad,
    the flag off)."""
    if not (getattr(owner, "checkpoint_segments", False) and torch.is_grad_enabled()):
        return fn(*args)
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True,
                      context_fn=lambda: (contextlib.nullcontext(), contextlib.nullcontext() if segment is None
                                          else _RestoreRunningStats(segment)))


def set_checkpointing(model: nn.Module, mode: str) -> None:
    """Turn checkpointing on for `mode`'s parts of a MultiTaskMask2Former (`none` turns it off everywhere)."""
    if mode not in MODES:
        raise ValueError(f"checkpoint_activations must be one of {tuple(MODES)}, got {mode!r}")
    for part in ("backbone", "pixel_decoder", "decoder"):
        getattr(model, part).checkpoint_segments = part in MODES[mode]
