"""Attributes on panoptic segments ("road: wet", "car: red"), stuff and things alike, scored on the segment pairs
PQ matches (metrics/panoptic.py: same category, GT not crowd, IoU > 0.5); the panoptic counterpart of the
instance path's attribute accuracy, multi-label F1 (attributes.py) and joint AP (joint_ap.py), with the same rules.

Values. GT, per segment: `attributes: {name: value index}` for a single-label group, `{name: [indices]}` for a
multi-label one; -1, None or a missing key = unlabeled. Prediction, per segment (the model's panoptic output):
a single group's value index or -1 (no value: the no-object class won), a multi group's list of indices.

accuracy   per single-label group, on matched pairs whose GT labels it: correct / count; a predicted -1 is
           always wrong. confusion[g][p]: K x (K+1), rows GT value, columns predicted value then "none" (-1).
           Pairs whose GT leaves the group unlabeled are counted in `unlabeled` and excluded.
F1         per multi-label group, on matched pairs whose GT labels it: precision / recall / F1 of the predicted
           value sets against the GT sets, micro (pooled over values) and macro (mean over the values that occur
           in the GT or the predictions), as the instance path's multi-label scores.
joint PQ   PQ / SQ / RQ (all, things, stuff, per class) in which a pair counts as a true positive only if, besides
           category and IoU > 0.5, the prediction gets every *labeled* single-label attribute of the GT right;
           otherwise the predicted segment is a false positive (unless mostly VOID / crowd, as in PQ) and the GT
           a false negative. Unlabeled GT attributes impose no condition (a GT with none labeled counts exactly as
           in PQ); multi-label groups impose none either, as in joint AP. The panoptic analogue of joint AP:
           there a wrong attribute sets the pair's IoU to 0, here it removes the pair from the matches.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from workbench.metrics.attributes import AttributeResult, MultiLabelResult, multi_label_result
from workbench.metrics.inputs import input_error
from workbench.metrics.panoptic import (CategoryTable, PanopticResult, PQCounts, SegmentMatch, match_segments,
                                        panoptic_images, pq_result)

__all__ = ["PanopticAttributeEvaluator", "PanopticAttributeResult", "evaluate_panoptic_attribute_files",
           "evaluate_panoptic_attributes"]

UNLABELED = -1


@dataclass(frozen=True)
class _Group:
    name: str
    values: tuple[str, ...]
    multi: bool


def _groups(attributes: Iterable[Any]) -> list[_Group]:
    """Schema `AttributeVocab`s (name, values, multi) or records {"name", "values", "kind": single | multi}."""
    out = []
    for a in attributes:
        if isinstance(a, Mapping):
            out.append(_Group(str(a["name"]), tuple(a["values"]), a.get("kind", "single") == "multi"))
        else:
            out.append(_Group(a.name, tuple(a.values), bool(a.multi)))
    return out


@dataclass(frozen=True)
class PanopticAttributeResult:
    """PQ, joint PQ and the attribute scores of one evaluation; `matched` = PQ's true positives."""

    panoptic: PanopticResult
    joint: PanopticResult
    attributes: dict[str, AttributeResult]
    multi_label: dict[str, MultiLabelResult]
    matched: int

    def to_dict(self) -> dict[str, float | None]:
        """Flat {TensorBoard tag: value}: `eval/panoptic/...`, `eval/joint_panoptic/...` (PQ keys),
        `eval/panoptic_attribute_accuracy/<name>` and `eval/panoptic_attribute_f1/<name>/{micro,macro}`."""
        out = {**self.panoptic.to_dict(), **self.joint.to_dict()}
        for name, a in self.attributes.items():
            out[f"eval/panoptic_attribute_accuracy/{name}"] = a.accuracy
        for name, m in self.multi_label.items():
            for average in ("micro", "macro"):
                out[f"eval/panoptic_attribute_f1/{name}/{average}"] = getattr(m, average)["f1"]
        return out


def _label(segment: Mapping[str, Any], name: str) -> Any:
    value = (segment.get("attributes") or {}).get(name, UNLABELED)
    return UNLABELED if value is None else value


def _value_set(value: Any, k: int, where: str) -> np.ndarray:
    if isinstance(value, (int, np.integer)) or not all(isinstance(v, (int, np.integer)) for v in value):
        raise input_error("bad_attribute", where, f"a multi-label group takes a list of value indices, got {value!r}")
    hot = np.zeros(k, dtype=bool)
    if any(not 0 <= v < k for v in value):
        raise input_error("bad_attribute", where, f"values must be 0..{k - 1}, got {list(value)}")
    hot[list(value)] = True
    return hot


def _single(value: Any, k: int, where: str, allow_none: bool) -> int:
    low = UNLABELED if allow_none else 0
    if not isinstance(value, (int, np.integer)) or not low <= value < k:
        raise input_error("bad_attribute", where,
                          f"a single-label group takes a value index {low}..{k - 1}, got {value!r}")
    return int(value)


