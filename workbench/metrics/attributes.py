"""Attribute scores on matched pairs, shared by the instance evaluation (engine/evaluate.py: COCOeval's true
positives) and the panoptic one (metrics/panoptic_attributes.py: PQ's matched segments): one result type each for
a single-label group (accuracy and confusion) and a multi-label group (micro / macro F1)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AttributeResult", "MultiLabelResult"]


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
