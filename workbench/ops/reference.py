"""Pure-PyTorch multi-scale deformable attention (bilinear sampling through `grid_sample`).

The ground truth the compiled kernels are tested against, the fallback when they are not built, and what an
ONNX export contains (standard ops only: GridSample needs opset >= 16).
Sampling follows `grid_sample(align_corners=False, padding_mode="zeros")`: location (0, 0) is the top-left
corner of the top-left pixel, so pixel centres sit at (i + 0.5) / W; samples outside the map read zeros.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def ms_deform_attn_reference(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """value (N, S, M, D), spatial_shapes (L, 2) as (H, W), level_start_index (L,),
    sampling_locations (N, Lq, M, L, P, 2) as (x, y) in [0, 1], attention_weights (N, Lq, M, L, P)
    -> (N, Lq, M * D).
    """
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    starts = [int(s) for s in level_start_index.tolist()]
    return ms_deform_attn_levels(value, shapes, sampling_locations, attention_weights, starts)


def ms_deform_attn_levels(
    value: torch.Tensor,
    shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    starts: Sequence[int] | None = None,
) -> torch.Tensor:
    """The reference with the level shapes as Python (H, W) pairs instead of tensors: under `torch.export` they
    stay symbolic sizes, so an exported graph keeps a dynamic image size (reading them back from a tensor with
    `.tolist()` would freeze them). `starts` default to the running sum of H * W. Shapes as above."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    if starts is None:
        starts, offset = [], 0
        for h, w in shapes:
            starts.append(offset)
            offset = offset + h * w
    grids = 2.0 * sampling_locations - 1.0  # grid_sample wants [-1, 1]
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = value[:, starts[lvl] : starts[lvl] + h * w]  # (N, H*W, M, D)
        v = v.permute(0, 2, 3, 1).reshape(n * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(n * m, lq, num_points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    # (N*M, D, Lq, L*P) weighted by (N*M, 1, Lq, L*P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * num_points)
    out = (stacked * weights).sum(-1)  # (N*M, D, Lq)
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()
