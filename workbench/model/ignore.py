"""Ignore regions (COCO crowd, label 255, labelme `__ignore__`) seen from the mask logits.

A target's `ignore` (H, W) bool is at input resolution; the mask logits are at stride 4. A logit *cell* is
ignored when at least half of the pixels it covers are. A sampled point is *valid* when its bilinear value
uses no ignored cell (every corner with a nonzero weight is a kept cell), so the loss at that point and its
gradient do not depend on any ignored cell's logit. The criterion ranks only valid points by uncertainty and
averages its mask, dice and boundary terms over valid points / pixels; the matcher's mask costs average over
valid points. The boundary term's targets are area-resized over kept pixels only (`kept_share`), so what a
target mask says on ignored pixels does not count either (semantic class masks are 0 on label 255). Whatever the model predicts on ignored pixels therefore changes neither which queries are
matched, nor which points are sampled, nor the losses or their gradients. Without an ignore region none of
this runs: the losses are computed exactly as before.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from workbench.model.points import point_sample


def ignored_cells(ignore: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """ignore (N, H, W) bool -> (N, h, w) float32 {0, 1}: 1 where at least half of the cell is ignored."""
    if ignore.shape[-2:] == tuple(size):
        return ignore.float()
    return (F.adaptive_avg_pool2d(ignore.float(), tuple(size)) >= 0.5).float()


def valid_points(cells: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """cells (N, h, w) from `ignored_cells`, coords (N, P, 2) in [0, 1] -> (N, P) bool: True where the point's
    bilinear sample touches no ignored cell (a sum of non-negative weights x {0, 1} is 0 only then)."""
    return point_sample(cells[:, None], coords)[:, 0] == 0


def kept_share(masks: torch.Tensor, kept: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """masks (N, H, W) {0, 1}, kept (N, H, W) {0, 1} (not ignored) -> (N, h, w): each cell's share of mask pixels
    among its kept pixels (0 where none is kept), so what a target says on ignored pixels changes nothing; equal
    to the plain area resize where a cell has no ignored pixel."""
    masks, kept = masks.float()[:, None], kept.float()[:, None]
    inside = F.adaptive_avg_pool2d(masks * kept, tuple(size))
    share = F.adaptive_avg_pool2d(kept, tuple(size))
    return torch.where(share > 0, inside / share.clamp(min=torch.finfo(share.dtype).tiny), 0.0)[:, 0]


def valid_pixels(cells: torch.Tensor) -> torch.Tensor:
    """cells (N, h, w) -> (N, h, w) float {0, 1}: 1 where no cell of the 3 x 3 neighbourhood is ignored (an edge
    filter's footprint, boundary_loss.py)."""
    return 1.0 - F.max_pool2d(cells[:, None], 3, stride=1, padding=1)[:, 0]


def image_ignore(targets: Sequence[dict]) -> list[torch.Tensor | None]:
    """Each target's `ignore` (H, W) bool, None where it has none or it is empty."""
    out = []
    for t in targets:
        m = t.get("ignore")
        out.append(None if m is None or not bool(torch.as_tensor(m).any()) else torch.as_tensor(m).bool())
    return out
