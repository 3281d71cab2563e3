"""Evaluation of instance predictions against a COCO-with-attributes file: segm AP, attributes, joint AP.

`evaluate_predictions(coco_gt, predictions, schema, eval_cfg)` takes one prediction dict per image (the format
of `model/postprocess.instance_inference`, torch or numpy), checks it against the file, ranks and filters it,
turns it into COCO detections and runs the metrics, each defined in its own file of workbench/metrics/:

segm AP          metrics/coco_segm.py: COCOeval segm over the images present in `predictions` (as detectron2
                 does), at most `max_dets` instances per image, per category too; its IoU-0.50 true positives.
attributes       metrics/attributes.py: per single-label group accuracy and confusion, per multi-label group
                 precision / recall / F1, on those true positives.
joint AP         metrics/joint_ap.py: segm AP in which a match needs every labeled single-label attribute right.
AP(IoU+F1)       metrics/fashionpedia.py, when the schema has a multi-label group: every group's values (single
                 and multi) form one attribute vocabulary (ids = the values' `source_id` when the file keeps
                 them, as imported Fashionpedia files do); a single group contributes its predicted value unless
                 its no-object prob wins, a multi group its predicted set; categories with attributes are FPEval's
                 list for Fashionpedia's 46 categories, else those with at least one labeled GT attribute.

The result is a `metrics/instance_result.EvalResult` (written as metrics.json by `write_metrics_json`).
Ranking (`EvalConfig.scoring`), filters, duplicate suppression and `max_dets` are applied first, per image, by
`engine/scoring.select_instances`; the ranking score is the score COCOeval sees, so every number above uses it.
"""
from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any, Mapping

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from workbench.config import EvalConfig
from workbench.data.io import data_record, read_json, write_json_atomic
from workbench.data.problems import DataError
from workbench.data.schema import Schema, check_coco, check_schema_matches, load_coco
from workbench.engine.scoring import predicted_attribute_values, select_instances, take, to_numpy
from workbench.metrics.attributes import (AttributeResult, MultiLabelResult, attribute_result,
                                          multi_label_pairs_result)
from workbench.metrics.coco_index import coco_from_dict
from workbench.metrics.coco_segm import (AP_KEYS, TP_IOU, ground_truth_coco, per_category_ap, run_cocoeval, summarize,
                                         true_positives)
from workbench.metrics.fashionpedia import attribute_id_sets, default_attributed, iou_f1_ap
from workbench.metrics.instance_result import EvalResult
from workbench.metrics.joint_ap import JointCOCOeval

__all__ = [
    "AP_KEYS",
    "AttributeResult",
    "EvalResult",
    "MultiLabelResult",
    "evaluate_predictions",
    "read_metrics_json",
    "write_metrics_json",
]


def write_metrics_json(result: EvalResult, path: str | os.PathLike) -> None:
    """Write `result.to_dict()` to `path` atomically (temporary file in the same folder + os.replace)."""
    write_json_atomic(path, result.to_dict(), indent=2)


def read_metrics_json(path: str | os.PathLike) -> EvalResult:
    return EvalResult.from_dict(read_json(path))


# --- inputs ----------------------------------------------------------------------------------------------------
def _load_ground_truth(coco_gt: str | os.PathLike | Mapping, schema: Schema | None) -> tuple[dict, Schema, str]:
    if isinstance(coco_gt, Mapping):
        where, data = "coco_gt", dict(coco_gt)
        problems = check_coco(data, where)
        if problems:
            raise DataError(problems)
    else:
        where, data = str(coco_gt), load_coco(coco_gt)
    file_schema = Schema.from_coco(data, where)
    if schema is None:
        return data, file_schema, where
    check_schema_matches(data, schema, where)
    return data, schema, where


