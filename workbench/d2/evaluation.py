"""COCOEvaluator plus the workbench's attribute accuracy and joint AP (`workbench.engine.evaluate`).

`MultiTaskCOCOEvaluator` runs detectron2's COCOEvaluator unchanged (bbox and segm AP; its ranking is the model's
`Instances.scores`, i.e. MODEL.MULTITASK.SCORING) and adds, from `evaluate_predictions` on the same images:

    results["attributes"]  {"<name>_accuracy": %, "<name>_count": true positives judged, "<name>_predicted":
                           1.0 | 0.0} for every attribute of the dataset
    results["joint"]       {"AP", "AP50", "AP75", "APs", "APm", "APl"}: a detection counts only with every
                           labeled attribute right (see workbench/engine/evaluate.py)

The model may predict fewer attributes than the dataset has (MODEL.MULTITASK.ATTRIBUTE_NAMES is a subset; the
ones predicted are read from the Instances' `pred_attr_<name>` fields): those are scored, joint AP judges only
those, and the others are reported as not predicted (`_predicted` 0.0, accuracy NaN, count 0, and listed in
metrics.json's config.attributes_not_predicted). Writes `metrics.json` (the full `EvalResult`: confusions,
per-category AP, counts) to `output_dir`.
Masks are kept as RLE while processing and decoded one image at a time while evaluating.
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from pycocotools import mask as mask_utils

from workbench.config import EvalConfig
from workbench.d2.modeling import prediction_from_instances
from workbench.data.schema import load_coco
from workbench.engine.evaluate import AP_KEYS, EvalResult, evaluate_predictions, write_metrics_json
from workbench.engine.scoring import encode_masks

__all__ = ["MultiTaskCOCOEvaluator", "ground_truth_without", "multitask_results"]


class _DecodedPredictions(Mapping):
    """{image_id: prediction} whose masks are decoded from RLE when an image is looked up."""

    def __init__(self, records: dict[int, dict[str, Any]]) -> None:
        self._records = records

    def __getitem__(self, image_id: int) -> dict[str, Any]:
        record = dict(self._records[image_id])
        rles, (h, w) = record.pop("rles"), record.pop("size")
        masks = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool) if rles else np.zeros((0, h, w), bool)
        return {**record, "masks": masks}

    def __iter__(self) -> Iterator[int]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


def _float_or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def multitask_results(result: EvalResult, dataset_attributes=()) -> dict[str, dict[str, float]]:
    """The entries added to detectron2's results (undefined values as NaN, as detectron2 reports them); the
    `dataset_attributes` missing from `result` are reported as not predicted."""
    attributes = {}
    for name, a in result.attributes.items():
        attributes[f"{name}_accuracy"] = math.nan if a.accuracy is None else 100.0 * a.accuracy
        attributes[f"{name}_count"] = float(a.count)
        attributes[f"{name}_predicted"] = 1.0
    for name in dataset_attributes:
        if name not in result.attributes:
            attributes.update({f"{name}_accuracy": math.nan, f"{name}_count": 0.0, f"{name}_predicted": 0.0})
    return {"attributes": attributes, "joint": {k: _float_or_nan(result.joint.get(k)) for k in AP_KEYS}}


def ground_truth_without(json_file: str, attribute_names) -> dict:
    """The COCO-with-attributes file without `attribute_names` (header and annotations): what a model that does
    not predict them is judged against (those attributes then set no condition in joint AP)."""
    drop = set(attribute_names)
    data = load_coco(json_file)
    annotations = []
    for a in data["annotations"]:
        if a.get("attributes"):
            a = {**a, "attributes": {k: v for k, v in a["attributes"].items() if k not in drop}}
        annotations.append(a)
    return {**data, "attributes": [a for a in data.get("attributes", []) if a["name"] not in drop],
            "annotations": annotations}


class MultiTaskCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator for a dataset registered with `register_multitask_coco`, plus attribute metrics.

    scoring: the EvalConfig.scoring of the added metrics; use the model's MODEL.MULTITASK.SCORING so that they
    rank instances as COCOEvaluator does. Other arguments are COCOEvaluator's. The attributes scored are the
    dataset's that the predictions carry (module docstring).
    """

    def __init__(self, dataset_name: str, scoring: str = "main", tasks=None, distributed: bool = True,
                 output_dir: str | None = None, *, max_dets_per_image: int | None = None, **kwargs) -> None:
        super().__init__(dataset_name, tasks=tasks, distributed=distributed, output_dir=output_dir,
                         max_dets_per_image=max_dets_per_image, **kwargs)
        meta = MetadataCatalog.get(dataset_name)
        if not hasattr(meta, "attribute_names"):
            raise KeyError(f"dataset {dataset_name!r} has no attribute metadata: register it with "
                           f"workbench.d2.register_multitask_coco")
        self._attribute_names = tuple(meta.attribute_names)
        self._gt_json = meta.json_file
        self._eval_cfg = EvalConfig(scoring=scoring, max_dets=max_dets_per_image or 100)

    def reset(self) -> None:
        super().reset()
        self._multitask: list[tuple[int, dict[str, Any]]] = []

    def process(self, inputs, outputs) -> None:
        super().process(inputs, outputs)
        for x, output in zip(inputs, outputs):
            if "instances" not in output:
                continue
            instances = output["instances"]
            predicted = [n for n in self._attribute_names if instances.has(f"pred_attr_{n}")]
            pred = prediction_from_instances(instances, predicted)
            masks = pred.pop("masks")
            self._multitask.append((int(x["image_id"]), {**pred, "rles": encode_masks(masks),
                                                          "size": tuple(masks.shape[-2:])}))

    def evaluate(self, img_ids=None):
        results = super().evaluate(img_ids)
        records = self._multitask
        if self._distributed:
            comm.synchronize()
            records = list(itertools.chain(*comm.gather(records, dst=0)))
            if not comm.is_main_process():
                return {}
        if img_ids is not None:
            wanted = set(img_ids)
            records = [r for r in records if r[0] in wanted]
        if not records:
            return results
        predicted = set(records[0][1]["attributes"])
        if any(set(r["attributes"]) != predicted for _, r in records):
            raise ValueError(f"predictions carry different pred_attr_<name> fields from image to image: "
                             f"{sorted({tuple(sorted(r['attributes'])) for _, r in records})}")
        not_predicted = [n for n in self._attribute_names if n not in predicted]
        gt = ground_truth_without(self._gt_json, not_predicted) if not_predicted else self._gt_json
        metrics = evaluate_predictions(gt, _DecodedPredictions(dict(records)), eval_cfg=self._eval_cfg)
        if not_predicted:
            metrics.config["attributes_not_predicted"] = not_predicted
            self._logger.info("Attributes of the dataset the model does not predict (not in MODEL.MULTITASK."
                              "ATTRIBUTE_NAMES), not scored: %s", not_predicted)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            write_metrics_json(metrics, os.path.join(self._output_dir, "metrics.json"))
        added = multitask_results(metrics, self._attribute_names)
        self._logger.info("Attribute accuracy (%% of true positives at IoU 0.5): %s; joint AP: %.2f",
                          added["attributes"], added["joint"]["AP"])
        results = dict(results or {})
        results.update(added)
        return results
