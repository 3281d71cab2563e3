"""Set criterion: match queries to targets, then sum per-term losses over the final and every aux prediction.

Terms are entries of `losses` (as upstream): "labels" (loss_ce), "attributes" (loss_attr_<name>),
"masks" (loss_mask, loss_dice) and, opt-in, "boundary" (loss_boundary, see boundary_loss.py). Aux stages add
the suffix `_<i>`. Every produced key must have a weight in `weight_dict`; a missing weight raises instead of
silently dropping the term.

Attribute targets, decided: a query matched to an instance is trained towards that instance's value, or
ignored where the instance is unlabeled (-1); an unmatched query is trained towards the head's "no object"
index K with the head's `no_object_weight` -- exactly as the class head treats unmatched queries -- so the
attribute's no-object probability is meaningful at inference (filters can drop attribute = no-object).

Multi-label groups (`AttributeSpec.kind == "multi"`): K sigmoid logits, trained on matched queries only with
BCE (or sigmoid focal loss), mean over the K values and over the matched instances whose group is labeled
(`targets[i]["attribute_labeled"][name]`, absent = all labeled); unmatched queries get no attribute loss
because the class head's "no object" already says there is nothing to describe. Same key, `loss_attr_<name>`.

Ignore regions (COCO `iscrowd: 1`, label 255, labelme `__ignore__`): a target may carry `ignore` (H, W) bool;
the mask, dice and boundary terms of matched queries (and the matcher's mask costs) skip the points and pixels
that touch an ignored logit cell, and the uncertain points are chosen among the others (ignore.py): logits on
ignored pixels change neither the losses nor their gradients. Without an ignore region the losses are computed
exactly as before.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss  # (N, K) elementwise (Lin et al. 2017); alpha -1 = no weight

from workbench.config import AttributeSpec
from workbench.model.boundary_loss import boundary_loss
from workbench.model.ignore import ignored_cells, kept_share, valid_pixels, valid_points
from workbench.model.matcher import HungarianMatcher, Target, labeled_mask
from workbench.model.outputs import ModelOutput
from workbench.model.points import point_sample, uncertain_point_coords

IGNORE = -1
TERMS = ("labels", "attributes", "masks", "boundary")  # every known term
DEFAULT_TERMS = ("labels", "attributes", "masks")  # "boundary" is opt-in (LossConfig.boundary_weight > 0)


def sigmoid_ce_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float,
                    valid: torch.Tensor | None = None) -> torch.Tensor:
    """logits, labels (N, P) -> mean over points, sum over masks / num_masks. `valid` (N, P) {0, 1}: the mean
    runs over valid points only (ignore regions)."""
    per_point = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if valid is None:
        return per_point.mean(1).sum() / num_masks
    return ((per_point * valid).sum(1) / valid.sum(1).clamp(min=1)).sum() / num_masks


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float,
              valid: torch.Tensor | None = None) -> torch.Tensor:
    """logits, labels (N, P) -> sum over masks of (1 - soft dice) / num_masks; `valid` as in sigmoid_ce_loss."""
    probs = logits.sigmoid()
    if valid is not None:
        probs, labels = probs * valid, labels * valid
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def multilabel_loss(logits: torch.Tensor, multi_hot: torch.Tensor, kind: str = "bce", alpha: float = 0.25,
                    gamma: float = 2.0) -> torch.Tensor:
    """logits, multi_hot (N, K) -> mean over values and instances; 0 with a graph when N = 0."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    if kind == "focal":
        per_value = sigmoid_focal_loss(logits, multi_hot, alpha, gamma)
    else:
        per_value = F.binary_cross_entropy_with_logits(logits, multi_hot, reduction="none")
    return per_value.mean()


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """logits (B, Q, K+1), target (B, Q) with IGNORE -> weighted mean; 0 (not NaN) when all are ignored."""
    flat_target = target.reshape(-1)
    valid = flat_target != IGNORE
    per_query = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat_target.clamp(min=0),
                                reduction="none")
    w = weight[flat_target.clamp(min=0)] * valid
    return (per_query * w).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)


