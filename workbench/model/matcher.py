"""Hungarian matching of queries to ground-truth instances, with attribute costs.

cost(q, t) = w_class * -p_q[class_t] + sum_a w_a * -p_q^a[attr_t^a] + w_mask * BCE + w_dice * dice,
the mask terms on points shared by all pairs. Without the attribute terms, matching ignores attributes and
every head learns "no object" for them (a seed bug); `cost_attributes={name: 0}` switches one off; an
unlabeled attribute (-1) adds no cost. A multi-label group (named in `multi_label`) costs the per-query mean
binary cross-entropy of its K sigmoid logits against the target's multi-hot vector; instances whose group is
unlabeled (`attribute_labeled[name]` False) add no cost.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from workbench.model.outputs import ModelOutput
from workbench.model.points import point_sample, rand

# {"labels": (T,), "masks": (T, H, W), "attributes": {name: (T,) single | (T, K) multi-hot},
#  "attribute_labeled": {name: (T,) bool} for multi groups (absent = every instance labeled)}
Target = Mapping[str, object]

# Finite stand-in for NaN/inf costs so scipy never sees them (such a pair is simply never preferred).
COST_GUARD = 1e8


def batch_class_cost(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """probs (Q, C+1) softmax, labels (T,) -> (Q, T): -probability of each target's class."""
    return -probs[:, labels]


def batch_attribute_cost(probs: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """probs (Q, K+1) softmax, values (T,) with -1 = unlabeled -> (Q, T); unlabeled columns cost 0."""
    labeled = values >= 0
    return -probs[:, values.clamp(min=0)] * labeled[None, :].to(probs.dtype)


def batch_multilabel_cost(logits: torch.Tensor, multi_hot: torch.Tensor, labeled: torch.Tensor) -> torch.Tensor:
    """logits (Q, K), multi_hot (T, K) in {0, 1}, labeled (T,) bool -> (Q, T): mean BCE over the K values;
    unlabeled columns cost 0."""
    return batch_sigmoid_ce_cost(logits, multi_hot.to(logits.dtype)) * labeled[None, :].to(logits.dtype)


def labeled_mask(target: Target, name: str, num_instances: int, device) -> torch.Tensor:
    """(T,) bool: which instances carry multi group `name` (`attribute_labeled[name]`; absent = all)."""
    labeled = (target.get("attribute_labeled") or {}).get(name)
    if labeled is None:
        return torch.ones(num_instances, dtype=torch.bool, device=device)
    return torch.as_tensor(labeled, device=device).bool()


def batch_sigmoid_ce_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """inputs (N, P) logits, targets (M, P) in {0, 1} -> (N, M): mean binary cross-entropy over points."""
    num_points = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / num_points


def batch_dice_cost(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """inputs (N, P) logits, targets (M, P) in {0, 1} -> (N, M): 1 - soft dice."""
    probs = inputs.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher:
    """Pure function object: (outputs, targets) -> per image (query_idx (n,), target_idx (n,)) int64."""

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
        with torch.autocast(device_type=outputs.class_logits.device.type, enabled=False):
            return self._cost_matrix(outputs, targets, b, point_coords)

    def _cost_matrix(self, outputs: ModelOutput, targets: Sequence[Target], b: int,
                     point_coords: torch.Tensor) -> torch.Tensor:
        tgt = targets[b]
        labels = torch.as_tensor(tgt["labels"], device=outputs.class_logits.device).long()
        probs = outputs.class_logits[b].float().softmax(-1)
        cost = self.cost_class * batch_class_cost(probs, labels)
        tgt_attrs = tgt.get("attributes", {})
        for name, weight in self.cost_attributes.items():
            if weight == 0:
                continue
            if name not in outputs.attribute_logits:
                raise KeyError(f"matcher has a cost for attribute {name!r} but the model has no such head")
            if name not in tgt_attrs:
                raise KeyError(f"target {b} has no 'attributes'[{name!r}] (use -1 for unlabeled)")
            if name in self.multi_label:
                multi_hot = torch.as_tensor(tgt_attrs[name], device=probs.device).float()  # (T, K)
                labeled = labeled_mask(tgt, name, len(labels), probs.device)
                logits = outputs.attribute_logits[name][b].float()  # (Q, K)
                cost = cost + weight * batch_multilabel_cost(logits, multi_hot.reshape(len(labels), -1), labeled)
                continue
            values = torch.as_tensor(tgt_attrs[name], device=probs.device).long()
            attr_probs = outputs.attribute_logits[name][b].float().softmax(-1)
            cost = cost + weight * batch_attribute_cost(attr_probs, values)
        out_mask = outputs.mask_logits[b].float()  # (Q, h, w)
        point_coords = point_coords.float()
        tgt_mask = torch.as_tensor(tgt["masks"], device=out_mask.device).float()  # (T, H, W)
        out_pts = point_sample(out_mask[:, None], point_coords.expand(out_mask.shape[0], -1, -1))[:, 0]
        tgt_pts = point_sample(tgt_mask[:, None], point_coords.expand(tgt_mask.shape[0], -1, -1))[:, 0]
        cost = cost + self.cost_mask * batch_sigmoid_ce_cost(out_pts, tgt_pts)
        cost = cost + self.cost_dice * batch_dice_cost(out_pts, tgt_pts)
        return torch.nan_to_num(cost, nan=COST_GUARD, posinf=COST_GUARD, neginf=-COST_GUARD)

    @torch.no_grad()
    def __call__(self, outputs: ModelOutput, targets: Sequence[Target],
                 generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if len(targets) != outputs.batch_size:
            raise ValueError(f"{len(targets)} targets for a batch of {outputs.batch_size} images")
        device = outputs.class_logits.device
        indices = []
        for b in range(outputs.batch_size):
            # Drawn before looking at the targets, as upstream does: an image without targets still takes its
            # points, so equal seeds give upstream's random stream (and losses) through such images.
            coords = rand((1, self.num_points, 2), device=device, generator=generator)
            if len(targets[b]["labels"]) == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            cost = self.cost_matrix(outputs, targets, b, coords).cpu().numpy()
            rows, cols = linear_sum_assignment(cost)
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


def assignment_cost(cost: np.ndarray, rows, cols) -> float:
    """Total cost of an assignment; used by tests and the harness report."""
    return float(np.asarray(cost)[np.asarray(rows), np.asarray(cols)].sum())
