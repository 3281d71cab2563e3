"""Panoptic and semantic evaluation of a trained model over a COCO panoptic or semantic data set.

The scores are workbench/metrics': PQ / SQ / RQ as panopticapi's `pq_compute`, with the attributes on matched
segments and the joint PQ (a segment counts only with its attributes right), and mIoU / fwIoU / mACC / pACC as
detectron2's `SemSegEvaluator`. Ground truth is read at the image's own size (the PNGs), the model predicts at
that size (`model.predict(..., tasks)` resizes its masks to each item's height and width), so augmentation at test
time never touches the ground truth.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.data.coco_panoptic import read_panoptic_png
from workbench.data.semantic_png import IGNORE_VALUE, read_label_png
from workbench.metrics.panoptic import categories_from_schema
from workbench.metrics.panoptic_attributes import PanopticAttributeEvaluator, PanopticAttributeResult
from workbench.metrics.semantic import SemanticEvaluator, SemanticResult

SEGMENT_TASKS = ("panoptic", "semantic")


@dataclass
class SegmentationEvalResult:
    """One evaluation of a panoptic or semantic model. `panoptic` holds PQ, joint PQ and the attribute scores
    (None for a semantic-only evaluation); `semantic` the mIoU family (None unless asked for). Mutable as
    EvalResult is: the pipeline records which checkpoint it scored in `checkpoint`."""

    task: str
    panoptic: PanopticAttributeResult | None
    semantic: SemanticResult | None
    data: dict[str, str] = field(default_factory=dict)  # {"path", "sha256"} of the ground truth
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Headline numbers by name, None and per-class values left out: `panoptic/PQ` (`_th`, `_st`, SQ, RQ),
        `joint_panoptic/PQ`..., `panoptic_attribute_accuracy/<name>`, `panoptic_attribute_f1/<name>/{micro,macro}`,
        `semantic/{mIoU,fwIoU,mACC,pACC}`. TensorBoard's eval/ tags and `solver.best_metric` use these names."""
        tags: dict[str, Any] = {}
        if self.panoptic is not None:
            tags.update(self.panoptic.to_dict())
        if self.semantic is not None:
            tags.update(self.semantic.to_dict())
        return {key.removeprefix("eval/"): float(v) for key, v in tags.items()
                if v is not None and "_class/" not in key}

    def table(self):
        """pandas DataFrame, one row per headline metric: metric, value, detail (PQ and IoU in %, accuracy as a
        fraction, as the instance table gives them)."""
        import pandas as pd

        rows = []
        if self.panoptic is not None:
            p = self.panoptic
            for name, result in (("PQ", p.panoptic), ("joint PQ", p.joint)):
                for suffix, group in (("", result.all), (" things", result.things), (" stuff", result.stuff)):
                    for key in ("PQ", "SQ", "RQ"):
                        label = f"{name}{suffix}" if key == "PQ" else f"{key}{suffix}" if name == "PQ" else None
                        if label:
                            rows.append((label, getattr(group, key), f"{group.n} classes, {result.images} images"))
            for name, a in p.attributes.items():
                rows.append((f"{name} accuracy", a.accuracy,
                             f"{a.correct}/{a.count} matched segments (IoU>0.5), {a.unlabeled} unlabeled excluded"))
            for name, m in p.multi_label.items():
                for avg in ("micro", "macro"):
                    rows.append((f"{name} f1 ({avg})", m.__getattribute__(avg)["f1"],
                                 f"{m.count} labeled matched segments, {m.unlabeled} unlabeled excluded"))
        if self.semantic is not None:
            s = self.semantic
            for key in ("mIoU", "fwIoU", "mACC", "pACC"):
                rows.append((key, getattr(s, key), f"{s.images} images, ignore {IGNORE_VALUE}"))
        frame = pd.DataFrame(rows, columns=["metric", "value", "detail"])
        frame["value"] = frame["value"].astype(float)
        return frame

    def per_class_table(self):
        """pandas DataFrame, one row per class (by name): PQ / SQ / RQ, TP / FP / FN and thing-or-stuff of a
        panoptic evaluation, IoU and ACC (%) of a semantic one; None where a class is undefined."""
        import pandas as pd

        rows: dict[str, dict[str, Any]] = {}
        if self.panoptic is not None:
            for name, c in self.panoptic.panoptic.per_class.items():
                rows[name] = {"kind": "thing" if c.isthing else "stuff", "PQ": c.PQ, "SQ": c.SQ, "RQ": c.RQ,
                              "TP": c.tp, "FP": c.fp, "FN": c.fn}
        if self.semantic is not None:
            for name, iou in self.semantic.iou.items():
                rows.setdefault(name, {}).update(IoU=iou, ACC=self.semantic.acc[name])
        return pd.DataFrame.from_dict(rows, orient="index")

    def to_dict(self) -> dict[str, Any]:
        from workbench.metrics.instance_result import json_safe

        return json_safe(asdict(self))


