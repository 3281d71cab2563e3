"""Evaluation on hand-made predictions whose AP, joint AP and accuracies are known exactly.

COCO's AP for one category is the mean over 101 recall points r = 0, .01, ..., 1 of the best precision at
recall >= r (0 where that recall is never reached); AP is the mean over categories with ground truth. With
perfect masks every IoU threshold gives the same curve. E.g. TP then FP with 2 GT (the second never found):
precision 1 up to recall .5 -> 51 of 101 points -> AP 51/101.
"""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from workbench.config import EvalConfig
from workbench.data.masks import mask_to_rle
from workbench.data.problems import DataError
from workbench.data.schema import Schema
from workbench.engine.evaluate import (AP_KEYS, EvalResult, evaluate_predictions, read_metrics_json,
                                       write_metrics_json)
from workbench.engine.scoring import ranking_scores, select_instances, suppress_duplicates, encode_masks
from workbench.model.postprocess import instance_inference

H = W = 40
CIRCLE, SQUARE = 7, 9  # COCO ids on purpose not 1..C: labels are positions 0 (circle) and 1 (square)
COLORS, SIZES = ["red", "green", "blue"], ["small", "large"]
RED, GREEN, BLUE = 0, 1, 2
SMALL, LARGE = 0, 1


def box_mask(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_gt(images):
    """images: {image_id: [(category_id, mask, attributes dict), ...]} -> COCO-with-attributes dict."""
    anns = []
    for image_id, objects in images.items():
        for cat, mask, attrs in objects:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "segmentation": mask_to_rle(mask), "area": int(mask.sum()), "bbox": [0, 0, 1, 1],
                         "iscrowd": 0, "attributes": attrs})
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in images],
        "annotations": anns,
        "categories": [{"id": CIRCLE, "name": "circle"}, {"id": SQUARE, "name": "square"}],
        "attributes": [{"name": "color", "values": [{"id": k, "name": v} for k, v in enumerate(COLORS)]},
                       {"name": "size", "values": [{"id": k, "name": v} for k, v in enumerate(SIZES)]}],
    }


def inst(mask, label, score, color, size, attr_prob=0.9, no_object=0.05, mask_score=1.0, size_no_object=None):
    """One predicted instance; attribute probabilities shared by both heads unless given."""
    return dict(mask=mask, label=label, class_score=score, mask_score=mask_score, color=color, size=size,
                attr_prob=attr_prob, no_object=no_object,
                size_no_object=no_object if size_no_object is None else size_no_object)


def make_pred(instances, as_torch=False):
    """A prediction dict in `instance_inference`'s format."""
    n = len(instances)
    arr = lambda key, dtype: np.array([i[key] for i in instances], dtype=dtype).reshape(n)
    pred = {
        "masks": np.stack([i["mask"] for i in instances]) if n else np.zeros((0, H, W), bool),
        "scores": arr("class_score", np.float32) * arr("mask_score", np.float32),
        "labels": arr("label", np.int64),
        "class_scores": arr("class_score", np.float32),
        "mask_scores": arr("mask_score", np.float32),
        "query_index": np.arange(n),
        "attributes": {"color": arr("color", np.int64), "size": arr("size", np.int64)},
        "attribute_scores": {"color": arr("attr_prob", np.float32), "size": arr("attr_prob", np.float32)},
        "attribute_no_object": {"color": arr("no_object", np.float32), "size": arr("size_no_object", np.float32)},
    }
    if as_torch:
        conv = lambda v: torch.from_numpy(np.ascontiguousarray(v))
        pred = {k: ({a: conv(x) for a, x in v.items()} if isinstance(v, dict) else conv(v)) for k, v in pred.items()}
    return pred


A = box_mask(2, 2, 12, 12)     # circle, red, small      (image 1)
B = box_mask(20, 20, 34, 34)   # circle, green, large    (image 1)
C = box_mask(5, 20, 15, 30)    # square, blue, small     (image 2)
D = box_mask(22, 4, 36, 18)    # circle, red, large      (image 2)


@pytest.fixture
def gt():
    return make_gt({
        1: [(CIRCLE, A, {"color": RED, "size": SMALL}), (CIRCLE, B, {"color": GREEN, "size": LARGE})],
        2: [(SQUARE, C, {"color": BLUE, "size": SMALL}), (CIRCLE, D, {"color": RED, "size": LARGE})],
    })


def perfect(as_torch=False):
    return {
        1: make_pred([inst(A, 0, 0.9, RED, SMALL), inst(B, 0, 0.8, GREEN, LARGE)], as_torch),
        2: make_pred([inst(C, 1, 0.95, BLUE, SMALL), inst(D, 0, 0.7, RED, LARGE)], as_torch),
    }


