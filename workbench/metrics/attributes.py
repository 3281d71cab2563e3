"""Attribute scores on matched pairs, shared by the instance evaluation (engine/evaluate.py: COCOeval's true
positives) and the panoptic one (metrics/panoptic_attributes.py: PQ's matched segments): one result type each for
a single-label group (accuracy and confusion) and a multi-label group (micro / macro F1), and the instance scores
on COCOeval's true positives (coco_segm.true_positives: IoU 0.50, greedy by ranking score, same category):

accuracy and confusion  per single-label group: a TP whose GT leaves that attribute unlabeled (key missing or -1)
         is excluded and counted in `unlabeled`. The predicted value is the top real value, or "no_object" when
         that attribute's no-object prob exceeds the top real value's prob; "no_object" is always wrong. The
         confusion matrix is K x (K+1): rows = GT value, columns = predicted value then no_object.
multi-label groups (kind "multi"): per group, precision / recall / F1 of the predicted value sets (values above
         the group's threshold) against the GT sets, micro (pooled over values) and macro (mean over the values
         that occur in the GT or the predictions); TPs whose GT leaves the group unlabeled are excluded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from workbench.data.categories import UNLABELED

if TYPE_CHECKING:
    from pycocotools.coco import COCO

__all__ = ["NO_OBJECT", "AttributeResult", "MultiLabelResult", "attribute_result", "multi_label_pairs_result",
           "multi_label_result"]

NO_OBJECT = "no_object"  # the confusion matrix's last column: a no-object prediction


@dataclass
class AttributeResult:
    """One attribute on true positives. accuracy = correct / count (None when count is 0).

    confusion[g][p]: TPs with GT value g and predicted value p; column K (the last) is "no_object".
    unlabeled: TPs whose GT leaves this attribute unlabeled (excluded from accuracy and confusion).
    """

    name: str
    values: list[str]
    accuracy: float | None
    correct: int
    count: int
    unlabeled: int
    confusion: list[list[int]]


@dataclass
class MultiLabelResult:
    """One multi-label group on true positives whose GT labels it.

    micro / macro: {"precision", "recall", "f1"} (None where undefined); per_value: {value: {"tp", "fp", "fn",
    "f1"}}; count: labeled TPs; unlabeled: TPs whose GT leaves the group unlabeled (excluded).
    """

    name: str
    values: list[str]
    count: int
    unlabeled: int
    micro: dict[str, float | None]
    macro: dict[str, float | None]
    per_value: dict[str, dict[str, Any]]


def multi_label_result(name: str, values: Sequence[str], tp: np.ndarray, fp: np.ndarray, fn: np.ndarray,
                       count: int, unlabeled: int) -> MultiLabelResult:
    """Micro and macro precision / recall / F1 from per-value counts tp, fp, fn (K,). Macro averages over the
    values that occur (in GT or predictions: a value only ever predicted counts, with F1 0), skipping a ratio
    whose denominator is 0."""
    def ratio(a, b):
        return None if b == 0 else float(a / b)

    micro = {"precision": ratio(tp.sum(), tp.sum() + fp.sum()), "recall": ratio(tp.sum(), tp.sum() + fn.sum()),
             "f1": ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum())}
    occurs = (tp + fp + fn) > 0
    macro = {}
    for key, (num, den) in {"precision": (tp, tp + fp), "recall": (tp, tp + fn), "f1": (2 * tp, 2 * tp + fp + fn)}.items():
        per = [num[i] / den[i] for i in range(len(tp)) if occurs[i] and den[i] > 0]
        macro[key] = float(np.mean(per)) if per else None
    per_value = {v: {"tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i]),
                     "f1": ratio(2 * tp[i], 2 * tp[i] + fp[i] + fn[i])} for i, v in enumerate(values)}
    return MultiLabelResult(name=name, values=list(values), count=count, unlabeled=unlabeled, micro=micro,
                            macro=macro, per_value=per_value)


def attribute_result(name: str, values: list[str], pairs: list[tuple[int, int]], gt: COCO, dt: COCO) -> AttributeResult:
    """Accuracy and confusion of single-label group `name` on (detection id, GT id) `pairs` (coco_segm's true
    positives); detections carry the predicted value index (K = no object), GT the labeled one."""
    k = len(values)
    confusion = np.zeros((k, k + 1), dtype=np.int64)
    unlabeled = 0
    for dt_id, gt_id in pairs:
        truth = (gt.anns[gt_id].get("attributes") or {}).get(name, UNLABELED)
        if truth is None or truth == UNLABELED:
            unlabeled += 1
            continue
        confusion[truth, dt.anns[dt_id]["attributes"][name]] += 1
    count = int(confusion.sum())
    correct = int(np.trace(confusion[:, :k]))
    return AttributeResult(name=name, values=values, accuracy=correct / count if count else None, correct=correct,
                           count=count, unlabeled=unlabeled, confusion=confusion.tolist())


def multi_label_pairs_result(name: str, values: list[str], pairs: list[tuple[int, int]], gt: COCO,
                             dt: COCO) -> MultiLabelResult:
    """Precision / recall / F1 of multi-label group `name` on (detection id, GT id) `pairs`: detections carry
    `attribute_sets: {name: [value indices]}`, GT `attributes: {name: [value indices]}`."""
    k = len(values)
    tp, fp, fn = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64)
    count = unlabeled = 0
    for dt_id, gt_id in pairs:
        truth = (gt.anns[gt_id].get("attributes") or {}).get(name, UNLABELED)
        if truth is None or truth == UNLABELED:
            unlabeled += 1
            continue
        count += 1
        g, d = np.zeros(k, bool), np.zeros(k, bool)
        g[list(truth)], d[dt.anns[dt_id]["attribute_sets"][name]] = True, True
        tp += g & d
        fp += ~g & d
        fn += g & ~d
    return multi_label_result(name, values, tp, fp, fn, count, unlabeled)
