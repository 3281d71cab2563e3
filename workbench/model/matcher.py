"""Hungarian matching of queries to ground-truth instances, with attribute costs.

cost(q, t) = w_class * -p_q[class_t] + sum_a w_a * -p_q^a[attr_t^a] + w_mask * BCE + w_dice * dice,
the mask terms on points shared by all pairs. Without the attribute terms, matching ignores attributes and
every head learns "no object" for them (a seed bug); `cost_attributes={name: 0}` switches one off; an
unlabeled attribute (-1) adds no cost. A multi-label group (named in `multi_label`) costs the per-query mean
binary cross-entropy of its K sigmoid logits against the target's multi-hot vector; instances whose group is
unlabeled (`attribute_labeled[name]` False) add no cost. Ignore regions (a target's `ignore` (H, W)): the
mask costs average over the points that touch no ignored logit cell (ignore.py), so predictions there do not
change the matching; without one the costs are upstream's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from workbench.model.ignore import ignored_cells, image_ignore, valid_points
from workbench.model.outputs import ModelOutput
from workbench.model.points import point_sample, rand

# {"labels": (T,), "masks": (T, H, W), "attributes": {name: (T,) single | (T, K) multi-hot},
#  "attribute_labeled": {name: (T,) bool} for multi groups (absent = every instance labeled)}
Target = Mapping[str, object]

# Finite stand-in for NaN/inf costs so scipy never sees them (such a pair is simply never preferred).
COST_GUARD = 1e8


def batch_class_cost(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """probs (Q, C+1) softmax, labels (T,) -> (Q, T): -probability of each target's class.
    Batched: probs (B, Q, C+1), labels (B, T) -> (B, Q, T)."""
    if probs.dim() == 2:
        return -probs[:, labels]
    return -probs.gather(2, labels[:, None, :].expand(-1, probs.shape[1], -1))


def batch_attribute_cost(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """probs (Q, K+1) softmax, values (T,) with -1 = unlabeled -> (Q, T); unlabeled columns cost 0.
    Batched: probs (B, Q, K+1), values (B, T) -> (B, Q, T)."""
    labeled = values >= 0
    return batch_class_cost(probs, values.clamp(min=0)) * labeled[..., None, :].to(probs.dtype)


def batch_multilabel_cost(logits: torch.Tensor, multi_hot: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    """logits (..., Q, K), multi_hot (..., T, K) in {0, 1}, labeled (..., T) bool -> (..., Q, T): mean BCE over
    the K values; unlabeled columns cost 0."""
    return batch_sigmoid_ce_cost(logits, multi_hot.to(logits.dtype)) * labeled[..., None, :].to(logits.dtype)


def labeled_mask(target: Target, name: str, num_instances: int, device) -> torch.Tensor:
    """(T,) bool: which instances carry multi group `name` (`attribute_labeled[name]`; absent = all)."""
    labeled = (target.get("attribute_labeled") or {}).get(name)
    if labeled is None:
        return torch.ones(num_instances, dtype=torch.bool, device=device)
    return torch.as_tensor(labeled, device=device).bool()


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor,
                          valid: torch.Tensor | None = None) -> torch.Tensor:
    """inputs (..., N, P) logits, targets (..., M, P) in [0, 1] -> (..., N, M): mean binary cross-entropy.

    BCE(x, t) = t softplus(-x) + (1 - t) softplus(x) = softplus(x) - t x for any t, so the N x M sums are one
    softplus pass and one matrix product (upstream: two BCE passes and two products; same values to ~1e-7).
    `valid` (..., P) {0, 1}: the mean over valid points only (ignore regions, see ignore.py); 0 when none is.
    """
    if valid is None:
        num_points = inputs.shape[-1]
        return (F.softplus(inputs).sum(-1, keepdim=True) - inputs @ targets.transpose(-1, -2)) / num_points
    valid = valid[..., None, :]
    total = (F.softplus(inputs) * valid).sum(-1, keepdim=True) - (inputs * valid) @ targets.transpose(-1, -2)
    return total / valid.sum(-1, keepdim=True).clamp(min=1)


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """inputs (..., N, P) logits, targets (..., M, P) in {0, 1} -> (..., N, M): 1 - soft dice. `valid` (..., P)
    {0, 1}: over valid points only (0 when none is)."""
    probs = inputs.sigmoid()
    if valid is not None:
        probs, targets = probs * valid[..., None, :], targets * valid[..., None, :]
    numerator = 2 * probs @ targets.transpose(-1, -2)
    denominator = probs.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def _padded(rows: Sequence[torch.Tensor], length: int, fill, dtype=None) -> torch.Tensor:
    """B tensors (T_b, ...) -> (B, length, ...), rows past T_b set to `fill`."""
    first = rows[0]
    out = torch.full((len(rows), length, *first.shape[1:]), fill, dtype=dtype or first.dtype, device=first.device)
    for b, row in enumerate(rows):
        out[b, : len(row)] = row
    return out


def _multi_hot_rows(targets: Sequence[Target], name: str, counts: list[int], device) -> list[torch.Tensor]:
    """Each image's (T_b, K) multi-hot of group `name` as float; an empty image's as (0, K)."""
    rows = [torch.as_tensor(t["attributes"][name], device=device).float() for t in targets]
    k = next((r.numel() // n for r, n in zip(rows, counts) if n), 1)
    return [r.reshape(n, k) for r, n in zip(rows, counts)]


# Above this many target-mask pixels (sum over the batch) the masks are sampled one image at a time, so the
# float copy made for sampling is one image's masks, not the whole batch's (1 << 26 pixels: 256 MiB as float).
MAX_BATCHED_MASK_PIXELS = 1 << 26


@dataclass(frozen=True)
class PaddedTargets:
    """A batch's targets as padded tensors: built once per loss computation, shared by every stage's matching.

    counts      T_b per image; padded length T = max(1, max T_b)
    labels      (B, T) int64, padding 0
    values      {single group: (B, T) int64, padding -1 (= unlabeled, costs 0)} for the costed groups
    multi_hot   {multi group: (B, T, K) float32, padding 0};  labeled {multi group: (B, T) bool, padding False}
    masks       (sum T_b, H, W) every target mask in image order when all share one size (and are not too
                many pixels), else None
    slots       (image, slot) of each of those masks in the padded layout: two (sum T_b,) int64
    ignore      each image's ignore region (H, W) bool or None, when some image has one (else None)
    """

    counts: list[int]
    labels: torch.Tensor
    values: dict[str, torch.Tensor]
    multi_hot: dict[str, torch.Tensor]
    labeled: dict[str, torch.Tensor]
    masks: torch.Tensor | None
    slots: tuple[torch.Tensor, torch.Tensor]
    ignore: list[torch.Tensor | None] | None = None

    @property
    def width(self) -> int:
        return self.labels.shape[1]


class HungarianMatcher:
    """Pure function object: (outputs, targets) -> per image (query_idx (n,), target_idx (n,)) int64.

    The costs of all images are computed together, targets padded to the batch's largest count: one set of
    tensor operations per decoder stage instead of one per image (the tiny model's matcher: 4x fewer ops).
    """

    def __init__(self, cost_class: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0,
                 cost_attributes: Mapping[str, float] | None = None, num_points: int = 12544,
                 multi_label: Sequence[str] = ()) -> None:
        if num_points <= 0:
            raise ValueError("num_points must be > 0: mask costs on zero points are NaN")
        if min(cost_class, cost_mask, cost_dice) < 0:
            raise ValueError("matcher cost weights must be >= 0")
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.cost_attributes = dict(cost_attributes or {})
        if any(w < 0 for w in self.cost_attributes.values()):
            raise ValueError(f"attribute cost weights must be >= 0, got {self.cost_attributes}")
        self.num_points = num_points
        self.multi_label = frozenset(multi_label)  # attribute groups with K sigmoid logits (see module docstring)

    def cost_matrix(self, outputs: ModelOutput, targets: Sequence[Target], b: int,
                    point_coords: torch.Tensor) -> torch.Tensor:
        """Cost of assigning each query of image `b` to each of its targets: (Q, T) float32, finite.

        point_coords (1, P, 2) in [0, 1] are shared by all query/target pairs. Always computed in float32,
        also inside an autocast region (AMP training).
        """
        cost = self.cost_matrices(outputs.select(b), [targets[b]], point_coords)
        return cost[0, :, : len(targets[b]["labels"])]

    def cost_matrices(self, outputs: ModelOutput, targets: Sequence[Target], point_coords: torch.Tensor,
                      padded: PaddedTargets | None = None) -> torch.Tensor:
        """(B, Q, T) float32, finite: image b's costs in [b, :, :T_b] (the columns past T_b are padding).
        point_coords (B, P, 2) in [0, 1]: image b's points, shared by its query/target pairs. `padded`:
        `self.pad(targets)`, when the caller matches several stages against the same targets."""
        if padded is None:
            padded = self.pad(targets, outputs.class_logits.device)
        with torch.autocast(device_type=outputs.class_logits.device.type, enabled=False):
            return self._cost_matrices(outputs, targets, point_coords, padded)

    def pad(self, targets: Sequence[Target], device) -> PaddedTargets:
        """The targets' labels, costed attributes and masks as padded tensors (see PaddedTargets)."""
        counts = [len(t["labels"]) for t in targets]
        width = max(max(counts), 1)
        labels = _padded([torch.as_tensor(t["labels"], device=device).long() for t in targets], width, 0)
        values, multi_hot, labeled = {}, {}, {}
        for name, weight in self.cost_attributes.items():
            if weight == 0:
                continue
            for b, tgt in enumerate(targets):
                if name not in tgt.get("attributes", {}):
                    raise KeyError(f"target {b} has no 'attributes'[{name!r}] (use -1 for unlabeled)")
            if name in self.multi_label:
                multi_hot[name] = _padded(_multi_hot_rows(targets, name, counts, device), width, 0.0)
                labeled[name] = _padded([labeled_mask(t, name, n, device) for t, n in zip(targets, counts)],
                                        width, False)
            else:
                values[name] = _padded([torch.as_tensor(t["attributes"][name], device=device).long()
                                        for t in targets], width, -1)
        masks = [torch.as_tensor(t["masks"], device=device) for t in targets]
        image = torch.cat([torch.full((n,), b, dtype=torch.int64, device=device) for b, n in enumerate(counts)])
        slot = torch.cat([torch.arange(n, dtype=torch.int64, device=device) for n in counts])
        same_size = len({tuple(m.shape[-2:]) for m in masks}) == 1
        small = sum(m.numel() for m in masks) <= MAX_BATCHED_MASK_PIXELS
        ignore = [None if m is None else m.to(device) for m in image_ignore(targets)]
        return PaddedTargets(counts, labels, values, multi_hot, labeled,
                             torch.cat(masks) if same_size and small else None, (image, slot),
                             ignore if any(m is not None for m in ignore) else None)

    def _cost_matrices(self, outputs: ModelOutput, targets: Sequence[Target], point_coords: torch.Tensor,
                       padded: PaddedTargets) -> torch.Tensor:
        probs = outputs.class_logits.float().softmax(-1)  # (B, Q, C+1)
        cost = self.cost_class * batch_class_cost(probs, padded.labels)
        for name, weight in self.cost_attributes.items():
            if weight == 0:
                continue
            if name not in outputs.attribute_logits:
                raise KeyError(f"matcher has a cost for attribute {name!r} but the model has no such head")
            logits = outputs.attribute_logits[name].float()
            if name in self.multi_label:  # unlabeled instances and padding cost 0
                cost = cost + weight * batch_multilabel_cost(logits, padded.multi_hot[name], padded.labeled[name])
            else:
                cost = cost + weight * batch_attribute_cost(logits.softmax(-1), padded.values[name])
        coords = point_coords.float()
        out_pts = point_sample(outputs.mask_logits.float(), coords)  # (B, Q, P): the queries are channels
        tgt_pts = self._target_points(targets, padded, coords)  # (B, T, P), padding 0
        valid = self._valid_points(padded, outputs.mask_logits.shape[-2:], coords)
        cost = cost + self.cost_mask * batch_sigmoid_ce_cost(out_pts, tgt_pts, valid)
        cost = cost + self.cost_dice * batch_dice_cost(out_pts, tgt_pts, valid)
        return torch.nan_to_num(cost, nan=COST_GUARD, posinf=COST_GUARD, neginf=-COST_GUARD)

    @staticmethod
    def _valid_points(padded: PaddedTargets, size, coords: torch.Tensor) -> torch.Tensor | None:
        """(B, P) float {0, 1}: 0 where image b's point touches an ignored logit cell (ignore.py); None when no
        image has an ignore region (the costs then take the unmasked path, as upstream)."""
        if padded.ignore is None:
            return None
        cells = torch.stack([coords.new_zeros(tuple(size)) if m is None else ignored_cells(m[None], size)[0]
                             for m in padded.ignore])
        return valid_points(cells, coords).to(coords.dtype)

    @staticmethod
    def _target_points(targets: Sequence[Target], padded: PaddedTargets, coords: torch.Tensor) -> torch.Tensor:
        """Every target mask sampled at its image's points coords (B, P, 2) -> (B, T, P), padding 0."""
        b, p = coords.shape[:2]
        out = coords.new_zeros((b, padded.width, p))
        image, slot = padded.slots
        if padded.masks is not None:  # one sampling call for the whole batch
            if len(image):
                out[image, slot] = point_sample(padded.masks[:, None].float(), coords[image])[:, 0]
            return out
        for i, tgt in enumerate(targets):
            masks = torch.as_tensor(tgt["masks"], device=coords.device)
            if len(masks):
                out[i, : len(masks)] = point_sample(masks[None].float(), coords[i : i + 1])[0]
        return out

    @torch.no_grad()
    def __call__(self, outputs: ModelOutput, targets: Sequence[Target], generator: torch.Generator | None = None,
                 padded: PaddedTargets | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`padded`: `self.pad(targets, device)`, when the caller matches several stages against the same
        targets (the criterion does: built once instead of once per stage)."""
        if len(targets) != outputs.batch_size:
            raise ValueError(f"{len(targets)} targets for a batch of {outputs.batch_size} images")
        device = outputs.class_logits.device
        # One draw per image, in image order, before looking at the targets, as upstream does: an image without
        # targets still takes its points, so equal seeds give upstream's random stream (and losses). A CPU
        # generator fills a tensor element after element, so one (B, P, 2) draw is those B draws (tested).
        if generator is None or generator.device.type == "cpu":
            coords = rand((outputs.batch_size, self.num_points, 2), device=device, generator=generator)
        else:
            coords = torch.cat([rand((1, self.num_points, 2), device=device, generator=generator)
                                for _ in range(outputs.batch_size)])
        empty = torch.empty(0, dtype=torch.int64)
        if not any(len(t["labels"]) for t in targets):
            return [(empty, empty.clone()) for _ in targets]
        costs = self.cost_matrices(outputs, targets, coords, padded).cpu().numpy()
        indices = []
        for b, tgt in enumerate(targets):
            n = len(tgt["labels"])
            if n == 0:
                indices.append((empty, empty.clone()))
                continue
            rows, cols = linear_sum_assignment(costs[b, :, :n])
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


def assignment_cost(cost: np.ndarray, rows, cols) -> float:
    """Total cost of an assignment; used by tests and the harness report."""
    return float(np.asarray(cost)[np.asarray(rows), np.asarray(cols)].sum())
