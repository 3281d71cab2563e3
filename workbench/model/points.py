"""Point sampling shared by the matcher and the criterion (Mask2Former computes mask losses on points).

All randomness goes through an optional `torch.Generator` so runs and tests are reproducible.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def rand(shape, *, device, dtype=torch.float32, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform [0, 1) drawn on the generator's device (CPU by default), then moved to `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of `inputs` (N, C, H, W) at `coords` (N, P, 2) as (x, y) in [0, 1] -> (N, C, P).

    When every map is sampled at the same points (`coords` is one set expanded over N, as in the matcher) and
    C == 1, the N maps are sampled as N channels of one map: the corner weights are computed once instead of N
    times, and each output is the same four products and sums, so the result is bit-identical (0.7x the time
    at the matcher's 100 queries x 12,544 points).
    """
    if inputs.shape[1] == 1 and coords.shape[0] > 1 and coords.stride(0) == 0:
        grid = (2.0 * coords[:1] - 1.0).unsqueeze(2)  # (1, P, 1, 2)
        shared = F.grid_sample(inputs.transpose(0, 1), grid.to(inputs.dtype), align_corners=False)  # (1, N, P, 1)
        return shared.squeeze(3).transpose(0, 1)
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # (N, P, 1, 2)
    return F.grid_sample(inputs, grid.to(inputs.dtype), align_corners=False).squeeze(3)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Higher near the decision boundary: -|logit|. logits (N, 1, P) -> (N, 1, P)."""
    return -logits.abs()


def uncertain_point_coords(
    mask_logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
    generator: torch.Generator | None = None,
    valid: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """PointRend's sampling: most points where the prediction is least certain, the rest uniform.

    mask_logits (N, 1, H, W) -> coords (N, num_points, 2) in [0, 1]. `valid`: coords (N, S, 2) -> (N, S) bool;
    a candidate it rejects (on an ignore region, see ignore.py) is never ranked as uncertain, so which points
    are picked does not depend on the logits there. None = every candidate (the random stream is the same).
    """
    n = mask_logits.shape[0]
    device = mask_logits.device
    num_sampled = int(num_points * oversample_ratio)
    coords = rand((n, num_sampled, 2), device=device, generator=generator)
    point_unc = uncertainty(point_sample(mask_logits, coords))  # (N, 1, num_sampled)
    if valid is not None:
        point_unc = point_unc.masked_fill(~valid(coords)[:, None], float("-inf"))
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(point_unc[:, 0, :], k=num_uncertain, dim=1, sorted=False)[1]  # the set matters, not its order
    idx = idx + num_sampled * torch.arange(n, device=device)[:, None]
    picked = coords.view(-1, 2)[idx.view(-1), :].view(n, num_uncertain, 2)
    if num_random > 0:
        picked = torch.cat([picked, rand((n, num_random, 2), device=device, generator=generator)], dim=1)
    return picked