class SetCriterion(nn.Module):
    """(outputs: ModelOutput, targets) -> dict[str, 0-dim Tensor] of *unweighted* losses; `weigh` applies weights."""

    def __init__(self, num_classes: int, attributes: Sequence[AttributeSpec], matcher: HungarianMatcher,
                 weight_dict: Mapping[str, float], no_object_weight: float = 0.1,
                 losses: Sequence[str] = DEFAULT_TERMS, num_points: int = 12544, oversample_ratio: float = 3.0,
                 importance_sample_ratio: float = 0.75, multi_label_losses: Mapping[str, str] | None = None,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> None:
        super().__init__()
        unknown = set(losses) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {TERMS}")
        self.num_classes, self.attributes, self.matcher = num_classes, tuple(attributes), matcher
        self.weight_dict, self.losses = dict(weight_dict), tuple(losses)
        self.num_points, self.oversample_ratio = num_points, oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        # multi groups: name -> "bce" | "focal" (default "bce")
        self.multi_label_losses = {a.name: (multi_label_losses or {}).get(a.name, "bce")
                                   for a in self.attributes if a.multi}
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        for a in self.attributes:
            if a.multi:
                continue
            w = torch.ones(a.num_values + 1)
            w[-1] = a.no_object_weight
            self.register_buffer(f"attr_weight_{a.name}", w, persistent=False)
        missing = [k for k in self.base_keys() if k not in self.weight_dict]
        if missing:
            raise KeyError(f"loss keys without a weight: {missing} (every produced loss must be weighted)")

    def base_keys(self) -> list[str]:
        keys = []
        if "labels" in self.losses:
            keys.append("loss_ce")
        if "attributes" in self.losses:
            keys += [f"loss_attr_{a.name}" for a in self.attributes]
        if "masks" in self.losses:
            keys += ["loss_mask", "loss_dice"]
        if "boundary" in self.losses:
            keys.append("loss_boundary")
        return keys

    # ---- input checks: fail with a message instead of a device-side assert later ----
    def check(self, outputs: ModelOutput, targets: Sequence[Target]) -> None:
        if outputs.class_logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"class logits have {outputs.class_logits.shape[-1]} outputs, expected "
                             f"num_classes + 1 = {self.num_classes + 1} (last = no object)")
        for a in self.attributes:
            logits = outputs.attribute_logits.get(a.name)
            if logits is None:
                raise KeyError(f"model outputs have no logits for attribute {a.name!r}")
            if a.multi:
                if logits.shape[-1] != a.num_values:
                    raise ValueError(f"multi-label attribute head {a.name!r} has {logits.shape[-1]} outputs, "
                                     f"expected K = {a.num_values} sigmoid logits (no no-object slot)")
                continue
            if logits.shape[-1] != a.num_values + 1:
                raise ValueError(f"attribute head {a.name!r} has {logits.shape[-1]} outputs, expected K+1 = "
                                 f"{a.num_values + 1} ({a.num_values} values + no object); unmatched queries "
                                 f"are trained towards index {a.num_values}")
        # Value ranges are checked on the whole batch at once (a few ops, not a few per image), and image by
        # image only to name the offender.
        in_range = {"labels": self._in_range([t["labels"] for t in targets], 0, self.num_classes)}
        for a in self.attributes:
            if not a.multi:
                in_range[a.name] = self._in_range([t.get("attributes", {}).get(a.name, ()) for t in targets],
                                                  IGNORE, a.num_values)
        for i, t in enumerate(targets):
            labels = torch.as_tensor(t["labels"])
            if not in_range["labels"] and labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"targets[{i}]['labels'] has values {labels.unique().tolist()} outside "
                                 f"[0, {self.num_classes})")
            if len(t["masks"]) != len(labels):
                raise ValueError(f"targets[{i}]: {len(t['masks'])} masks for {len(labels)} labels")
            for a in self.attributes:
                values = t.get("attributes", {}).get(a.name)
                if values is None:
                    raise KeyError(f"targets[{i}]['attributes'] has no {a.name!r} (use -1 for unlabeled)")
                values = torch.as_tensor(values)
                if a.multi:
                    self._check_multi_hot(values, t, i, a, len(labels))
                    continue
                if len(values) != len(labels):
                    raise ValueError(f"targets[{i}]['attributes'][{a.name!r}] has {len(values)} entries for "
                                     f"{len(labels)} instances")
                if not in_range[a.name] and values.numel() and (values.min() < IGNORE or values.max() >= a.num_values):
                    raise ValueError(f"targets[{i}]['attributes'][{a.name!r}] has values {values.unique().tolist()}"
                                     f" outside [-1, {a.num_values}) (-1 = unlabeled)")

    @staticmethod
    def _in_range(rows, low: int, high: int) -> bool:
        """All values of all rows in [low, high) (True for no values; False if they cannot be concatenated, so
        the per-image checks run and name the problem)."""
        try:
            values = torch.cat([torch.as_tensor(r).reshape(-1) for r in rows])  # no cast: -0.5 must fail too
        except (TypeError, RuntimeError, ValueError):
            return False
        return values.numel() == 0 or bool((values.min() >= low) & (values.max() < high))

    @staticmethod
    def _check_multi_hot(values: torch.Tensor, target, i: int, a: AttributeSpec, num_instances: int) -> None:
        where = f"targets[{i}]['attributes'][{a.name!r}]"
        if tuple(values.shape) != (num_instances, a.num_values):
            raise ValueError(f"{where} has shape {tuple(values.shape)}; multi-label group {a.name!r} needs a "
                             f"(T, K) = ({num_instances}, {a.num_values}) multi-hot tensor")
        if values.numel() and not bool(((values == 0) | (values == 1)).all()):
            raise ValueError(f"{where} must hold only 0 and 1 (mark unlabeled instances in "
                             f"targets[{i}]['attribute_labeled'][{a.name!r}] instead)")
        labeled = (target.get("attribute_labeled") or {}).get(a.name)
        if labeled is not None and tuple(torch.as_tensor(labeled).shape) != (num_instances,):
            raise ValueError(f"targets[{i}]['attribute_labeled'][{a.name!r}] must have shape ({num_instances},)")

    # ---- terms ----
    @staticmethod
    def _src_index(indices):
        """(image index, query index) of every matched query, each (n,) int64."""
        if isinstance(indices, Matches):
            return indices.flat
        return Matches.flatten(indices)

    def loss_labels(self, outputs: ModelOutput, targets, indices, num_masks, generator) -> dict[str, torch.Tensor]:
        logits = outputs.class_logits.float()
        target = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        batch, src = self._src_index(indices)
        matched = [torch.as_tensor(t["labels"], device=logits.device).long()[j] for t, (_, j) in zip(targets, indices)]
        target[batch, src] = torch.cat(matched) if matched else target.new_empty(0)
        return {"loss_ce": F.cross_entropy(logits.transpose(1, 2), target, self.empty_weight)}

    def attribute_targets(self, outputs: ModelOutput, targets, indices, name: str, num_values: int) -> torch.Tensor:
        """(B, Q) int64: matched queries get the instance's value (or -1 = ignored), unmatched get K."""
        device = outputs.class_logits.device
        target = torch.full(outputs.class_logits.shape[:2], num_values, dtype=torch.int64, device=device)
        batch, src = self._src_index(indices)
        matched = [torch.as_tensor(t["attributes"][name], device=device).long()[j] for t, (_, j) in zip(targets, indices)]
        target[batch, src] = torch.cat(matched) if matched else target.new_empty(0)
        return target

    def loss_attributes(self, outputs: ModelOutput, targets, indices, num_masks, generator):
        losses = {}
        for a in self.attributes:
            if a.multi:
                losses[f"loss_attr_{a.name}"] = self.loss_multilabel(outputs, targets, indices, a)
                continue
            target = self.attribute_targets(outputs, targets, indices, a.name, a.num_values)
            weight = getattr(self, f"attr_weight_{a.name}")
            losses[f"loss_attr_{a.name}"] = weighted_cross_entropy(outputs.attribute_logits[a.name], target, weight)
        return losses

    def loss_multilabel(self, outputs: ModelOutput, targets, indices, a: AttributeSpec) -> torch.Tensor:
        """Matched queries whose instance labels group `a`: (n, K) logits vs multi-hot, by BCE or focal."""
        logits = outputs.attribute_logits[a.name]
        batch, src = self._src_index(indices)
        device = logits.device
        multi_hot, labeled = [], []
        for t, (_, j) in zip(targets, indices):
            n = len(t["labels"])
            # (n, K) also for an image without instances, where reshape(0, -1) cannot infer K
            multi_hot.append(torch.as_tensor(t["attributes"][a.name], device=device).float().reshape(
                n, a.num_values)[j])
            labeled.append(labeled_mask(t, a.name, n, device)[j])
        keep = torch.cat(labeled) if labeled else torch.zeros(0, dtype=torch.bool, device=device)
        matched = logits[batch.to(device), src.to(device)].float()[keep]
        target = torch.cat(multi_hot)[keep] if multi_hot else matched.new_zeros((0, a.num_values))
        return multilabel_loss(matched, target, self.multi_label_losses[a.name], self.focal_alpha, self.focal_gamma)

    def loss_masks(self, outputs: ModelOutput, targets, indices, num_masks, generator):
        batch, src = self._src_index(indices)
        if src.numel() == 0:
            zero = outputs.mask_logits.sum() * 0.0  # keeps the graph: zero loss, zero gradient
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        src_masks = outputs.mask_logits[batch.to(outputs.mask_logits.device), src.to(outputs.mask_logits.device)]
        tgt_masks = torch.cat([
            torch.as_tensor(t["masks"], device=src_masks.device)[j] for t, (_, j) in zip(targets, indices)
        ]).to(src_masks.dtype)
        src_masks, tgt_masks = src_masks[:, None], tgt_masks[:, None]
        cells = self._ignored_cells(targets, indices, src_masks.shape[-2:], src_masks.device)
        with torch.no_grad():
            coords = uncertain_point_coords(src_masks.float(), self.num_points, self.oversample_ratio,
                                            self.importance_sample_ratio, generator,
                                            valid=None if cells is None else functools.partial(valid_points, cells))
            point_labels = point_sample(tgt_masks.float(), coords)[:, 0]
            valid = None if cells is None else valid_points(cells, coords).float()
        point_logits = point_sample(src_masks.float(), coords)[:, 0]
        return {"loss_mask": sigmoid_ce_loss(point_logits, point_labels, num_masks, valid),
                "loss_dice": dice_loss(point_logits, point_labels, num_masks, valid)}

    @staticmethod
    def _ignored_cells(targets, indices, size, device) -> torch.Tensor | None:
        """(N, h, w) float {0, 1}: each matched pair's image's ignored logit cells (ignore.py); None when no image
        of the batch has an ignore region (the losses then take the unmasked path, identical to before)."""
        has_ignore = indices.has_ignore if isinstance(indices, Matches) else None
        if not (Matches.targets_ignore(targets) if has_ignore is None else has_ignore):
            return None
        maps = []
        for t, (_, j) in zip(targets, indices):
            m = t.get("ignore")
            cells = (torch.zeros(tuple(size), device=device) if m is None
                     else ignored_cells(torch.as_tensor(m, device=device)[None], size)[0])
            maps.append(cells[None].expand(len(j), *cells.shape))
        return torch.cat(maps)

    def loss_boundary(self, outputs: ModelOutput, targets, indices, num_masks, generator):
        """Edge maps of matched masks at the prediction's resolution (targets area-resized to it)."""
        batch, src = self._src_index(indices)
        if src.numel() == 0:
            return {"loss_boundary": outputs.mask_logits.sum() * 0.0}
        src_masks = outputs.mask_logits[batch.to(outputs.mask_logits.device), src.to(outputs.mask_logits.device)]
        tgt_masks = torch.cat([
            torch.as_tensor(t["masks"], device=src_masks.device)[j] for t, (_, j) in zip(targets, indices)
        ]).float()
        cells = self._ignored_cells(targets, indices, src_masks.shape[-2:], src_masks.device)
        if cells is None:
            tgt_masks = F.adaptive_avg_pool2d(tgt_masks[:, None], src_masks.shape[-2:])[:, 0]
            valid = None
        else:  # each cell's share of the target among its kept pixels: ignored ones neither count as in nor out
            kept = self._kept_pixels(targets, indices, src_masks.device)
            tgt_masks = kept_share(tgt_masks, kept, src_masks.shape[-2:])
            valid = valid_pixels(cells)
        return {"loss_boundary": boundary_loss(src_masks.float(), tgt_masks, num_masks, valid=valid)}

    @staticmethod
    def _kept_pixels(targets, indices, device) -> torch.Tensor:
        """(N, H, W) float {0, 1}: 1 where each matched pair's image is not ignored (expanded views, no copies)."""
        maps = []
        for t, (_, j) in zip(targets, indices):
            m = t.get("ignore")
            size = tuple(torch.as_tensor(t["masks"]).shape[-2:])
            kept = (torch.ones(size, device=device) if m is None
                    else (~torch.as_tensor(m, device=device).bool()).float())
            maps.append(kept[None].expand(len(j), *kept.shape))
        return torch.cat(maps)

    # ---- driver ----
    def totals(self, targets, num_queries: int) -> "LossTotals":
        """The denominators of every term over `targets`' images, from the targets alone (see LossTotals)."""
        masks = classes = 0.0
        attributes = {a.name: 0.0 for a in self.attributes}
        no_object = float(self.empty_weight[-1])
        for t in targets:
            n = len(t["labels"])
            matched = min(n, num_queries)  # the Hungarian matcher pairs min(Q, T) queries at every stage
            share = matched / n if n else 0.0  # expected matched fraction of the labeled ones when T > Q
            masks += n
            classes += matched + (num_queries - matched) * no_object
            for a in self.attributes:
                labeled = float(labeled_mask(t, a.name, n, "cpu").sum()) if a.multi else \
                    float((torch.as_tensor(t["attributes"][a.name]) >= 0).sum())
                attributes[a.name] += labeled * share if a.multi else \
                    labeled * share + (num_queries - matched) * float(getattr(self, f"attr_weight_{a.name}")[-1])
        return LossTotals(masks, classes, attributes)

    def num_masks(self, targets, device) -> float:
        """Targets in the batch, averaged over distributed workers, at least 1."""
        n = torch.as_tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            n = n / dist.get_world_size()
        return max(float(n), 1.0)

    def forward(self, outputs: ModelOutput, targets: Sequence[Target], generator: torch.Generator | None = None,
                effective: "EffectiveBatch | None" = None) -> dict[str, torch.Tensor]:
        """`effective`: this batch is one micro-batch (of one process) of a larger effective batch: every term is
        normalised over that whole batch (see EffectiveBatch), so the summed gradients of the micro-batches (and
        DDP's mean over processes) are those of the effective batch. None: over this batch (and, for the mask
        terms, over all processes, as upstream)."""
        self.check(outputs, targets)
        scale: dict[str, float] = {}
        if effective is None:
            num_masks = self.num_masks(targets, outputs.class_logits.device)
        else:
            num_masks = max(effective.totals.masks / effective.processes, 1.0)
            scale = effective.scales(self.totals(targets, outputs.class_logits.shape[1]))
        terms = {"labels": self.loss_labels, "attributes": self.loss_attributes, "masks": self.loss_masks,
                 "boundary": self.loss_boundary}
        losses: dict[str, torch.Tensor] = {}
        stages = [("", outputs)] + [(f"_{i}", aux) for i, aux in enumerate(outputs.aux)]
        padded = self.matcher.pad(targets, outputs.class_logits.device)  # the same targets at every stage
        has_ignore = Matches.targets_ignore(targets)
        for suffix, stage in stages:
            indices = Matches(self.matcher(stage, targets, generator=generator, padded=padded), has_ignore)
            for term in self.losses:
                for key, value in terms[term](stage, targets, indices, num_masks, generator).items():
                    losses[key + suffix] = value * scale[key] if key in scale else value
        return losses

    def weigh(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Multiply each loss by its weight; a key without a weight is an error, never dropped."""
        missing = [k for k in losses if k not in self.weight_dict]
        if missing:
            raise KeyError(f"loss keys without a weight: {missing}")
        return {k: v * self.weight_dict[k] for k, v in losses.items()}


@dataclass(frozen=True)
class LossTotals:
    """Denominators of the loss terms over a set of images: `masks` the target masks (mask, dice and boundary
    terms), `classes` the class cross-entropy's weights (1 per matched query, `no_object_weight` per other query),
    `attributes[name]` a single group's weights (1 per matched labeled instance, its no_object_weight per
    unmatched query) or a multi group's matched labeled instances. Exact when no image has more instances than
    queries (then every instance is matched); otherwise the matched share is the expected one."""

    masks: float
    classes: float
    attributes: Mapping[str, float]

    def __add__(self, other: "LossTotals") -> "LossTotals":
        return LossTotals(self.masks + other.masks, self.classes + other.classes,
                          {k: v + other.attributes[k] for k, v in self.attributes.items()})

    def to_tensor(self) -> torch.Tensor:
        """(2 + groups,) float64, for one all_reduce over processes."""
        return torch.tensor([self.masks, self.classes, *self.attributes.values()], dtype=torch.float64)

    def with_values(self, values: torch.Tensor) -> "LossTotals":
        v = values.tolist()
        return LossTotals(v[0], v[1], dict(zip(self.attributes, v[2:])))


@dataclass(frozen=True)
class EffectiveBatch:
    """The optimizer step's whole batch: `totals` summed over its micro-batches and `processes` processes.

    A micro-batch's cross-entropy terms (means over its own weights) are multiplied by
    processes x (its weights / the effective batch's), and the mask terms divide by the effective batch's masks
    / processes (upstream's per-process average): summed over micro-batches and averaged over processes (DDP),
    every term is the effective batch's own mean."""

    totals: LossTotals
    processes: int = 1

    def scales(self, local: LossTotals) -> dict[str, float]:
        def share(mine: float, everyone: float) -> float:
            return self.processes * mine / everyone if everyone > 0 else 1.0

        out = {"loss_ce": share(local.classes, self.totals.classes)}
        out.update({f"loss_attr_{k}": share(v, self.totals.attributes[k]) for k, v in local.attributes.items()})
        return out


class Matches(list):
    """A stage's matches, per image (query_idx (n,), target_idx (n,)), as the matcher returns them, with what
    every loss term derives from them (the flat index of matched queries: built once per stage) and whether the
    batch has ignore pixels (looked up once per batch)."""

    def __init__(self, indices, has_ignore: bool | None = None) -> None:
        super().__init__(indices)
        self.has_ignore = has_ignore

    @staticmethod
    def flatten(indices) -> tuple[torch.Tensor, torch.Tensor]:
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        return batch, torch.cat([src for src, _ in indices])

    @staticmethod
    def targets_ignore(targets) -> bool:
        """Does any image of the batch have an ignore region with at least one pixel?"""
        return any(t.get("ignore") is not None and bool(torch.as_tensor(t["ignore"]).any()) for t in targets)

    @functools.cached_property
    def flat(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flatten(self)


def build_weight_dict(base: Mapping[str, float], num_aux: int) -> dict[str, float]:
    """Base weights repeated for every aux stage (`loss_ce_0`, ..., `loss_ce_{num_aux-1}`)."""
    weights = dict(base)
    for i in range(num_aux):
        weights.update({f"{k}_{i}": w for k, w in base.items()})
    return weights
