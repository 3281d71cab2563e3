"""Activation checkpointing (solver.checkpoint_activations): a segment's inner activations are not kept for the
backward but recomputed there from its inputs (torch.utils.checkpoint, non-reentrant), trading ~1/3 more compute
for memory. The numbers do not change:
- dropout and stochastic depth draw the same values when recomputed (`preserve_rng_state`: the global RNG is
  rewound for the recomputation); point sampling runs outside every segment (matcher and criterion, with their
  explicit torch.Generator), so it is drawn once;
- BatchNorm in training mode would update its running statistics a second time during the recomputation: the
  recomputation restores them afterwards, so a checkpointed step leaves the same statistics as a plain one.

A segment whose inputs require grad runs torch's reentrant variant: its forward records no graph at all, one
node for the whole segment. The non-reentrant variant records every op's node (each holding a placeholder for
its saved tensors) during the forward and keeps them until the backward; on CPU those small, long-lived
allocations land among the segment's freed activations and pin glibc's heap, so the freed memory was not
reused: the six encoder layers alone left ~550 MiB of free but unreturned heap at 512^2 (bench/memory.py: 'all'
at 0.41x of transformers', not the 0.4x aimed at). A segment whose inputs need no grad (the backbone's stem on
the images) stays non-reentrant: the reentrant one would give its parameters no gradient.

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
                # through .data: the recomputed BatchNorm nodes saved these buffers (their backward does not
                # read them in training mode), and a version bump would fail that backward
                buffer.data.copy_(value)


def run_segment(owner: nn.Module, segment: nn.Module | None, fn: Callable, *args):
    """fn(*args) (the forward of `segment`, a part of `owner`; None: one without BatchNorm), through
    torch.utils.checkpoint when `owner.checkpoint_segments` is set and autograd records (training); plainly
    otherwise (inference, no_grad, the flag off). Reentrant when a tensor input requires grad (see above)."""
    if not (getattr(owner, "checkpoint_segments", False) and torch.is_grad_enabled()):
        return fn(*args)
    reentrant = any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
    return checkpoint(_Recomputable(fn, segment), *args, use_reentrant=reentrant, preserve_rng_state=True)


class _Recomputable:
    """fn, whose second and later calls (checkpoint's recomputations) leave `segment`'s BatchNorm buffers as
    they were (the reentrant variant takes no context_fn, so both variants restore them here)."""

    def __init__(self, fn: Callable, segment: nn.Module | None) -> None:
        self.fn, self.segment, self.calls = fn, segment, 0

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 1 or self.segment is None:
            return self.fn(*args)
        with _RestoreRunningStats(self.segment):
            return self.fn(*args)


def set_checkpointing(model: nn.Module, mode: str) -> None:
    """Turn checkpointing on for `mode`'s parts of a MultiTaskMask2Former (`none` turns it off everywhere)."""
    if mode not in MODES:
        raise ValueError(f"checkpoint_activations must be one of {tuple(MODES)}, got {mode!r}")
    for part in ("backbone", "pixel_decoder", "decoder"):
        getattr(model, part).checkpoint_segments = part in MODES[mode]