class PanopticAttributeEvaluator:
    """Accumulates PQ, joint PQ and the attribute scores image by image (`add`), then `result()`."""

    def __init__(self, categories: Sequence[Mapping[str, Any]] | CategoryTable, attributes: Iterable[Any]) -> None:
        self.table = categories if isinstance(categories, CategoryTable) else CategoryTable.from_records(categories)
        self.groups = _groups(attributes)
        c = len(self.table.ids)
        self.pq, self.joint = PQCounts.zeros(c), PQCounts.zeros(c)
        self.confusion = {g.name: np.zeros((len(g.values), len(g.values) + 1), np.int64)
                          for g in self.groups if not g.multi}
        self.set_counts = {g.name: np.zeros((3, len(g.values)), np.int64) for g in self.groups if g.multi}  # tp fp fn
        self.labeled = {g.name: 0 for g in self.groups}
        self.unlabeled = {g.name: 0 for g in self.groups}
        self.images = 0

    def add(self, where: str, gt_map: Any, gt_segments: Sequence[Mapping[str, Any]], pred_map: Any,
            pred_segments: Sequence[Mapping[str, Any]]) -> SegmentMatch:
        """One image (arguments as `metrics.panoptic.match_segments`); returns its match."""
        match = match_segments(gt_map, gt_segments, pred_map, pred_segments, self.table, where)
        agree = np.ones(len(match.pairs), dtype=bool)
        for i, (g, p) in enumerate(match.pairs):
            agree[i] = self._score_pair(gt_segments[g], pred_segments[p], f"{where} prediction segments_info[{p}]",
                                        f"{where} ground truth segments_info[{g}]")
        self.pq.add(match)
        self.joint.add(match, keep=agree)
        self.images += 1
        return match

    def _score_pair(self, gt: Mapping[str, Any], pred: Mapping[str, Any], pred_where: str, gt_where: str) -> bool:
        """Counts one matched pair into the attribute scores; True when every labeled single group is right."""
        right = True
        predicted = pred.get("attributes") or {}
        for group in self.groups:
            k = len(group.values)
            if group.name not in predicted:
                raise input_error("missing_attribute", f"{pred_where}.attributes",
                                  f"has no {group.name!r} (predictions carry every attribute group)")
            truth = _label(gt, group.name)
            if isinstance(truth, (int, np.integer)) and truth == UNLABELED:
                self.unlabeled[group.name] += 1
                continue
            self.labeled[group.name] += 1
            if group.multi:
                t = _value_set(truth, k, f"{gt_where}.attributes.{group.name}")
                d = _value_set(predicted[group.name], k, f"{pred_where}.attributes.{group.name}")
                self.set_counts[group.name] += np.stack([t & d, ~t & d, t & ~d])
                continue
            t = _single(truth, k, f"{gt_where}.attributes.{group.name}", allow_none=False)
            d = _single(predicted[group.name], k, f"{pred_where}.attributes.{group.name}", allow_none=True)
            self.confusion[group.name][t, d if d != UNLABELED else k] += 1
            right &= t == d
        return right

    def result(self) -> PanopticAttributeResult:
        attributes, multi_label = {}, {}
        for g in self.groups:
            if g.multi:
                multi_label[g.name] = _f1_result(g, self.set_counts[g.name], self.labeled[g.name],
                                                 self.unlabeled[g.name])
                continue
            confusion = self.confusion[g.name]
            correct, count = int(np.trace(confusion[:, : len(g.values)])), int(confusion.sum())
            attributes[g.name] = AttributeResult(g.name, list(g.values), correct / count if count else None,
                                                          correct, count, self.unlabeled[g.name], confusion.tolist())
        return PanopticAttributeResult(
            panoptic=pq_result(self.pq, self.table, self.images),
            joint=pq_result(self.joint, self.table, self.images, tag="eval/joint_panoptic"),
            attributes=attributes, multi_label=multi_label, matched=int(self.pq.tp.sum()))


def _f1_result(group: _Group, counts: np.ndarray, count: int, unlabeled: int) -> MultiLabelResult:
    tp, fp, fn = counts
    return multi_label_result(group.name, group.values, tp, fp, fn, count, unlabeled)


def evaluate_panoptic_attributes(predictions: Mapping[Any, Mapping[str, Any]],
                                 ground_truth: Mapping[Any, Mapping[str, Any]],
                                 categories: Sequence[Mapping[str, Any]] | CategoryTable,
                                 attributes: Iterable[Any]) -> PanopticAttributeResult:
    """PQ, joint PQ and attribute scores of in-memory predictions (the forms of `metrics.panoptic.evaluate_panoptic`,
    segments carrying "attributes"); attributes: the schema's groups (`schema.attributes`)."""
    evaluator = PanopticAttributeEvaluator(categories, attributes)
    for image in panoptic_images(predictions, ground_truth):
        evaluator.add(*image)
    return evaluator.result()


def evaluate_panoptic_attribute_files(gt_json: str | os.PathLike, pred_json: str | os.PathLike,
                                      attributes: Iterable[Any],
                                      gt_folder: str | os.PathLike | None = None,
                                      pred_folder: str | os.PathLike | None = None,
                                      progress: bool = False) -> PanopticAttributeResult:
    """The same on COCO panoptic files (metrics/panoptic_files.py) whose segments_info carry "attributes"."""
    from workbench.metrics.panoptic_files import panoptic_files

    table, images = panoptic_files(gt_json, pred_json, gt_folder, pred_folder, progress)
    evaluator = PanopticAttributeEvaluator(table, attributes)
    for image in images:
        evaluator.add(*image)
    return evaluator.result()
