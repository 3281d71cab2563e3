"""Evaluation and inference of multi-label groups: predicted sets, ranking, P/R/F1 on true positives, and
AP(IoU+F1) of our predictions equal to fashionpedia's FPEval on the same data."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from workbench.config import EvalConfig
from workbench.engine.evaluate import evaluate_predictions, read_metrics_json, write_metrics_json
from workbench.engine.scoring import ranking_scores, select_instances
from workbench.model.postprocess import instance_inference

S = 32


def square(i):
    m = np.zeros((S, S), bool)
    m[8 * (i // 3): 8 * (i // 3) + 7, 10 * (i % 3): 10 * (i % 3) + 8] = True
    return m


GT_PATTERNS = [[0, 2], [1], [], [0, 1, 2], [2], -1]  # -1 = unlabeled
GT_COLORS = [0, 1, 0, 1, -1, 0]
PRED_PATTERNS = [[0], [1, 2], [], [0, 1, 2], [0], [1]]


def gt_file(tmp_path):
    anns = []
    for i, (p, c) in enumerate(zip(GT_PATTERNS, GT_COLORS)):
        r = mask_utils.encode(np.asfortranarray(square(i).astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        anns.append({"id": i + 1, "image_id": 1, "category_id": 0, "iscrowd": 0, "area": float(square(i).sum()),
                     "bbox": [0, 0, 1, 1], "segmentation": r, "attributes": {"color": c, "pattern": p}})
    data = {"images": [{"id": 1, "file_name": "a.png", "height": S, "width": S}], "annotations": anns,
            "categories": [{"id": 0, "name": "garment"}],
            "attributes": [{"name": "color", "values": [{"id": 0, "name": "red"}, {"id": 1, "name": "blue"}]},
                           {"name": "pattern", "kind": "multi",
                            "values": [{"id": k, "name": n} for k, n in enumerate(["stripes", "dots", "plain"])]}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


def prediction():
    n = len(PRED_PATTERNS)
    sets = np.zeros((n, 3), bool)
    for i, p in enumerate(PRED_PATTERNS):
        sets[i, p] = True
    probs = np.where(sets, 0.9, 0.1)
    scores = np.linspace(0.9, 0.4, n)
    return {"masks": np.stack([square(i) for i in range(n)]), "scores": scores, "labels": np.zeros(n, int),
            "class_scores": scores, "mask_scores": np.ones(n), "query_index": np.arange(n),
            "attributes": {"color": np.array([0, 1, 1, 1, 0, 0])}, "attribute_scores": {"color": np.full(n, 0.8),
                                                                                        "pattern": np.full(n, 0.9)},
            "attribute_no_object": {"color": np.full(n, 0.1)}, "attribute_probs": {"pattern": probs},
            "attribute_sets": {"pattern": sets}}


def test_precision_recall_f1_micro_and_macro_on_true_positives(tmp_path):
    result = evaluate_predictions(gt_file(tmp_path), {1: prediction()})
    m = result.multi_label["pattern"]
    assert (m.count, m.unlabeled) == (5, 1)
    # per value over the 5 labeled TPs (GT vs predicted): {0,2}/{0}, {1}/{1,2}, {}/{}, {0,1,2}/{0,1,2}, {2}/{0}
    assert {v: (d["tp"], d["fp"], d["fn"]) for v, d in m.per_value.items()} == {
        "stripes": (2, 1, 0), "dots": (2, 0, 0), "plain": (1, 1, 2)}
    assert m.micro["precision"] == pytest.approx(5 / 7) and m.micro["recall"] == pytest.approx(5 / 7)
    assert m.micro["f1"] == pytest.approx(10 / 14)
    assert m.macro["precision"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert m.macro["recall"] == pytest.approx((1 + 1 + 1 / 3) / 3)
    assert m.macro["f1"] == pytest.approx((0.8 + 1 + 0.4) / 3)
    assert set(result.attributes) == {"color"}  # accuracy and joint AP: single-label groups
    write_metrics_json(result, tmp_path / "m.json")
    assert read_metrics_json(tmp_path / "m.json").multi_label["pattern"].micro == m.micro
    assert "pattern f1 (macro)" in set(result.table()["metric"])


def test_iou_f1_of_our_predictions_equals_fashionpedia_reference(tmp_path):
    np.float = float
    from fashionpedia.fp import Fashionpedia
    from fashionpedia.fp_eval import FPEval

    path = gt_file(tmp_path)
    ours = evaluate_predictions(path, {1: prediction()}).iou_f1
    # the same data in Fashionpedia's format, by hand: ids color 0..1, pattern 2..4
    data = json.loads(path.read_text())
    for a in data["annotations"]:
        col, pat = a.pop("attributes").values()
        a["attribute_ids"] = ([] if col == -1 else [col]) + ([] if pat == -1 else [2 + k for k in pat])
    data["attributes"] = [{"id": k, "name": f"a{k}", "supercategory": "s"} for k in range(5)]
    pred = prediction()
    results = []
    for i in range(len(PRED_PATTERNS)):
        r = mask_utils.encode(np.asfortranarray(pred["masks"][i].astype(np.uint8)))
        results.append({"image_id": 1, "category_id": 0, "segmentation": r, "score": float(pred["scores"][i]),
                        "attribute_ids": [int(pred["attributes"]["color"][i])] + [2 + k for k in PRED_PATTERNS[i]]})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = Fashionpedia()
        gt.dataset = data
        gt.createIndex()
        e = FPEval(gt, gt.loadRes(results), "segm")
        e.evaluate()
        e.accumulate()
        ref = e._summarize("ap")
    assert 0 < ref < 1
    assert ours["AP"] == pytest.approx(100 * ref, abs=1e-4)


def test_instance_inference_multi_group_sets_probs_and_score():
    q = 4
    class_logits = torch.zeros(q, 3)
    class_logits[:, 0] = 5.0
    pattern = torch.tensor([[3.0, -3.0, 0.5], [-3.0, -3.0, -3.0], [3.0, 3.0, 3.0], [0.0, 0.0, 0.0]])
    color = torch.randn(q, 3)
    out = instance_inference(class_logits, {"color": color, "pattern": pattern}, torch.zeros(q, 4, 4), (16, 16),
                             (16, 16), topk=q, multi_label={"pattern": 0.6})
    probs = pattern[out["query_index"]].sigmoid()
    assert torch.allclose(out["attribute_probs"]["pattern"], probs)
    assert torch.equal(out["attribute_sets"]["pattern"], probs > 0.6)
    expected = torch.where(probs > 0.6, probs, 1 - probs).mean(-1)
    assert torch.allclose(out["attribute_scores"]["pattern"], expected)
    assert "pattern" not in out["attributes"] and "pattern" not in out["attribute_no_object"]
    plain = instance_inference(class_logits, {"color": color}, torch.zeros(q, 4, 4), (16, 16), (16, 16), topk=q)
    assert "attribute_sets" not in plain  # single-only outputs keep their keys


def test_ranking_modes_include_multi_groups():
    pred = prediction()
    main = ranking_scores(pred, "main", ["color"])
    product = ranking_scores(pred, "product", ["color", "pattern"])
    assert np.allclose(product, main * 0.8 * 0.9)
    mean = ranking_scores(pred, "mean", ["color", "pattern"])
    assert np.allclose(mean, (pred["class_scores"] + 0.8 + 0.9) / 3)
    sel = select_instances(pred, EvalConfig(drop_no_object=True, scoring="product"), ["color"], ["pattern"])
    assert np.allclose(sel.scores, np.sort(product)[::-1])
