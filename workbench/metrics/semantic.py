"""Semantic segmentation scores as detectron2's `SemSegEvaluator` computes them: mIoU, fwIoU, mACC, pACC and
per-class IoU / ACC, in percent, from one confusion matrix accumulated over images with `np.bincount`.

The matrix is (C+1, C+1), rows = predicted class, columns = GT class; GT pixels equal to `ignore_label` (255)
go to the extra column C and so count nowhere. With tp = the diagonal, pos_gt = column sums and pos_pred = row
sums of the C x C block:
  ACC_c = tp_c / pos_gt_c, IoU_c = tp_c / (pos_gt_c + pos_pred_c - tp_c), both undefined (None; NaN in detectron2)
  for a class absent from the GT, even where it is predicted (those pixels still lower the IoU and ACC of the
  classes they belong to); mACC / mIoU = the mean over the defined classes; fwIoU = sum of IoU_c x pos_gt_c /
  sum(pos_gt); pACC = sum(tp) / sum(pos_gt). Everything is None when no pixel is labelled.

A prediction is {"sem_seg": float (C, H, W) class scores} (the model's semantic output; argmax gives the label
map, as detectron2 takes it), a bare (C, H, W) score array, or an int (H, W) label map in 0..C-1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from workbench.metrics.inputs import as_numpy, input_error, percent

__all__ = ["IGNORE_LABEL", "SemanticEvaluator", "SemanticResult", "confusion_matrix", "evaluate_semantic",
           "semantic_result"]

IGNORE_LABEL = 255


def predicted_labels(prediction: Any, num_classes: int, where: str = "prediction") -> np.ndarray:
    """int64 (H, W) labels of a prediction in any of the module's three forms."""
    if isinstance(prediction, Mapping):
        if "sem_seg" not in prediction:
            raise input_error("bad_semantic_item", where, f"needs 'sem_seg' (has {sorted(prediction)})")
        prediction = prediction["sem_seg"]
    if hasattr(prediction, "detach") and prediction.ndim == 3 and prediction.shape[0] == num_classes:
        prediction = prediction.argmax(0)  # on the tensor's device, as detectron2 does; only labels move
    x = as_numpy(prediction)
    if x.ndim == 3:
        if x.shape[0] != num_classes:
            raise input_error("bad_sem_seg", where, f"expected ({num_classes}, H, W) class scores, got {x.shape}")
        return x.argmax(0).astype(np.int64)
    if x.ndim == 2 and np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() >= num_classes):
            raise input_error("bad_sem_seg", where, f"label map values must be 0..{num_classes - 1}, got "
                              f"{x.min()}..{x.max()} (a prediction has no ignore label)")
        return x.astype(np.int64)
    raise input_error("bad_sem_seg", where,
                      f"expected (C, H, W) scores or an int (H, W) label map, got {x.dtype} {x.shape}")


def confusion_matrix(pred: np.ndarray, gt: Any, num_classes: int, ignore_label: int = IGNORE_LABEL,
                     where: str = "image") -> np.ndarray:
    """int64 (C+1, C+1), rows = predicted label (H, W), columns = GT label (H, W), ignored GT in column C."""
    gt = as_numpy(gt)
    if gt.shape != pred.shape or not np.issubdtype(gt.dtype, np.integer):
        raise input_error("bad_label_map", f"{where} ground truth", f"expected an int label map of the prediction's "
                          f"size {pred.shape}, got {gt.dtype} {gt.shape}")
    gt = gt.astype(np.int64)
    bad = (gt != ignore_label) & ((gt < 0) | (gt >= num_classes))
    if bad.any():
        raise input_error("bad_label", f"{where} ground truth", f"labels must be 0..{num_classes - 1} or "
                          f"{ignore_label} (ignore); found {np.unique(gt[bad])[:10].tolist()}")
    gt = np.where(gt == ignore_label, num_classes, gt)
    n = num_classes + 1
    return np.bincount(n * pred.ravel() + gt.ravel(), minlength=n * n).reshape(n, n)


