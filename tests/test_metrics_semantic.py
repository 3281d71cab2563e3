"""mIoU / fwIoU / mACC / pACC and per-class IoU / ACC (workbench/metrics/semantic.py) equal detectron2's
`SemSegEvaluator` (detectron2/evaluation/sem_seg_evaluation.py: `process` and `evaluate`), whose formulas are
transcribed below in float64 with NaN for undefined classes (detectron2 itself is optional here)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from workbench.data.problems import DataError
from workbench.metrics.semantic import SemanticEvaluator, confusion_matrix, evaluate_semantic

IGNORE = 255


def reference(pairs, num_classes, ignore_label=IGNORE):
    """detectron2's SemSegEvaluator on [(sem_seg scores (C, H, W), gt (H, W))]: `process` per image (argmax,
    ignore -> num_classes, bincount with rows = prediction), then `evaluate`'s formulas, x100, NaN kept."""
    conf = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for scores, gt in pairs:
        pred = np.array(scores.argmax(0), dtype=int)
        gt = np.array(gt, dtype=int)
        gt[gt == ignore_label] = num_classes
        conf += np.bincount((num_classes + 1) * pred.reshape(-1) + gt.reshape(-1),
                            minlength=conf.size).reshape(conf.shape)
    acc = np.full(num_classes, np.nan, dtype=float)
    iou = np.full(num_classes, np.nan, dtype=float)
    tp = conf.diagonal()[:-1].astype(float)
    pos_gt = np.sum(conf[:-1, :-1], axis=0).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        class_weights = pos_gt / np.sum(pos_gt)
        pos_pred = np.sum(conf[:-1, :-1], axis=1).astype(float)
        acc_valid = pos_gt > 0
        acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
        union = pos_gt + pos_pred - tp
        iou_valid = np.logical_and(acc_valid, union > 0)
        iou[iou_valid] = tp[iou_valid] / union[iou_valid]
        macc = np.sum(acc[acc_valid]) / np.sum(acc_valid)
        miou = np.sum(iou[iou_valid]) / np.sum(iou_valid)
        fiou = np.sum(iou[iou_valid] * class_weights[iou_valid])
        pacc = np.sum(tp) / np.sum(pos_gt)
    res = {"mIoU": 100 * miou, "fwIoU": 100 * fiou, "mACC": 100 * macc, "pACC": 100 * pacc}
    res.update({f"IoU-{i}": 100 * iou[i] for i in range(num_classes)})
    res.update({f"ACC-{i}": 100 * acc[i] for i in range(num_classes)})
    return res, conf


def assert_equals_reference(ours, ref, num_classes):
    def same(a, b):
        return (a is None and math.isnan(b)) or (a is not None and a == pytest.approx(b, abs=1e-9, rel=0))

    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert same(getattr(ours, key), ref[key]), (key, getattr(ours, key), ref[key])
    for i in range(num_classes):
        assert same(ours.iou[f"c{i}"], ref[f"IoU-{i}"]), i
        assert same(ours.acc[f"c{i}"], ref[f"ACC-{i}"]), i


def random_images(rng, num_classes, images=4, present=None):
    """Random scores and GT label maps with ignore pixels; GT drawn from `present` classes only (the others are
    absent from the GT, yet predicted)."""
    present = list(range(num_classes)) if present is None else present
    out = []
    for _ in range(images):
        h, w = rng.integers(5, 20, size=2)
        gt = rng.choice(present, size=(h, w))
        gt[rng.random((h, w)) < 0.1] = IGNORE
        scores = rng.random((num_classes, h, w)).astype(np.float32)
        agree = rng.random((h, w)) < 0.6  # mostly right, so IoUs spread
        rows, cols = np.nonzero(agree & (gt != IGNORE))
        scores[gt[rows, cols], rows, cols] += 2
        out.append((scores, gt))
    return out


