"""Attributes on panoptic segments and joint PQ (workbench/metrics/panoptic_attributes.py) on hand-built cases
whose numbers are worked out in the comments; the files form equals the in-memory one."""
from __future__ import annotations

import numpy as np
import pytest

from panoptic_cases import write_panoptic
from workbench.data.problems import DataError
from workbench.data.schema import AttributeVocab
from workbench.metrics.panoptic import evaluate_panoptic
from workbench.metrics.panoptic_attributes import evaluate_panoptic_attribute_files, evaluate_panoptic_attributes

CATEGORIES = [{"id": 0, "name": "person", "isthing": 1}, {"id": 1, "name": "car", "isthing": 1},
              {"id": 2, "name": "road", "isthing": 0}]
ATTRIBUTES = (AttributeVocab("color", ("red", "blue")), AttributeVocab("surface", ("wet", "dry")),
              AttributeVocab("tags", ("a", "b", "c"), kind="multi"))


def case():
    """Four matched pairs (IoU 1) and one missed car; attributes right or wrong as commented."""
    ids = np.zeros((4, 8), np.int64)
    for segment_id, cols in ((1, slice(0, 2)), (2, slice(2, 4)), (4, slice(4, 6)), (5, slice(6, 8))):
        ids[:2, cols] = segment_id
    ids[2:] = 3
    gt = [
        {"id": 1, "category_id": 0, "attributes": {"color": 0, "surface": -1, "tags": [0, 1]}},
        {"id": 2, "category_id": 1, "attributes": {"color": 1, "surface": 1, "tags": -1}},
        {"id": 3, "category_id": 2, "attributes": {"color": None, "surface": 0, "tags": [2]}},
        {"id": 4, "category_id": 0, "attributes": {"color": 0}},  # surface and tags missing: unlabeled
        {"id": 5, "category_id": 1},                              # missed: FN in PQ and joint PQ
    ]
    pred_ids = np.where(ids == 5, 0, ids)
    pred = [
        {"id": 1, "category_id": 0, "attributes": {"color": 0, "surface": 1, "tags": [0]}},       # joint TP
        {"id": 2, "category_id": 1, "attributes": {"color": 1, "surface": 0, "tags": [1]}},       # surface wrong
        {"id": 3, "category_id": 2, "attributes": {"color": -1, "surface": 0, "tags": [1, 2]}},   # joint TP
        {"id": 4, "category_id": 0, "attributes": {"color": -1, "surface": 0, "tags": []}},       # no color: wrong
    ]
    return ({7: {"panoptic_seg": pred_ids, "segments_info": pred}},
            {7: {"panoptic_seg": ids, "segments_info": [dict(s, iscrowd=0) for s in gt]}})


def test_joint_pq_needs_every_labeled_single_attribute_right():
    predictions, ground_truth = case()
    r = evaluate_panoptic_attributes(predictions, ground_truth, CATEGORIES, ATTRIBUTES)
    counts = {n: (c.tp, c.fp, c.fn) for n, c in r.joint.per_class.items()}
    assert counts == {"person": (1, 1, 1), "car": (0, 1, 2), "road": (1, 0, 0)}
    assert r.joint.per_class["person"].PQ == pytest.approx(50.0)  # 1 / (1 + 0.5 + 0.5)
    assert (r.joint.all.PQ, r.joint.things.PQ, r.joint.stuff.PQ) == pytest.approx((50.0, 25.0, 100.0))
    assert r.panoptic == evaluate_panoptic(predictions, ground_truth, CATEGORIES)  # plain PQ alongside
    assert {n: (c.tp, c.fp, c.fn) for n, c in r.panoptic.per_class.items()} == {
        "person": (2, 0, 0), "car": (1, 0, 1), "road": (1, 0, 0)}
    assert r.matched == 4