@dataclass(frozen=True)
class SemanticResult:
    """The module docstring's scores in percent (None where undefined), per class by name, and the matrix."""

    mIoU: float | None
    fwIoU: float | None
    mACC: float | None
    pACC: float | None
    iou: dict[str, float | None]
    acc: dict[str, float | None]
    confusion: list[list[int]]
    images: int
    tag: str = "eval/semantic"

    def to_dict(self) -> dict[str, float | None]:
        """Flat {TensorBoard tag: value}: `eval/semantic/mIoU` (fwIoU, mACC, pACC), `eval/semantic_class/<name>/IoU`
        and `.../ACC` (detectron2's `IoU-<name>` / `ACC-<name>`)."""
        out = {f"{self.tag}/{k}": getattr(self, k) for k in ("mIoU", "fwIoU", "mACC", "pACC")}
        for name in self.iou:
            out[f"{self.tag}_class/{name}/IoU"] = self.iou[name]
            out[f"{self.tag}_class/{name}/ACC"] = self.acc[name]
        return out


def semantic_result(confusion: np.ndarray, class_names: Sequence[str], images: int = 0) -> SemanticResult:
    """detectron2's `SemSegEvaluator.evaluate` formulas on a (C+1, C+1) matrix (module docstring)."""
    c = len(class_names)
    block = confusion[:c, :c].astype(np.float64)
    tp = np.diagonal(block)
    pos_gt, pos_pred = block.sum(0), block.sum(1)
    union = pos_gt + pos_pred - tp
    valid = pos_gt > 0  # union > 0 follows
    acc = np.divide(tp, pos_gt, out=np.zeros(c), where=valid)
    iou = np.divide(tp, union, out=np.zeros(c), where=valid)
    labelled = pos_gt.sum()
    if labelled == 0:
        scores = (None, None, None, None)
    else:
        weights = pos_gt / labelled
        scores = (np.sum(iou[valid]) / valid.sum(), np.sum(iou[valid] * weights[valid]),
                  np.sum(acc[valid]) / valid.sum(), np.sum(tp) / labelled)
    m_iou, fw_iou, m_acc, p_acc = (percent(None if s is None else float(s)) for s in scores)
    return SemanticResult(
        mIoU=m_iou, fwIoU=fw_iou, mACC=m_acc, pACC=p_acc,
        iou={n: percent(float(iou[i])) if valid[i] else None for i, n in enumerate(class_names)},
        acc={n: percent(float(acc[i])) if valid[i] else None for i, n in enumerate(class_names)},
        confusion=confusion.tolist(), images=images)


class SemanticEvaluator:
    """Accumulates the confusion matrix image by image (`add`), then `result()`; memory is O(C^2)."""

    def __init__(self, class_names: Sequence[str], ignore_label: int = IGNORE_LABEL) -> None:
        self.class_names = list(class_names)
        self.ignore_label = ignore_label
        n = len(self.class_names) + 1
        self.confusion = np.zeros((n, n), dtype=np.int64)
        self.images = 0

    def add(self, prediction: Any, gt: Any, where: str = "image") -> None:
        """prediction: {"sem_seg": (C, H, W)}, (C, H, W) scores or int (H, W) labels; gt: int (H, W), 255 ignored."""
        pred = predicted_labels(prediction, len(self.class_names), f"{where} prediction")
        self.confusion += confusion_matrix(pred, gt, len(self.class_names), self.ignore_label, where)
        self.images += 1

    def result(self) -> SemanticResult:
        return semantic_result(self.confusion, self.class_names, self.images)


def evaluate_semantic(predictions: Mapping[Any, Any] | Iterable[tuple[Any, Any]], ground_truth: Mapping[Any, Any],
                      class_names: Sequence[str], ignore_label: int = IGNORE_LABEL) -> SemanticResult:
    """Scores of {image_id: prediction} against {image_id: int (H, W) label map}; only predicted images count."""
    items = predictions.items() if isinstance(predictions, Mapping) else predictions
    evaluator = SemanticEvaluator(class_names, ignore_label)
    for image_id, prediction in items:
        if image_id not in ground_truth:
            raise input_error("unknown_image", f"predictions[{image_id!r}]", "no ground truth for this image id")
        evaluator.add(prediction, ground_truth[image_id], where=f"image {image_id!r}")
    if evaluator.images == 0:
        raise input_error("no_predictions", "predictions", "is empty: nothing to evaluate")
    return evaluator.result()