@pytest.mark.parametrize("seed", range(10))
def test_random_label_maps_equal_detectron2(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 9))
    present = sorted(rng.choice(c, size=max(1, c - 2), replace=False).tolist())  # up to two classes absent
    pairs = random_images(rng, c, present=present)
    ref, conf = reference(pairs, c)
    ours = evaluate_semantic({i: {"sem_seg": torch.from_numpy(s)} for i, (s, _) in enumerate(pairs)},
                             {i: gt for i, (_, gt) in enumerate(pairs)}, [f"c{i}" for i in range(c)])
    assert np.array_equal(np.array(ours.confusion), conf)
    assert_equals_reference(ours, ref, c)


def test_absent_class_is_none_even_when_predicted_and_ignore_counts_nowhere():
    gt = np.array([[0, 0, IGNORE], [1, 1, IGNORE]])
    pred = np.array([[0, 2, 2], [1, 0, 1]])  # class 2 only predicted; ignored pixels predicted anything
    evaluator = SemanticEvaluator(["a", "b", "c"])
    evaluator.add(pred, gt)
    r = evaluator.result()
    assert r.iou["c"] is None and r.acc["c"] is None
    assert r.iou == {"a": pytest.approx(100 / 3), "b": pytest.approx(50.0), "c": None}  # a: 1/(2+2-1), b: 1/(2+1-1)
    assert r.mIoU == pytest.approx((100 / 3 + 50) / 2) and r.pACC == pytest.approx(50.0)
    assert r.fwIoU == pytest.approx(100 / 3 * 0.5 + 50 * 0.5)
    scores = np.eye(3)[pred].transpose(2, 0, 1)  # the same prediction as scores: the same result
    ref, _ = reference([(scores, gt)], 3)
    as_scores = SemanticEvaluator([f"c{i}" for i in range(3)])
    as_scores.add({"sem_seg": scores}, gt)
    assert_equals_reference(as_scores.result(), ref, 3)


def test_images_accumulate_into_one_matrix():
    rng = np.random.default_rng(3)
    pairs = random_images(rng, 4, images=3)
    e = SemanticEvaluator([f"c{i}" for i in range(4)])
    for scores, gt in pairs:
        e.add(scores, gt)
    total = sum(confusion_matrix(s.argmax(0), gt, 4) for s, gt in pairs)
    assert np.array_equal(e.confusion, total) and e.images == 3
    assert_equals_reference(e.result(), reference(pairs, 4)[0], 4)


def test_nothing_labelled_gives_none():
    r = evaluate_semantic({0: np.zeros((2, 2), int)}, {0: np.full((2, 2), IGNORE)}, ["a"])
    assert (r.mIoU, r.fwIoU, r.mACC, r.pACC) == (None, None, None, None)


def test_to_dict_uses_the_tensorboard_tags():
    r = evaluate_semantic({0: np.array([[0, 1]])}, {0: np.array([[0, 0]])}, ["road", "sky"])
    d = r.to_dict()
    assert d["eval/semantic/mIoU"] == r.mIoU == pytest.approx(50.0)
    assert d["eval/semantic_class/road/IoU"] == pytest.approx(50.0) and d["eval/semantic_class/sky/ACC"] is None
    assert set(d) == {"eval/semantic/mIoU", "eval/semantic/fwIoU", "eval/semantic/mACC", "eval/semantic/pACC",
                      *(f"eval/semantic_class/{n}/{k}" for n in ("road", "sky") for k in ("IoU", "ACC"))}


@pytest.mark.parametrize("pred, gt, code", [
    (np.array([[0, 5]]), np.array([[0, 0]]), "bad_sem_seg"),          # label map out of range
    (np.array([[0, IGNORE]]), np.array([[0, 0]]), "bad_sem_seg"),     # a prediction has no ignore label
    (np.zeros((3, 1, 2)), np.array([[0, 0]]), "bad_sem_seg"),         # 3 score maps for 2 classes
    (np.array([[0, 1]]), np.array([[0, 7]]), "bad_label"),            # GT label neither a class nor ignore
    (np.array([[0, 1]]), np.array([[0, 1, 1]]), "bad_label_map"),     # sizes differ
])
def test_bad_inputs_are_refused(pred, gt, code):
    with pytest.raises(DataError) as e:
        evaluate_semantic({"img1": pred}, {"img1": gt}, ["a", "b"])
    assert e.value.codes == [code] and "image 'img1'" in str(e.value)
