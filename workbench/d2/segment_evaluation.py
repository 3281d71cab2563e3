"""Panoptic and semantic evaluation through detectron2's evaluator interface, scored by workbench/metrics.

`MultiTaskPanopticEvaluator` reads the model's "panoptic_seg" and "sem_seg" outputs (whichever are there), and
scores them against a dataset registered with `register_multitask_coco_panoptic`, at each image's own size,
with the engine's scorers (workbench/engine/evaluate_segments.py uses the same): PQ / SQ / RQ as panopticapi's
`pq_compute`, the attributes on matched segments and the joint PQ (a segment counts only with its attributes
right), and mIoU / fwIoU / mACC / pACC as detectron2's SemSegEvaluator. Results, in detectron2's layout:

    results["panoptic_seg"]         {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}
                                    (COCOPanopticEvaluator's keys)
    results["joint_panoptic"]       the same keys for the joint PQ
    results["panoptic_attributes"]  {"<name>_accuracy": % of matched segments with the attribute right,
                                    "<name>_count": matched labeled segments judged}, per attribute predicted
    results["sem_seg"]              {"mIoU", "fwIoU", "mACC", "pACC", "IoU-<class>", "ACC-<class>"}
                                    (SemSegEvaluator's keys)

Undefined values are NaN, as detectron2 reports them. Writes the engine's metrics.json (the full result:
per-class PQ, confusions) to `output_dir`.
"""
from __future__ import annotations

import itertools
import math
import os
from typing import Any

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from workbench.data.coco_panoptic import read_panoptic_png
from workbench.data.semantic_png import IGNORE_VALUE
from workbench.engine.evaluate_segments import SegmentationEvalResult, write_segmentation_metrics
from workbench.metrics.panoptic import categories_from_schema
from workbench.metrics.panoptic_attributes import PanopticAttributeEvaluator
from workbench.metrics.semantic import SemanticEvaluator

__all__ = ["MultiTaskPanopticEvaluator", "detectron2_results"]

def _nan(value) -> float:
    return math.nan if value is None else float(value)


def detectron2_results(result: SegmentationEvalResult) -> dict[str, dict[str, float]]:
    """The engine's result in detectron2's layout (module docstring)."""
    out: dict[str, dict[str, float]] = {}
    if result.panoptic is not None:
        p = result.panoptic
        for key, pq in (("panoptic_seg", p.panoptic), ("joint_panoptic", p.joint)):
            groups = {"": pq.all, "_th": pq.things, "_st": pq.stuff}
            out[key] = {f"{k}{s}": _nan(getattr(g, k)) for s, g in groups.items() for k in ("PQ", "SQ", "RQ")}
        attributes = {}
        for name, a in p.attributes.items():
            attributes[f"{name}_accuracy"] = math.nan if a.accuracy is None else 100.0 * a.accuracy
            attributes[f"{name}_count"] = float(a.count)
        out["panoptic_attributes"] = attributes
    if result.semantic is not None:
        s = result.semantic
        sem = {k: _nan(getattr(s, k)) for k in ("mIoU", "fwIoU", "mACC", "pACC")}
        sem.update({f"IoU-{n}": _nan(v) for n, v in s.iou.items()})
        sem.update({f"ACC-{n}": _nan(v) for n, v in s.acc.items()})
        out["sem_seg"] = sem
    return out


class MultiTaskPanopticEvaluator(DatasetEvaluator):
    """PQ + attributes + joint PQ, and mIoU, of a dataset registered with `register_multitask_coco_panoptic`.

    attribute_names: the attributes the model predicts (MODEL.MULTITASK.ATTRIBUTE_NAMES; a subset of the
    dataset's); None = all of the dataset's. Predictions are kept per image as label maps (int32 ids, int16
    classes), so memory grows with the images evaluated, as COCOPanopticEvaluator's PNG buffers do.
    """

    def __init__(self, dataset_name: str, attribute_names=None, distributed: bool = True,
                 output_dir: str | None = None) -> None:
        meta = MetadataCatalog.get(dataset_name)
        self._schema = getattr(meta, "schema", None)
        if self._schema is None:
            raise KeyError(f"dataset {dataset_name!r} was not registered with workbench.d2."
                           f"register_multitask_coco_panoptic (its metadata has no schema)")
        names = list(self._schema.attribute_names if attribute_names is None else attribute_names)
        unknown = [n for n in names if n not in self._schema.attribute_names]
        if unknown:
            raise ValueError(f"attributes {unknown} are not in dataset {dataset_name!r} "
                             f"({list(self._schema.attribute_names)})")
        self._attributes = [a for a in self._schema.attributes if a.name in names]
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir

    def reset(self) -> None:
        self._predictions: list[tuple[int, dict[str, Any]]] = []

    def process(self, inputs, outputs) -> None:
        for x, output in zip(inputs, outputs):
            record: dict[str, Any] = {}
            if "panoptic_seg" in output:
                ids, segments = output["panoptic_seg"]
                record["panoptic"] = (ids.cpu().numpy().astype(np.int32), [dict(s) for s in segments])
            if "sem_seg" in output:
                record["semantic"] = output["sem_seg"].argmax(0).cpu().numpy().astype(np.int16)
            if record:
                self._predictions.append((int(x["image_id"]), record))

    def evaluate(self) -> dict[str, dict[str, float]]:
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        if not predictions:
            return {}
        records = {r["image_id"]: r for r in DatasetCatalog.get(self._dataset_name)}
        has_panoptic = "panoptic" in predictions[0][1]
        has_semantic = "semantic" in predictions[0][1]
        panoptic = (PanopticAttributeEvaluator(categories_from_schema(self._schema), self._attributes)
                    if has_panoptic else None)
        semantic = SemanticEvaluator(list(self._schema.category_names)) if has_semantic else None
        for image_id, pred in predictions:
            if image_id not in records:
                raise KeyError(f"prediction for image_id {image_id}, which dataset {self._dataset_name!r} lacks")
            r = records[image_id]
            where = f"{self._dataset_name} image {image_id}"
            ids = read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], r["height"], r["width"], where)
            if panoptic is not None:
                pred_ids, pred_segments = pred["panoptic"]
                panoptic.add(where, ids, r["segments_info"], pred_ids, pred_segments)
            if semantic is not None:
                labels = np.full(ids.shape, IGNORE_VALUE, dtype=np.int64)  # void 255; crowd keeps its class
                for s in r["segments_info"]:
                    labels[ids == s["id"]] = s["category_id"]
                semantic.add(pred["semantic"], labels, where)
        task = "panoptic" if has_panoptic else "semantic"
        result = SegmentationEvalResult(task=task, panoptic=panoptic.result() if panoptic is not None else None,
                                        semantic=semantic.result() if semantic is not None else None)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            write_segmentation_metrics(result, os.path.join(self._output_dir, "metrics.json"))
        return detectron2_results(result)
