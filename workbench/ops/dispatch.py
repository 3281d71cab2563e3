"""Backend selection for multi-scale deformable attention.

Foundation version: only the PyTorch reference exists. The compiled CPU/CUDA kernels (issue 3) plug in here.
"""
from __future__ import annotations

import torch

from workbench.ops.reference import ms_deform_attn_reference

BACKENDS = ("auto", "reference")


def backend_info() -> dict:
    """What is built and usable in this process."""
    return {"compiled": False, "backends": ["reference"], "reason": "compiled extension not built yet"}


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
) -> torch.Tensor:
    """See `ms_deform_attn_reference` for layouts. -> (N, Lq, M*D)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