def _check_prediction(pred: dict, image_id: Any, image: dict, schema: Schema) -> None:
    where = f"predictions[{image_id!r}]"
    masks = pred.get("masks")
    if masks is None or "labels" not in pred:
        raise KeyError(f"{where}: needs 'masks' and 'labels' (has {sorted(pred)})")
    if masks.ndim != 3 or masks.shape[1:] != (image["height"], image["width"]):
        raise ValueError(f"{where}.masks: expected (N, {image['height']}, {image['width']}) at the original image "
                         f"size (file {image.get('file_name')!r}), got {tuple(masks.shape)}")
    labels = np.asarray(pred["labels"])
    if labels.shape != (masks.shape[0],):
        raise ValueError(f"{where}.labels: expected shape ({masks.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= schema.num_classes):
        raise ValueError(f"{where}.labels: must be category positions 0..{schema.num_classes - 1} (not COCO ids), "
                         f"got values {sorted(set(labels.tolist()))}")


# --- the evaluation --------------------------------------------------------------------------------------------
def evaluate_predictions(coco_gt: str | os.PathLike | Mapping, predictions: Mapping[Any, Mapping[str, Any]],
                         schema: Schema | None = None, eval_cfg: EvalConfig | None = None) -> EvalResult:
    """Evaluate per-image predictions against a COCO-with-attributes file (see the module docstring).

    coco_gt: path or dict (format-checked). predictions: {image_id: prediction dict} with masks bool (N, H, W)
    at the GT image's size, scores/labels/class_scores/mask_scores (N,), attributes/attribute_scores/
    attribute_no_object {name: (N,)} for every schema attribute; torch tensors are moved to CPU numpy. Only
    the images in `predictions` are evaluated (an image with N=0 is evaluated and predicted nothing).
    schema: checked against the file's vocabularies; None = the file's. eval_cfg: None = `EvalConfig()`.
    """
    eval_cfg = eval_cfg or EvalConfig()
    data, schema, where = _load_ground_truth(coco_gt, schema)
    images = {im["id"]: im for im in data["images"]}
    if not predictions:
        raise ValueError("predictions is empty: nothing to evaluate")
    names = tuple(schema.single_label_names)
    multi = tuple(schema.multi_label_names)
    num_values = {a.name: len(a.values) for a in schema.attributes}

    detections: list[dict] = []
    counts = {"images": 0, "predictions": 0, "removed_score_threshold": 0, "removed_no_object": 0,
              "removed_duplicate": 0, "removed_max_dets": 0}
    image_ids = []
    for key, raw in predictions.items():
        image_id = int(key)
        if image_id not in images:
            raise KeyError(f"predictions[{key!r}]: no image with that id in {where}")
        if image_id in image_ids:
            raise KeyError(f"predictions[{key!r}]: image id {image_id} given twice")
        pred = align_kinds(to_numpy(raw), schema)
        _check_prediction(pred, key, images[image_id], schema)
        image_ids.append(image_id)
        counts["images"] += 1
        counts["predictions"] += int(pred["masks"].shape[0])
        selection = select_instances(pred, eval_cfg, names, multi)
        for step, n in selection.removed.items():
            counts[f"removed_{step}"] += n
        kept = take({k: v for k, v in pred.items() if k != "masks"}, selection.index)  # masks are in rles
        values = predicted_attribute_values(kept, names, num_values) if names else {}
        for j, (rle, score) in enumerate(zip(selection.rles, selection.scores)):
            detections.append({
                "id": len(detections) + 1,
                "image_id": image_id,
                "category_id": schema.categories[int(kept["labels"][j])].id,
                "segmentation": rle,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
                "score": float(score),
                "attributes": {n: int(values[n][j]) for n in names},
                "attribute_sets": {n: np.flatnonzero(kept["attribute_sets"][n][j]).tolist() for n in multi},
            })
    image_ids = sorted(set(image_ids))
    counts["evaluated"] = len(detections)
    evaluated = set(image_ids)
    counts["ground_truth"] = sum(1 for a in data["annotations"] if a["image_id"] in evaluated and not a.get("iscrowd", 0))

    gt = ground_truth_coco(data)
    dt = coco_from_dict({"images": list(data["images"]), "categories": list(data["categories"]),
                     "annotations": detections})
    main = run_cocoeval(COCOeval(gt, dt, "segm"), image_ids, eval_cfg.max_dets)
    joint = run_cocoeval(JointCOCOeval(gt, dt, names), image_ids, eval_cfg.max_dets)

    per_category = per_category_ap(main, {category.id: category.name for category in schema.categories})
    pairs = true_positives(main)
    counts["true_positives"] = len(pairs)
    attributes = {a.name: attribute_result(a.name, list(a.values), pairs, gt, dt)
                  for a in schema.attributes if not a.multi}
    multi_label = {a.name: multi_label_pairs_result(a.name, list(a.values), pairs, gt, dt)
                   for a in schema.attributes if a.multi}
    iou_f1 = {}
    if multi:
        vocabulary, gt_ids, dt_ids = attribute_id_sets(schema, gt, dt)
        gt_data = {**gt.dataset, "annotations": [dict(a, attribute_ids=gt_ids[a["id"]]) for a in gt.dataset["annotations"]]}
        dets = [{k: d[k] for k in ("image_id", "category_id", "segmentation", "score", "area", "bbox")}
                | {"attribute_ids": dt_ids[d["id"]]} for d in detections]
        iou_f1 = iou_f1_ap(gt_data, dets, vocabulary, attributed=default_attributed(gt_data), image_ids=image_ids,
                           max_dets=eval_cfg.max_dets)
    return EvalResult(
        data=data_record(coco_gt) if not isinstance(coco_gt, Mapping) else {},
        segm=summarize(main),
        joint=summarize(joint),
        per_category_ap=per_category,
        attributes=attributes,
        max_dets=eval_cfg.max_dets,
        tp_iou=TP_IOU,
        counts=counts,
        config=asdict(eval_cfg),
        multi_label=multi_label,
        iou_f1=iou_f1,
    )


def align_kinds(pred: dict, schema: Schema) -> dict:
    """A prediction from a model whose group kinds differ from the file's (an ablation of `kind`), in the
    file's terms: a softmax group scored as multi-label predicts the set {its value} (empty where no-object
    wins); a sigmoid group scored as single-label predicts its most probable value, "no object" where no
    value passes its threshold. Groups whose kinds agree are untouched."""
    pred = dict(pred)
    for a in schema.attributes:
        sets = pred.get("attribute_sets", {})
        if a.multi and a.name not in sets and a.name in pred.get("attributes", {}):
            values = np.asarray(pred["attributes"][a.name]).astype(np.int64)
            score = np.asarray(pred["attribute_scores"][a.name])
            real = np.asarray(pred["attribute_no_object"][a.name]) <= score
            hot = np.zeros((len(values), len(a.values)), bool)
            hot[np.arange(len(values))[real], values[real]] = True
            pred["attribute_sets"] = {**sets, a.name: hot}
            pred["attribute_probs"] = {**pred.get("attribute_probs", {}), a.name: np.where(hot, score[:, None], 0.0)}
        elif not a.multi and a.name in sets and a.name not in pred.get("attributes", {}):
            probs = np.asarray(pred["attribute_probs"][a.name])
            chosen = np.asarray(sets[a.name]).any(1)
            pred["attributes"] = {**pred.get("attributes", {}), a.name: probs.argmax(1)}
            pred["attribute_scores"] = {**pred["attribute_scores"], a.name: probs.max(1)}
            pred["attribute_no_object"] = {**pred.get("attribute_no_object", {}),
                                           a.name: np.where(chosen, 0.0, 2.0)}  # > any prob: "no object"
    return pred
