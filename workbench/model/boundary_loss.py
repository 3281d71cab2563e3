"""Boundary-aware mask loss: compare the edge maps of predicted and ground-truth masks.

The per-point BCE + dice of Mask2Former weigh every pixel alike, so a mask that is right in its interior but
ragged along its outline costs little. This term looks only at outlines (the idea behind InverseForm and
boundary IoU): an edge filter turns a mask into a boundary map, and the predicted map (the filter applied to
sigmoid probabilities, so it is differentiable) is pushed towards the ground-truth one with BCE + dice.

    edge_map(masks (N, H, W), kernel) -> (N, H, W) in [0, 1]
        "laplacian": |4-neighbour Laplacian|, clipped to 1: a two-pixel band across each outline.
        "sobel":     Sobel gradient magnitude / 4, clipped to 1 (a step of 1 gives 1).
        Replicate padding: the image border is not an outline.
    boundary_loss(mask_logits (N, H, W), target_masks (N, H, W), num_masks) -> 0-dim tensor
        sum over masks of (mean pixel BCE + (1 - soft dice)) on the boundary maps, / num_masks; the BCE is
        taken relative to its minimum (the target map's entropy), so it is 0 when the maps agree.

A perfect prediction (probabilities equal to the target) gives identical maps: the loss is 0 up to EPS, which
clamps the maps away from 0 and 1 inside the BCE so its gradient stays finite.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["KERNELS", "boundary_loss", "edge_map"]

EPS = 1e-6
KERNELS = ("laplacian", "sobel")


def edge_map(masks: torch.Tensor, kernel: str = "laplacian") -> torch.Tensor:
    """masks (N, H, W), values in [0, 1] (binary or probabilities) -> boundary map (N, H, W) in [0, 1].

    The 3x3 filters are written as shifted slices rather than conv2d: for the small mask maps of a training
    step this is several times faster on CPU, and it is the same arithmetic.
    """
    if kernel not in KERNELS:
        raise ValueError(f"edge kernel must be one of {KERNELS}, got {kernel!r}")
    if masks.dim() != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(masks.shape)}")
    x = masks if masks.is_floating_point() else masks.float()
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (N, H+2, W+2)

    def at(dy: int, dx: int) -> torch.Tensor:  # the neighbour at offset (dy, dx) of every pixel, (N, H, W)
        h, w = x.shape[-2:]
        return p[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    if kernel == "laplacian":  # [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
        edges = (at(-1, 0) + at(1, 0) + at(0, -1) + at(0, 1) - 4 * x).abs()
    else:  # Sobel: gx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], gy its transpose
        gx = at(-1, 1) + 2 * at(0, 1) + at(1, 1) - at(-1, -1) - 2 * at(0, -1) - at(1, -1)
        gy = at(1, -1) + 2 * at(1, 0) + at(1, 1) - at(-1, -1) - 2 * at(-1, 0) - at(-1, 1)
        edges = (gx.pow(2) + gy.pow(2) + EPS**2).sqrt() / 4  # eps: finite gradient on flat regions
    return edges.clamp(max=1.0)


def boundary_loss(mask_logits: torch.Tensor, target_masks: torch.Tensor, num_masks: float,
                  kernel: str = "laplacian", valid: torch.Tensor | None = None) -> torch.Tensor:
    """mask_logits (N, H, W), target_masks (N, H, W) in [0, 1] (binary, or area-resized binary) at the same
    size -> 0-dim loss (see the module docstring). `valid` (N, H, W) {0, 1}: the BCE mean and the dice sums run
    over valid pixels only (ignore regions, see ignore.py); None = all pixels.

    N = 0 gives a zero that keeps the graph (zero gradient), like the mask and dice losses.
    """
    if mask_logits.dim() != 3 or mask_logits.shape != target_masks.shape:
        raise ValueError(f"boundary_loss: mask_logits {tuple(mask_logits.shape)} and target_masks "
                         f"{tuple(target_masks.shape)} must both be (N, H, W) of the same shape "
                         "(resize the targets to the prediction's size first)")
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0.0
    pred = edge_map(mask_logits.sigmoid(), kernel).flatten(1)
    target = edge_map(target_masks.to(pred.dtype), kernel).flatten(1)
    # BCE minus its minimum (the target's own entropy, nonzero where the map is fractional, e.g. Sobel or an
    # area-resized target): the same gradient as BCE, and 0 when the maps agree (this is KL(target || pred)).
    bce = (F.binary_cross_entropy(pred.clamp(EPS, 1 - EPS), target, reduction="none")
           - F.binary_cross_entropy(target.clamp(EPS, 1 - EPS), target, reduction="none"))
    if valid is None:
        bce = bce.mean(1)
    else:
        valid = valid.flatten(1).to(pred.dtype)
        bce = (bce * valid).sum(1) / valid.sum(1).clamp(min=1)
        pred, target = pred * valid, target * valid
    # squared-denominator (V-Net) dice: exactly 1 for identical maps even where they are fractional
    dice = 1 - (2 * (pred * target).sum(1) + 1) / (pred.pow(2).sum(1) + target.pow(2).sum(1) + 1)
    return (bce + dice).sum() / num_masks