def test_attribute_accuracy_and_multi_label_f1_on_matched_segments():
    r = evaluate_panoptic_attributes(*case(), CATEGORIES, ATTRIBUTES)
    color, surface = r.attributes["color"], r.attributes["surface"]
    assert (color.correct, color.count, color.unlabeled) == (2, 3, 1)
    assert color.confusion == [[1, 0, 1], [0, 1, 0]]  # last column: no value predicted
    assert (surface.accuracy, surface.unlabeled) == (0.5, 2)
    tags = r.multi_label["tags"]
    assert (tags.count, tags.unlabeled) == (2, 2)
    assert tags.micro == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})
    assert tags.macro == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3})  # a: 1, b: 0, c: 1
    assert tags.per_value["b"] == {"tp": 0, "fp": 1, "fn": 1, "f1": 0.0}


def test_without_labeled_attributes_joint_pq_is_pq():
    predictions, ground_truth = case()
    for s in ground_truth[7]["segments_info"]:
        s.pop("attributes", None)
    r = evaluate_panoptic_attributes(predictions, ground_truth, CATEGORIES, ATTRIBUTES)
    assert r.joint.per_class == r.panoptic.per_class and r.joint.all == r.panoptic.all
    assert r.attributes["color"].accuracy is None and r.multi_label["tags"].micro["f1"] is None


def test_files_form_equals_in_memory(tmp_path):
    predictions, ground_truth = case()
    dataset = [dict(c, id=10 + c["id"]) for c in CATEGORIES]  # dataset ids differ from class indices

    def on_disk(items):
        return {k: (v["panoptic_seg"], [dict(s, category_id=10 + s["category_id"]) for s in v["segments_info"]])
                for k, v in items.items()}

    gt_json = write_panoptic(tmp_path, "gt", on_disk(ground_truth), dataset)
    pred_json = write_panoptic(tmp_path, "pred", on_disk(predictions), dataset)
    files = evaluate_panoptic_attribute_files(gt_json, pred_json, ATTRIBUTES)
    assert files == evaluate_panoptic_attributes(predictions, ground_truth, CATEGORIES, ATTRIBUTES)


def test_to_dict_uses_the_tensorboard_tags():
    d = evaluate_panoptic_attributes(*case(), CATEGORIES, ATTRIBUTES).to_dict()
    assert d["eval/joint_panoptic/PQ"] == pytest.approx(50.0) and d["eval/panoptic/PQ_st"] == pytest.approx(100.0)
    assert d["eval/joint_panoptic_class/car/PQ"] == 0.0
    assert d["eval/panoptic_attribute_accuracy/color"] == pytest.approx(2 / 3)
    assert d["eval/panoptic_attribute_f1/tags/micro"] == pytest.approx(2 / 3)
    assert "eval/panoptic_attribute_accuracy/tags" not in d


@pytest.mark.parametrize("edit, code, where", [
    (lambda p, g: p[0]["attributes"].pop("surface"), "missing_attribute", "prediction segments_info[0].attributes"),
    (lambda p, g: p[0]["attributes"].update(color=2), "bad_attribute", "prediction segments_info[0].attributes.color"),
    (lambda p, g: p[0]["attributes"].update(tags=[3]), "bad_attribute", "prediction segments_info[0].attributes.tags"),
    (lambda p, g: g[1]["attributes"].update(color=-2), "bad_attribute", "ground truth segments_info[1].attributes.color"),
    (lambda p, g: g[2]["attributes"].update(tags=2), "bad_attribute", "ground truth segments_info[2].attributes.tags"),
])
def test_bad_attribute_values_are_refused_naming_the_segment(edit, code, where):
    predictions, ground_truth = case()
    edit(predictions[7]["segments_info"], ground_truth[7]["segments_info"])
    with pytest.raises(DataError) as e:
        evaluate_panoptic_attributes(predictions, ground_truth, CATEGORIES, ATTRIBUTES)
    assert e.value.codes == [code] and f"image 7 {where}" in str(e.value)
