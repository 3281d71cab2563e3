"""Attribute scores on matched pairs, shared by the instance evaluation (engine/evaluate.py: COCOeval's true
positives) and the panoptic one (metrics/panoptic_attributes.py: PQ's matched segments): one result type each for
a single-label group (accuracy and confusion) and a multi-label group (micro / macro F1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["AttributeResult", "MultiLabelResult", "multi_label_result"]


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