@pytest.mark.parametrize("scoring", ["main", "product", "mean"])
def test_perfect_predictions(gt, scoring):
    r = evaluate_predictions(gt, perfect(as_torch=True), Schema.from_coco(gt), EvalConfig(scoring=scoring))
    for key in ("AP", "AP50", "AP75", "APs"):
        assert r.segm[key] == pytest.approx(100) and r.joint[key] == pytest.approx(100)
    assert r.segm["APm"] is None and r.segm["APl"] is None  # every object is small (< 32^2 px): nothing to average
    assert r.per_category_ap == pytest.approx({"circle": 100, "square": 100})
    assert r.attributes["color"].accuracy == 1.0 and r.attributes["size"].accuracy == 1.0
    assert r.attributes["color"].confusion == [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    assert r.counts["true_positives"] == r.counts["ground_truth"] == 4 and r.max_dets == 100


def test_per_category_ap_named_by_id_when_categories_are_listed_out_of_id_order(gt):
    """COCOeval orders its precision columns by category id; a file listing square (9) before circle (7) must
    still report each AP under its own name (a square missed entirely: square 0, circle 100)."""
    gt["categories"] = gt["categories"][::-1]  # square first: label 0 is now square, 1 circle
    preds = {1: make_pred([inst(A, 1, 0.9, RED, SMALL), inst(B, 1, 0.8, GREEN, LARGE)]),
             2: make_pred([inst(D, 1, 0.7, RED, LARGE)])}
    r = evaluate_predictions(gt, preds, Schema.from_coco(gt))
    assert list(r.per_category_ap) == ["square", "circle"]  # the file's order
    assert r.per_category_ap == pytest.approx({"square": 0, "circle": 100})


# circles A, B, D (3 GT) ranked with B's wrong detection; square C stays perfect (AP 1).
#   B at 0.8:  A TP, B FP, D TP -> precision 1 to recall 1/3 (34 points), 2/3 to recall 2/3 (33 points): 56/101
#   B at 0.99: B FP, A TP, D TP -> precision 2/3 up to recall 2/3 (67 points): 67 * 2/3 / 101
@pytest.mark.parametrize("wrong_score,circle_ap", [(0.8, 56 / 101), (0.99, 67 * 2 / 3 / 101)])
def test_one_attribute_wrong(gt, wrong_score, circle_ap):
    preds = perfect()
    preds[1] = make_pred([inst(A, 0, 0.9, RED, SMALL), inst(B, 0, wrong_score, BLUE, LARGE)])  # B is green
    r = evaluate_predictions(gt, preds)
    assert r.segm["AP"] == pytest.approx(100) and r.per_category_ap["circle"] == pytest.approx(100)
    assert r.joint["AP"] == pytest.approx((circle_ap + 1) / 2 * 100)
    color = r.attributes["color"]
    assert (color.correct, color.count, color.unlabeled, color.accuracy) == (3, 4, 0, 0.75)
    assert color.confusion[GREEN] == [0, 0, 1, 0]  # GT green predicted blue
    assert color.confusion[RED] == [2, 0, 0, 0] and color.confusion[BLUE] == [0, 0, 1, 0]
    assert r.attributes["size"].accuracy == 1.0


def test_one_attribute_wrong_two_gt_exact():
    """Only A and B (circles): wrong colour on the lower-ranked one -> joint AP exactly 51/101."""
    gt = make_gt({1: [(CIRCLE, A, {"color": RED, "size": SMALL}), (CIRCLE, B, {"color": GREEN, "size": LARGE})]})
    preds = {1: make_pred([inst(A, 0, 0.9, RED, SMALL), inst(B, 0, 0.8, GREEN, SMALL)])}  # size wrong on B
    r = evaluate_predictions(gt, preds)
    assert r.segm["AP"] == pytest.approx(100)
    assert r.joint["AP"] == pytest.approx(51 / 101 * 100)
    assert r.joint["AP50"] == pytest.approx(51 / 101 * 100)
    assert r.attributes["size"].confusion == [[1, 0, 0], [1, 0, 0]]  # GT large predicted small
    assert r.attributes["size"].accuracy == 0.5 and r.attributes["color"].accuracy == 1.0


def _duplicate_case(dup_mask):
    gt = make_gt({1: [(CIRCLE, A, {"color": RED, "size": SMALL})], 2: [(CIRCLE, D, {"color": RED, "size": LARGE})]})
    preds = {1: make_pred([inst(A, 0, 0.9, RED, SMALL), inst(dup_mask, 0, 0.8, RED, SMALL)]),
             2: make_pred([inst(D, 0, 0.7, RED, LARGE)])}
    return gt, preds


def test_dedupe_removes_duplicate_query():
    a_shifted = box_mask(2, 2, 12, 13)  # IoU with A = 100/110 = 0.909
    gt, preds = _duplicate_case(a_shifted)
    off = evaluate_predictions(gt, preds)
    assert off.counts["removed_duplicate"] == 0
    assert off.segm["AP50"] == pytest.approx((51 + 50 * 2 / 3) / 101 * 100)  # TP, FP (duplicate), TP
    on = evaluate_predictions(gt, preds, eval_cfg=EvalConfig(dedupe_iou=0.9))
    assert on.counts["removed_duplicate"] == 1 and on.counts["evaluated"] == 2
    assert on.segm["AP"] == pytest.approx(100) and on.joint["AP"] == pytest.approx(100)
    above = evaluate_predictions(gt, preds, eval_cfg=EvalConfig(dedupe_iou=0.95))  # 0.909 < 0.95: kept
    assert above.counts["removed_duplicate"] == 0 and above.segm["AP50"] == pytest.approx(off.segm["AP50"])


def test_suppress_duplicates_greedy_class_agnostic():
    masks = np.stack([A, A, B, box_mask(2, 2, 12, 7)])  # 1 duplicates 0; 3 is half of A (IoU 0.5)
    rles = encode_masks(masks)
    scores = np.array([0.5, 0.9, 0.3, 0.4])
    assert suppress_duplicates(rles, scores, 0.6).tolist() == [1, 3, 2]  # highest first; 0 is 1's duplicate
    assert suppress_duplicates(rles, scores, 0.5).tolist() == [1, 2]     # IoU exactly 0.5 suppresses
    # labels play no part: a different-label duplicate of the same mask is removed as well
    pred = make_pred([inst(A, 0, 0.9, RED, SMALL), inst(A, 1, 0.8, RED, SMALL)])
    sel = select_instances(pred, EvalConfig(dedupe_iou=0.7), ["color", "size"])
    assert sel.index.tolist() == [0] and sel.removed["duplicate"] == 1


def test_ranking_scores_formulas():
    pred = make_pred([inst(A, 0, 0.6, RED, SMALL, attr_prob=0.5, mask_score=0.8)])
    pred["attribute_scores"]["size"] = np.array([0.25], np.float32)
    names = ["color", "size"]
    assert ranking_scores(pred, "main", names) == pytest.approx([0.6 * 0.8])
    assert ranking_scores(pred, "product", names) == pytest.approx([0.6 * 0.8 * 0.5 * 0.25])
    assert ranking_scores(pred, "mean", names) == pytest.approx([(0.6 + 0.5 + 0.25) / 3 * 0.8])
    assert ranking_scores(pred, "mean", []) == pytest.approx([0.6 * 0.8])
    with pytest.raises(ValueError, match="scoring mode"):
        ranking_scores(pred, "sum", names)


@pytest.mark.parametrize("scoring,expected_ap", [("main", 50.0), ("product", 100.0), ("mean", 100.0)])
def test_scoring_modes_change_ranking(scoring, expected_ap):
    """A false positive with a confident class but unsure attributes outranks the true positive only under main."""
    gt = make_gt({1: [(CIRCLE, A, {"color": RED, "size": SMALL})]})
    preds = {1: make_pred([inst(B, 0, 0.8, RED, SMALL, attr_prob=0.3),     # nothing there: FP
                           inst(A, 0, 0.6, RED, SMALL, attr_prob=0.9)])}   # the object
    r = evaluate_predictions(gt, preds, eval_cfg=EvalConfig(scoring=scoring))
    assert r.segm["AP"] == pytest.approx(expected_ap)  # FP then TP with one GT: precision .5 everywhere
    assert r.config["scoring"] == scoring


def test_drop_no_object():
    gt = make_gt({1: [(CIRCLE, A, {"color": RED, "size": SMALL})]})
    preds = {1: make_pred([inst(B, 0, 0.8, RED, SMALL, attr_prob=0.2, size_no_object=0.7),   # size says no object
                           inst(A, 0, 0.6, RED, SMALL, attr_prob=0.6, size_no_object=0.6)])}  # tie: not dropped
    kept = evaluate_predictions(gt, preds)
    assert kept.segm["AP"] == pytest.approx(50.0) and kept.counts["removed_no_object"] == 0
    dropped = evaluate_predictions(gt, preds, eval_cfg=EvalConfig(drop_no_object=True))
    assert dropped.counts["removed_no_object"] == 1 and dropped.segm["AP"] == pytest.approx(100.0)


def test_no_object_on_a_true_positive_is_wrong():
    gt = make_gt({1: [(CIRCLE, A, {"color": RED, "size": SMALL})]})
    preds = {1: make_pred([inst(A, 0, 0.9, RED, SMALL, attr_prob=0.3, size_no_object=0.6)])}
    r = evaluate_predictions(gt, preds)
    assert r.attributes["size"].confusion == [[0, 0, 1], [0, 0, 0]]  # last column = no_object
    assert r.attributes["size"].accuracy == 0.0 and r.attributes["color"].accuracy == 1.0
    assert r.segm["AP"] == pytest.approx(100) and r.joint["AP"] == pytest.approx(0)


def test_unlabeled_gt_attributes_do_not_count():
    gt = make_gt({1: [(CIRCLE, A, {"size": SMALL}),                 # colour key missing
                      (CIRCLE, B, {"color": -1, "size": LARGE}),    # colour explicitly unlabeled
                      (SQUARE, C, {"color": BLUE, "size": SMALL})]})
    preds = {1: make_pred([inst(A, 0, 0.9, GREEN, SMALL), inst(B, 0, 0.8, BLUE, LARGE), inst(C, 1, 0.7, BLUE, SMALL)])}
    r = evaluate_predictions(gt, preds)
    color = r.attributes["color"]
    assert (color.count, color.unlabeled, color.correct, color.accuracy) == (1, 2, 1, 1.0)
    assert color.confusion == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert r.attributes["size"].count == 3 and r.attributes["size"].accuracy == 1.0
    assert r.joint["AP"] == pytest.approx(100)  # wildcard: no condition on an unlabeled attribute
    # ...but a labeled attribute on the same GT still counts
    preds[1]["attributes"]["size"][1] = SMALL
    assert evaluate_predictions(gt, preds).joint["AP"] < 100


def test_score_threshold_and_max_dets():
    gt = make_gt({1: [(CIRCLE, A, {"color": RED, "size": SMALL}), (CIRCLE, B, {"color": GREEN, "size": LARGE})]})
    preds = {1: make_pred([inst(A, 0, 0.9, RED, SMALL), inst(B, 0, 0.05, GREEN, LARGE)])}
    r = evaluate_predictions(gt, preds, eval_cfg=EvalConfig(score_threshold=0.1))
    assert r.counts["removed_score_threshold"] == 1 and r.segm["AP"] == pytest.approx(51 / 101 * 100)
    r = evaluate_predictions(gt, preds, eval_cfg=EvalConfig(max_dets=1))
    assert r.counts["removed_max_dets"] == 1 and r.max_dets == 1 and r.segm["AP"] == pytest.approx(51 / 101 * 100)
    assert "maxDets=1" in r.table().set_index("metric").loc["segm AP", "detail"]


def test_metrics_json_round_trip_and_table(gt, tmp_path):
    preds = perfect()
    preds[1] = make_pred([inst(A, 0, 0.9, RED, SMALL), inst(B, 0, 0.8, BLUE, LARGE)])
    r = evaluate_predictions(gt, preds, eval_cfg=EvalConfig(dedupe_iou=0.8, scoring="mean"))
    path = tmp_path / "run" / "metrics.json"
    write_metrics_json(r, path)
    write_metrics_json(r, path)  # overwrite in place
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temporary file left behind

    def no_nan(name):
        raise AssertionError(f"{name} in metrics.json is not JSON")

    data = json.loads(path.read_text(), parse_constant=no_nan)
    assert data == r.to_dict() and data["segm"]["APl"] is None and data["config"]["dedupe_iou"] == 0.8
    back = read_metrics_json(path)
    assert isinstance(back, EvalResult) and back == r

    table = r.table().set_index("metric")
    assert list(table.columns) == ["value", "detail"]
    assert {f"segm {k}" for k in AP_KEYS} | {f"joint {k}" for k in AP_KEYS} <= set(table.index)
    assert table.loc["color accuracy", "value"] == pytest.approx(0.75)
    assert table.loc["joint AP", "value"] == pytest.approx(r.joint["AP"]) and math.isnan(table.loc["segm APl", "value"])
    confusion = r.confusion_table("color")
    assert confusion.loc["green", "blue"] == 1 and list(confusion.columns) == [*COLORS, "no_object"]


def test_real_postprocess_output_evaluates_perfectly(gt):
    """`instance_inference` output goes straight in: strong logits for the right answer give AP 100."""
    predictions = {}
    for image_id, objects in {1: [(0, A, RED, SMALL), (0, B, GREEN, LARGE)],
                              2: [(1, C, BLUE, SMALL), (0, D, RED, LARGE)]}.items():
        q = len(objects)
        class_logits = torch.full((q, 3), -10.0)
        color_logits, size_logits = torch.full((q, 4), -10.0), torch.full((q, 3), -10.0)
        mask_logits = torch.full((q, H, W), -10.0)
        for i, (label, mask, color, size) in enumerate(objects):
            class_logits[i, label] = 10.0 - i  # distinct scores
            color_logits[i, color] = size_logits[i, size] = 10.0
            mask_logits[i][torch.from_numpy(mask)] = 10.0
        predictions[image_id] = instance_inference(class_logits, {"color": color_logits, "size": size_logits},
                                                   mask_logits, (H, W), (H, W), topk=q)
    r = evaluate_predictions(gt, predictions, eval_cfg=EvalConfig(scoring="product", drop_no_object=True))
    assert r.segm["AP"] == pytest.approx(100) and r.joint["AP"] == pytest.approx(100)
    assert r.attributes["color"].accuracy == 1.0 and r.attributes["size"].accuracy == 1.0


def test_only_predicted_images_are_evaluated(gt):
    r = evaluate_predictions(gt, {2: perfect()[2]})
    assert r.counts["images"] == 1 and r.counts["ground_truth"] == 2 and r.segm["AP"] == pytest.approx(100)
    empty = evaluate_predictions(gt, {2: make_pred([])})  # evaluated, nothing predicted: AP 0, not an error
    assert empty.segm["AP"] == 0 and empty.attributes["color"].accuracy is None


@pytest.mark.parametrize("change,error,match", [
    (lambda p: p.__setitem__(3, p.pop(2)), KeyError, "no image with that id"),
    (lambda p: p[1].__setitem__("masks", p[1]["masks"][:, :20]), ValueError, r"\(N, 40, 40\)"),
    (lambda p: p[1].__setitem__("labels", np.array([CIRCLE, CIRCLE])), ValueError, "category positions"),
    (lambda p: p[1]["attribute_no_object"].pop("size"), KeyError, "size"),
])
def test_prediction_errors_name_the_problem(gt, change, error, match):
    preds = perfect()
    change(preds)
    with pytest.raises(error, match=match):
        evaluate_predictions(gt, preds, Schema.from_coco(gt))


def test_schema_mismatch_is_an_error(gt):
    other = make_gt({1: []})
    other["attributes"][0]["values"].pop()  # the model was trained with two colours
    with pytest.raises(DataError, match="schema_mismatch"):
        evaluate_predictions(gt, perfect(), Schema.from_coco(other))


@pytest.mark.parametrize("kwargs,match", [(dict(scoring="sum"), "scoring"), (dict(dedupe_iou=0.0), "dedupe_iou"),
                                          (dict(score_threshold=1.5), "score_threshold"), (dict(max_dets=0), "max_dets")])
def test_eval_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvalConfig(**kwargs)
    assert dataclasses.is_dataclass(EvalConfig) and EvalConfig().dedupe_iou is None


def test_crowd_regions_and_missing_area():
    """A detection on a crowd region is neither a TP nor an FP; a missing GT `area` is computed from the mask."""
    gt = make_gt({1: [(CIRCLE, A, {"color": RED, "size": SMALL}), (CIRCLE, B, {})]})
    gt["annotations"][1]["iscrowd"] = 1
    for ann in gt["annotations"]:
        del ann["area"]
    preds = {1: make_pred([inst(B, 0, 0.95, GREEN, SMALL), inst(A, 0, 0.9, RED, SMALL)])}
    r = evaluate_predictions(gt, preds)
    assert r.segm["AP"] == pytest.approx(100) and r.joint["AP"] == pytest.approx(100)
    assert r.counts["ground_truth"] == 1 and r.counts["true_positives"] == 1
    assert r.attributes["color"].count == 1


def test_schema_without_attributes():
    gt = make_gt({1: [(CIRCLE, A, {}), (CIRCLE, B, {})]})
    gt["attributes"] = []
    preds = {1: make_pred([inst(A, 0, 0.9, RED, SMALL), inst(B, 0, 0.8, RED, SMALL)])}
    r = evaluate_predictions(gt, preds, eval_cfg=EvalConfig(scoring="product", drop_no_object=True))
    assert r.attributes == {} and r.segm == r.joint and r.segm["AP"] == pytest.approx(100)