def _ground_truth(dataset, index: int) -> tuple[np.ndarray | None, list[dict], np.ndarray]:
    """Record `index` at its own size: panoptic ids (H, W) int32 or None (semantic label PNGs), its segments,
    and the semantic label map (H, W) (class per pixel, 255 = void or ignore; crowd keeps its class, as
    upstream's semantic maps made from panoptic annotations do)."""
    r = dataset.records[index]
    h, w = r["height"], r["width"]
    if "sem_seg_file_name" in r:
        labels = read_label_png(r["sem_seg_file_name"], dataset.schema.num_classes, h, w, dataset.where)
        return None, [], labels.astype(np.int64)
    ids = read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], h, w, dataset.where)
    labels = np.full((h, w), IGNORE_VALUE, dtype=np.int64)
    for seg in r["segments_info"]:
        labels[ids == seg["id"]] = seg["category_id"]
    return ids, r["segments_info"], labels


@torch.no_grad()
def evaluate_segments(model, dataset, task: str, progress: bool = True, batch_size: int = 4,
                      semantic: bool | None = None) -> SegmentationEvalResult:
    """Predict every image of `dataset` (workbench.data.segmentation.SegmentationDataset) for `task`
    ("panoptic": PQ + attributes + joint PQ, and mIoU too when `semantic` is True; "semantic": mIoU) and score it."""
    if task not in SEGMENT_TASKS:
        raise ValueError(f"task must be one of {SEGMENT_TASKS}, got {task!r}")
    semantic = (task == "semantic") if semantic is None else semantic
    has_panoptic = task == "panoptic" and all("pan_seg_file_name" in r for r in dataset.records)
    if task == "panoptic" and not has_panoptic:
        raise ValueError(f"{dataset.where}: semantic label maps hold no segments: they score task 'semantic' only")
    schema = dataset.schema
    panoptic_eval = (PanopticAttributeEvaluator(categories_from_schema(schema), model.cfg.attributes)
                     if has_panoptic else None)
    semantic_eval = SemanticEvaluator([c.name for c in schema.categories]) if semantic else None
    tasks = tuple(t for t, on in (("panoptic", has_panoptic), ("semantic", semantic)) if on)
    model.eval()
    n = len(dataset)
    for start in tqdm(range(0, n, batch_size), desc=f"evaluate {task}", disable=not progress, dynamic_ncols=True):
        indices = list(range(start, min(n, start + batch_size)))
        items = [dataset[i] for i in indices]
        for i, item, pred in zip(indices, items, model.predict(items, tasks=tasks)):
            ids, segments, labels = _ground_truth(dataset, i)
            where = f"{dataset.where} image {item.get('image_id', i)}"
            if panoptic_eval is not None:
                panoptic_eval.add(where, ids, segments, pred["panoptic_seg"].cpu(), pred["segments_info"])
            if semantic_eval is not None:
                semantic_eval.add(pred["sem_seg"].cpu(), labels, where)
    return SegmentationEvalResult(
        task=task, panoptic=panoptic_eval.result() if panoptic_eval is not None else None,
        semantic=semantic_eval.result() if semantic_eval is not None else None)


def write_segmentation_metrics(result: SegmentationEvalResult, path: str | os.PathLike,
                               data: Mapping[str, str] | None = None) -> None:
    """metrics.json of a panoptic or semantic run (atomic, as the instance one)."""
    import dataclasses

    from workbench.data.io import write_json_atomic

    if data is not None:
        result = dataclasses.replace(result, data=dict(data))
    write_json_atomic(path, result.to_dict(), indent=2)
