"""Per-task training targets from segments, as upstream Mask2Former's dataset mappers build them.

Input: the (augmented) masks of an image's segments (S, H, W) bool, their records (`category_id` = model label,
`iscrowd`, `attributes` {name: value id | list | -1}) and the pixels excluded from the mask losses. Output: the
`instances` dict every task shares (see dataset.py):

    panoptic  one target per non-crowd segment, stuff included (MaskFormerPanopticDatasetMapper); crowd
              segments join `ignore`
    semantic  one target per class present, its mask the union of the class's segments, crowd ones included
              (MaskFormerSemanticDatasetMapper: `sem_seg == class`); an attribute keeps its value only when
              every non-crowd segment of the class has that same value, else -1 (unlabeled)
    instance  the panoptic targets of thing segments only

Segments an augmentation cropped to nothing are dropped with their attributes.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.data.categories import UNLABELED
from workbench.data.masks import boxes_from_masks
from workbench.data.schema import Schema

__all__ = ["TASKS", "segment_targets"]

TASKS = ("instance", "semantic", "panoptic")


def _class_value(values: list, multi: bool):
    """One class's value from its segments' values: the common one, else unlabeled."""
    if not values or any(v == UNLABELED for v in values):
        return UNLABELED
    if multi:
        first = sorted(values[0])
        return first if all(sorted(v) == first for v in values) else UNLABELED
    return values[0] if all(v == values[0] for v in values) else UNLABELED


def _attribute_tensors(per_target: list[dict], schema: Schema) -> tuple[dict, dict]:
    """[{name: value}] -> ({name: (T,) int64 or (T, K) bool}, {multi name: (T,) bool labeled})."""
    attributes, labeled = {}, {}
    for a in schema.attributes:
        values = [t.get(a.name, UNLABELED) for t in per_target]
        if a.multi:
            hot = np.zeros((len(values), len(a.values)), dtype=bool)
            for i, v in enumerate(values):
                if v != UNLABELED:
                    hot[i, v] = True
            attributes[a.name] = torch.from_numpy(hot)
            labeled[a.name] = torch.tensor([v != UNLABELED for v in values], dtype=torch.bool)
        else:
            attributes[a.name] = torch.tensor(values, dtype=torch.int64)
    return attributes, labeled


def segment_targets(masks: np.ndarray, segments: list[dict], ignore: np.ndarray, schema: Schema,
                    task: str) -> dict[str, Any]:
    """masks (S, H, W) bool, segments (S records), ignore (H, W) bool -> `instances` of `task`:
    labels (T,) int64, masks (T, H, W) bool, boxes (T, 4) float32 xyxy, attributes, ignore (H, W) bool
    (+ attribute_labeled {name: (T,) bool} with multi-label groups)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    present = masks.reshape(len(masks), -1).any(axis=1) if len(masks) else np.zeros(0, bool)
    ignore = ignore.copy()
    if task == "semantic":
        classes = sorted({s["category_id"] for s, p in zip(segments, present) if p})
        target_masks = [np.logical_or.reduce([m for m, s, p in zip(masks, segments, present)
                                              if p and s["category_id"] == c]) for c in classes]
        target_attrs = []
        for c in classes:
            of_class = [s["attributes"] for s, p in zip(segments, present)  # crowd regions carry no vote
                        if p and s["category_id"] == c and not s["iscrowd"]]
            target_attrs.append({a.name: _class_value([v.get(a.name, UNLABELED) for v in of_class], a.multi)
                                 for a in schema.attributes})
        labels = classes
    else:
        keep = []
        for i, (s, p) in enumerate(zip(segments, present)):
            if s["iscrowd"]:
                ignore |= masks[i]
            elif p and (task == "panoptic" or s.get("isthing", True)):
                keep.append(i)
        target_masks = [masks[i] for i in keep]
        target_attrs = [segments[i]["attributes"] for i in keep]
        labels = [segments[i]["category_id"] for i in keep]
    h, w = ignore.shape
    stacked = np.stack(target_masks) if target_masks else np.zeros((0, h, w), dtype=bool)
    attributes, labeled = _attribute_tensors(target_attrs, schema)
    instances = {
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(np.ascontiguousarray(stacked)),
        "boxes": torch.from_numpy(boxes_from_masks(stacked)),
        "attributes": attributes,
        "ignore": torch.from_numpy(np.ascontiguousarray(ignore)),
    }
    if labeled:
        instances["attribute_labeled"] = labeled
    return instances
