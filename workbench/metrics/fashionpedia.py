"""Fashionpedia's metric, AP(IoU+F1): a detection is a true positive only if its mask IoU *and* its attribute F1
with the ground truth both pass their thresholds.

Computed as the `fashionpedia` package's `FPEval` computes it (tests/test_fashionpedia.py checks equality
with it on generated data), re-implemented here on pycocotools' COCOeval:

attribute F1   of a (detection, GT) pair: both attribute sets become binary vectors over the *whole* attribute
               vocabulary of the ground-truth file (every attribute id of every group); F1 is sklearn's
               `average="macro"` over the classes present in either vector, i.e. the mean of
               F1(present) = 2|G&D| / (2|G&D| + |D-G| + |G-D|) and F1(absent), each only when that class occurs
               (two empty sets give F1 1).
categories     only categories *with attributes* use F1; the others are matched by IoU alone (plain COCOeval).
               Fashionpedia's evaluator hard-codes its list (`FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES`, category
               ids of its 46 classes) and applies it to any file, whatever its categories (its published
               sample has 48); `evaluate_fashionpedia_results` (fashionpedia_files.py) does the same for a GT in Fashionpedia's format
               or imported from it (rule "fashionpedia"), and otherwise takes the categories of which at least
               one GT annotation carries an attribute (rule "data"). The result says which.
matching       per image and category, detections by descending score (at most max_dets), GT non-ignored
               first; a detection takes the unmatched GT with IoU >= t_iou and F1 >= t_f1, and a later GT replaces
               it only if its IoU *and* its F1 are at least those of the current choice (FPEval's rule; plain
               COCO compares IoU only). Unlike plain COCO, a crowd GT in a category with attributes can be
               matched once only, as in FPEval.
thresholds     IoU 0.50:0.95 and F1 0.50:0.95, ten each; precision at COCO's 101 recall points, area "all",
               max_dets detections per image.
AP             the mean of the defined precision entries over IoU thresholds x recall points x (for each
               category with attributes: its ten F1 thresholds; for each other category: once), so a category
               with attributes weighs ten times as much -- as FPEval's summary does. Reported in percent.

Inputs are COCO dicts whose annotations (GT) and detections carry `attribute_ids` (lists of attribute ids),
and the vocabulary of attribute ids; `attribute_id_sets` gives them for our files and predictions (engine/evaluate.py),
fashionpedia_files.py for files in Fashionpedia's format (`workbench eval --fashionpedia-results`).
"""
from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, Any, Collection, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.data.categories import UNLABELED
from workbench.metrics.coco_index import coco_from_dict

if TYPE_CHECKING:
    from workbench.data.schema import Schema

__all__ = [
    "FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES",
    "F1_THRESHOLDS",
    "attribute_f1",
    "attribute_id_sets",
    "categories_with_attributes",
    "default_attributed",
    "attribute_vocabulary",
    "iou_f1_ap",
]

# fashionpedia.fp_eval.FPParams.catsWithAttributes: category ids of Fashionpedia's 46 classes that have attributes
FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES = (10, 7, 0, 6, 5, 4, 9, 31, 33, 3, 12, 11, 1, 2, 8, 32, 29, 28)
F1_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def attribute_f1(gt_ids: Collection[int], dt_ids: Collection[int], vocabulary_size: int) -> float:
    """Binary macro F1 of two attribute-id sets over a vocabulary of `vocabulary_size` attributes (see module)."""
    g, d = set(gt_ids), set(dt_ids)
    tp, fp, fn = len(g & d), len(d - g), len(g - d)
    tn = vocabulary_size - len(g | d)
    scores = []
    if g or d:  # the class "attribute present" occurs
        scores.append(2 * tp / (2 * tp + fp + fn))
    if len(g) < vocabulary_size or len(d) < vocabulary_size:  # the class "absent" occurs
        scores.append(2 * tn / (2 * tn + fp + fn))
    return float(np.mean(scores))


def categories_with_attributes(gt: Mapping[str, Any]) -> set[int]:
    """Category ids of which at least one GT annotation has a non-empty `attribute_ids`."""
    return {a["category_id"] for a in gt["annotations"] if a.get("attribute_ids")}


def default_attributed(gt: Mapping[str, Any]) -> Collection[int] | None:
    """FPEval's hard-coded list when `gt` has Fashionpedia's 46 categories (ids 0..45), else None (= the
    categories with an attribute in `gt`, see `iou_f1_ap`)."""
    if sorted(c["id"] for c in gt["categories"]) == list(range(46)):
        return FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES
    return None


