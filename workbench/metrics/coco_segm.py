"""Mask AP as pycocotools' COCOeval computes it (iouType "segm"), and the true positives it matches.

segm AP  AP (IoU .50:.95), AP50, AP75, APs, APm, APl in percent, over the images evaluated (as detectron2 does),
         at most `maxDets` instances per image. Per-category AP too. A value is None where COCOeval has nothing
         to average (no GT in that area range).

true positives  the (detection, GT) pairs COCOeval's own matching at IoU 0.50 makes (greedy by ranking score,
         same category, area "all", not on a crowd region): what the attribute scores (attributes.py) are
         measured on.

engine/evaluate.py builds the detections from a model's predictions and runs these; joint_ap.py is the same
COCOeval with an attribute condition on each match.
"""
from __future__ import annotations

import contextlib
import io
from typing import Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.data.masks import segmentation_to_mask
from workbench.metrics.coco_index import coco_from_dict

__all__ = ["AP_KEYS", "TP_IOU", "ground_truth_coco", "per_category_ap", "run_cocoeval", "summarize", "true_positives"]

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
TP_IOU = 0.5


def ground_truth_coco(data: dict) -> COCO:
    """A COCO object over copies of the annotations (COCOeval rewrites them), re-numbered 1..n.

    COCOeval uses 0 for "unmatched", so a file with annotation id 0 would break its matching; the original id
    is kept as `source_id`. Missing `area` / `iscrowd` are filled in.
    """
    images = {im["id"]: im for im in data["images"]}
    anns = []
    for i, ann in enumerate(data["annotations"], start=1):
        ann = dict(ann, id=i, source_id=ann["id"])
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            im = images[ann["image_id"]]
            ann["area"] = float(segmentation_to_mask(ann["segmentation"], im["height"], im["width"]).sum())
        anns.append(ann)
    return coco_from_dict({"images": list(data["images"]), "categories": list(data["categories"]), "annotations": anns})


def run_cocoeval(evaluator: COCOeval, image_ids: list[int], max_dets: int) -> COCOeval:
    evaluator.params.imgIds = image_ids
    evaluator.params.maxDets = [max_dets]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def summarize(evaluator: COCOeval) -> dict[str, float | None]:
    """COCOeval.summarize()'s AP lines (in percent) without its printing, at the single maxDets used."""
    p = evaluator.params
    precision = evaluator.eval["precision"]  # (T, R, K, A, M)
    area = {label: i for i, label in enumerate(p.areaRngLbl)}

    def mean(t=None, a="all", k=slice(None)):
        x = precision[:, :, k, area[a], -1]
        if t is not None:
            x = x[np.isclose(p.iouThrs, t)]
        x = x[x > -1]
        return None if x.size == 0 else float(np.mean(x) * 100)

    return {"AP": mean(), "AP50": mean(t=0.5), "AP75": mean(t=0.75),
            "APs": mean(a="small"), "APm": mean(a="medium"), "APl": mean(a="large")}


def per_category_ap(evaluator: COCOeval, names: Mapping[int, str]) -> dict[str, float | None]:
    """{category name: AP (IoU .50:.95, area "all") in percent}; `names` maps category id -> name. COCOeval's
    k-th precision column is its k-th `params.catIds` (sorted by id), not the file's k-th category."""
    column = {cat_id: k for k, cat_id in enumerate(evaluator.params.catIds)}
    per_category = {}
    for cat_id, name in names.items():  # in the caller's (the schema's) order
        x = evaluator.eval["precision"][:, :, column[cat_id], 0, -1]
        x = x[x > -1]
        per_category[name] = None if x.size == 0 else float(np.mean(x) * 100)
    return per_category


def true_positives(evaluator: COCOeval) -> list[tuple[int, int]]:
    """(detection id, GT id) pairs COCOeval matched at IoU 0.50, area "all", not on crowd regions."""
    t = int(np.flatnonzero(np.isclose(evaluator.params.iouThrs, TP_IOU))[0])
    all_area = evaluator.params.areaRng[evaluator.params.areaRngLbl.index("all")]
    pairs = []
    for e in evaluator.evalImgs:
        if e is None or list(e["aRng"]) != list(all_area):
            continue
        for d, (dt_id, gt_id) in enumerate(zip(e["dtIds"], e["dtMatches"][t])):
            if gt_id > 0 and not e["dtIgnore"][t, d]:
                pairs.append((int(dt_id), int(gt_id)))
    return pairs