class _IouF1Eval(COCOeval):
    """COCOeval whose categories with attributes match on IoU and F1 at `self.f1_threshold` (module docstring)."""

    def __init__(self, gt: COCO, dt: COCO, attributed: set[int], vocabulary_size: int):
        super().__init__(gt, dt, "segm")
        self.attributed, self.vocabulary_size = attributed, vocabulary_size
        self.f1_threshold = 0.5
        self._iou_cache: dict = {}

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name); the same for every F1 threshold
        key = (imgId, catId)
        if key not in self._iou_cache:
            self._iou_cache[key] = super().computeIoU(imgId, catId)
        return self._iou_cache[key]

    def _f1_matrix(self, dts: list[dict], gts: list[dict]) -> np.ndarray:
        """(D, G) attribute F1 of every pair, rows in `dts` order."""
        return np.array([[attribute_f1(g.get("attribute_ids") or [], d.get("attribute_ids") or [],
                                       self.vocabulary_size) for g in gts] for d in dts]).reshape(len(dts), len(gts))

    def evaluateImg(self, imgId, catId, aRng, maxDet):  # noqa: N802,N803
        if catId not in self.attributed:
            return super().evaluateImg(imgId, catId, aRng, maxDet)
        p = self.params
        gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            return None
        for g in gt:
            g["_ignore"] = 1 if (g["ignore"] or g["area"] < aRng[0] or g["area"] > aRng[1]) else 0
        gt_order = np.argsort([g["_ignore"] for g in gt], kind="mergesort")
        gt = [gt[i] for i in gt_order]
        dt_order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in dt_order[:maxDet]]
        ious = self.ious[imgId, catId]
        ious = ious[:, gt_order] if len(ious) > 0 else ious
        f1s = self._f1_matrix(dt, gt)
        num_t = len(p.iouThrs)
        gt_matches, dt_matches = np.zeros((num_t, len(gt))), np.zeros((num_t, len(dt)))
        gt_ignore = np.array([g["_ignore"] for g in gt])
        dt_ignore = np.zeros((num_t, len(dt)))
        if len(ious) > 0:
            for t, t_iou in enumerate(p.iouThrs):
                for d in range(len(dt)):
                    best_iou, best_f1, m = min(t_iou, 1 - 1e-10), min(self.f1_threshold, 1 - 1e-10), -1
                    for g in range(len(gt)):
                        if gt_matches[t, g] > 0:  # no crowd exemption here, as in FPEval
                            continue
                        if m > -1 and gt_ignore[m] == 0 and gt_ignore[g] == 1:
                            break
                        if ious[d, g] < best_iou or f1s[d, g] < best_f1:
                            continue
                        best_iou, best_f1, m = ious[d, g], f1s[d, g], g
                    if m == -1:
                        continue
                    dt_ignore[t, d] = gt_ignore[m]
                    dt_matches[t, d] = gt[m]["id"]
                    gt_matches[t, m] = dt[d]["id"]
        outside = np.array([d["area"] < aRng[0] or d["area"] > aRng[1] for d in dt]).reshape(1, len(dt))
        dt_ignore = np.logical_or(dt_ignore, np.logical_and(dt_matches == 0, np.repeat(outside, num_t, 0)))
        return {"image_id": imgId, "category_id": catId, "aRng": aRng, "maxDet": maxDet,
                "dtIds": [d["id"] for d in dt], "gtIds": [g["id"] for g in gt], "dtMatches": dt_matches,
                "gtMatches": gt_matches, "dtScores": [d["score"] for d in dt], "gtIgnore": gt_ignore,
                "dtIgnore": dt_ignore}


def iou_f1_ap(gt: Mapping[str, Any], detections: Sequence[Mapping[str, Any]], vocabulary: Collection[int],
              attributed: Collection[int] | None = None, image_ids: Sequence[int] | None = None,
              max_dets: int = 100) -> dict[str, float | None]:
    """AP(IoU+F1) and its 0.5 / 0.75 cuts, in percent (None where nothing is defined).

    gt: COCO dict (images, categories, annotations with `segmentation`, `area`, `iscrowd`, `attribute_ids`,
    ids > 0); detections: [{image_id, category_id, segmentation (RLE), score, attribute_ids}]; vocabulary:
    every attribute id of the GT file; attributed: category ids scored with F1 (None = those with an attribute
    in `gt`); image_ids: the images evaluated (None = all of `gt`).
    Keys: "AP" (IoU .50:.95 x F1 .50:.95), "AP_IOU50_F150", "AP_IOU75_F175", "AP_IOU50", "AP_IOU75" (IoU cut,
    F1 .50:.95).
    """
    attributed = set(categories_with_attributes(gt) if attributed is None else attributed)
    gt_coco = coco_from_dict({"images": list(gt["images"]), "categories": list(gt["categories"]),
                     "annotations": [dict(a) for a in gt["annotations"]]})
    dets = [dict(d, id=i + 1, iscrowd=0) for i, d in enumerate(detections)]
    for d in dets:
        d.setdefault("area", float(mask_utils.area(d["segmentation"])))
        d.setdefault("bbox", [float(v) for v in mask_utils.toBbox(d["segmentation"])])
    dt_coco = coco_from_dict({"images": list(gt["images"]), "categories": list(gt["categories"]), "annotations": dets})
    evaluator = _IouF1Eval(gt_coco, dt_coco, attributed, len(set(vocabulary)))
    evaluator.params.imgIds = sorted(image_ids if image_ids is not None else [im["id"] for im in gt["images"]])
    evaluator.params.maxDets = [max_dets]
    category_ids = list(evaluator.params.catIds)
    precision = []  # per F1 threshold: (T, R, K) at area "all"
    with contextlib.redirect_stdout(io.StringIO()):
        for f1_threshold in F1_THRESHOLDS:
            evaluator.f1_threshold = float(f1_threshold)
            evaluator.evaluate()
            evaluator.accumulate()
            precision.append(evaluator.eval["precision"][:, :, :, 0, -1].copy())
    precision = np.stack(precision, axis=1)  # (T, F, R, K)
    iou_thresholds = evaluator.params.iouThrs

    def mean(iou: float | None = None, f1: float | None = None) -> float | None:
        parts = []
        t = slice(None) if iou is None else np.isclose(iou_thresholds, iou)
        for k, category_id in enumerate(category_ids):
            if category_id in attributed:
                f = slice(None) if f1 is None else np.isclose(F1_THRESHOLDS, f1)
                parts.append(precision[t][:, f, :, k].ravel())
            else:  # IoU only: identical at every F1 threshold, counted once
                parts.append(precision[t][:, 0, :, k].ravel())
        x = np.concatenate(parts) if parts else np.zeros(0)
        x = x[x > -1]
        return None if x.size == 0 else float(np.mean(x) * 100)

    return {"AP": mean(), "AP_IOU50_F150": mean(0.5, 0.5), "AP_IOU75_F175": mean(0.75, 0.75),
            "AP_IOU50": mean(iou=0.5), "AP_IOU75": mean(iou=0.75)}


def attribute_vocabulary(schema) -> dict[tuple[str, int], int]:
    """(group, value id) -> attribute id for AP(IoU+F1): the values' `source_id`s when every group keeps them
    (imported Fashionpedia files), else 0, 1, ... over the groups in schema order."""
    keep = all(a.source_ids for a in schema.attributes)
    ids, n = {}, 0
    for a in schema.attributes:
        for k in range(len(a.values)):
            ids[a.name, k] = a.source_ids[k] if keep else n
            n += 1
    return ids


def attribute_id_sets(schema: Schema, gt: COCO, dt: COCO) -> tuple[list[int], dict[int, list[int]], dict[int, list[int]]]:
    """The vocabulary of attribute ids and each GT / detection annotation's attribute-id set (by annotation id).

    GT: a single group's labeled value, a multi group's values. Detections: a single group's predicted value
    unless its no-object prob wins (then none), a multi group's predicted set."""
    ids = attribute_vocabulary(schema)
    gt_ids, dt_ids = {}, {}
    for ann_id, ann in gt.anns.items():
        labels, out = ann.get("attributes") or {}, []
        for a in schema.attributes:
            v = labels.get(a.name, UNLABELED)
            if v is None or v == UNLABELED:
                continue
            out += [ids[a.name, k] for k in v] if a.multi else [ids[a.name, v]]
        gt_ids[ann_id] = sorted(out)
    for ann_id, ann in dt.anns.items():
        out = []
        for a in schema.attributes:
            if a.multi:
                out += [ids[a.name, k] for k in ann["attribute_sets"][a.name]]
            elif ann["attributes"][a.name] < len(a.values):  # K = no object: nothing predicted
                out.append(ids[a.name, ann["attributes"][a.name]])
        dt_ids[ann_id] = sorted(out)
    return sorted(ids.values()), gt_ids, dt_ids
