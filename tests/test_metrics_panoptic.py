"""PQ / SQ / RQ (workbench/metrics/panoptic.py, panoptic_files.py) equal panopticapi's `pq_compute` to 1e-9, all /
things / stuff and per class, on the same PNGs + JSON; the in-memory form equals the on-disk one."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from panoptic_cases import (CATEGORIES, contiguous, contiguous_categories, random_gt, random_prediction,
                            write_panoptic)
from workbench.data.problems import DataError
from workbench.metrics.panoptic import categories_from_schema, evaluate_panoptic
from workbench.metrics.panoptic_files import evaluate_panoptic_files

evaluation = pytest.importorskip("panopticapi.evaluation", reason="pip install --no-deps panopticapi-lite==0.2.0")
TOL = 1e-9


@pytest.fixture
def pq_compute(monkeypatch):
    """panopticapi's pq_compute in this process: its pool of cpu_count() workers replaced by one direct call of
    the same per-core function (pq_compute's reading, matching and averaging are unchanged)."""
    monkeypatch.setattr(evaluation, "pq_compute_multi_core",
                        lambda matched, gt_folder, pred_folder, categories:
                        evaluation.pq_compute_single_core(0, matched, gt_folder, pred_folder, categories))

    def run(gt_json, pred_json):
        with contextlib.redirect_stdout(io.StringIO()):
            return evaluation.pq_compute(str(gt_json), str(pred_json))

    return run


def assert_equals_panopticapi(ours, theirs, categories=CATEGORIES):
    """Ours in percent, theirs as fractions; a class with no TP/FP/FN is None here and 0 there."""
    for group, key in ((ours.all, "All"), (ours.things, "Things"), (ours.stuff, "Stuff")):
        assert group.n == theirs[key]["n"], key
        for metric in ("PQ", "SQ", "RQ"):
            assert getattr(group, metric) / 100 == pytest.approx(theirs[key][metric.lower()], abs=TOL), (key, metric)
    for c in categories:
        mine, ref = ours.per_class[c["name"]], theirs["per_class"][c["id"]]
        for metric in ("PQ", "SQ", "RQ"):
            value = getattr(mine, metric)
            got = 0.0 if value is None else value / 100
            assert got == pytest.approx(ref[metric.lower()], abs=TOL), (c["name"], metric)


def random_dataset(seed: int, images: int = 3):
    rng = np.random.default_rng(seed)
    gt, pred = {}, {}
    for image_id in range(1, images + 1):
        gt[image_id] = random_gt(rng)
        pred[image_id] = random_prediction(rng, *gt[image_id])
    return gt, pred


@pytest.mark.parametrize("seed", range(12))
def test_random_images_equal_pq_compute(tmp_path, pq_compute, seed):
    gt, pred = random_dataset(seed)
    gt_json, pred_json = write_panoptic(tmp_path, "gt", gt), write_panoptic(tmp_path, "pred", pred)
    ours = evaluate_panoptic_files(gt_json, pred_json)
    assert_equals_panopticapi(ours, pq_compute(gt_json, pred_json))
    assert ours.images == 3


def test_ground_truth_areas_come_from_the_json(tmp_path, pq_compute):
    """panopticapi takes a GT segment's area from its JSON "area", not from the PNG; so do we (where given)."""
    gt, pred = random_dataset(seed=11)
    for _, segments in gt.values():
        for s in segments:
            s["area"] += 3  # e.g. an area measured before a crop
    gt_json, pred_json = write_panoptic(tmp_path, "gt", gt), write_panoptic(tmp_path, "pred", pred)
    ours = evaluate_panoptic_files(gt_json, pred_json)
    assert_equals_panopticapi(ours, pq_compute(gt_json, pred_json))
    assert ours != evaluate_panoptic_files(write_panoptic(tmp_path, "gt_counted", {
        k: (ids, [dict(s, area=None) for s in segments]) for k, (ids, segments) in gt.items()}), pred_json)


def test_empty_images_equal_pq_compute(tmp_path, pq_compute):
    """An all-VOID GT (every prediction on it is ignored) and an image predicted empty (every GT missed)."""
    gt, pred = random_dataset(seed=7, images=2)
    rng = np.random.default_rng(0)
    gt[3] = (np.zeros((24, 32), np.int64), [])
    pred[3] = random_prediction(rng, *random_gt(rng))
    gt[4] = random_gt(rng)
    pred[4] = (np.zeros((24, 32), np.int64), [])
    gt_json, pred_json = write_panoptic(tmp_path, "gt", gt), write_panoptic(tmp_path, "pred", pred)
    ours = evaluate_panoptic_files(gt_json, pred_json)
    assert_equals_panopticapi(ours, pq_compute(gt_json, pred_json))
    alone = evaluate_panoptic(contiguous({3: pred[3]}), contiguous({3: gt[3]}), contiguous_categories())
    assert alone.counts == {"tp": 0, "fp": 0, "fn": 0} and alone.all.PQ is None


def test_in_memory_form_equals_the_files(tmp_path):
    """Contiguous class indices, torch or numpy maps, areas omitted (counted): the same result as the files."""
    gt, pred = random_dataset(seed=100, images=4)
    files = evaluate_panoptic_files(write_panoptic(tmp_path, "gt", gt), write_panoptic(tmp_path, "pred", pred))
    predictions = {k: dict(v, panoptic_seg=torch.from_numpy(v["panoptic_seg"]).to(torch.int32))
                   for k, v in contiguous(pred).items()}
    ground_truth = {k: dict(v, segments_info=[{kk: vv for kk, vv in s.items() if kk != "area"}
                                              for s in v["segments_info"]]) for k, v in contiguous(gt).items()}
    assert evaluate_panoptic(predictions, ground_truth, contiguous_categories()) == files


def _canvas(h, w, boxes):
    ids = np.zeros((h, w), np.int64)
    for segment_id, rows, cols in boxes:
        ids[rows, cols] = segment_id
    return ids


def hand_built():
    """Three images whose counts are worked out by hand (see the comments)."""
    s = slice
    # image 1: sky, road, a person, a person crowd, VOID
    gt1 = _canvas(10, 12, [(1, s(0, 3), s(None)), (2, s(7, 10), s(None)), (10, s(3, 7), s(0, 4)),
                           (11, s(3, 7), s(4, 8))])  # rows 3-6, cols 8-11 stay VOID
    gt1_info = [{"id": 1, "category_id": 20, "iscrowd": 0}, {"id": 2, "category_id": 21, "iscrowd": 0},
                {"id": 10, "category_id": 1, "iscrowd": 0}, {"id": 11, "category_id": 1, "iscrowd": 1}]
    pred1 = _canvas(10, 12, [(101, s(0, 3), s(None)),             # sky: IoU 1 (TP)
                             (102, s(7, 10), s(None)), (102, s(3, 7), s(8, 12)),  # road + all 16 VOID px: IoU 1
                             (103, s(3, 7), s(0, 6)),             # person, 8 px on the crowd: IoU 16/24 (TP)
                             (104, s(3, 7), s(6, 8))])            # car on the person crowd: FP (other class)
    pred1_info = [{"id": 101, "category_id": 20}, {"id": 102, "category_id": 21}, {"id": 103, "category_id": 1},
                  {"id": 104, "category_id": 3}]
    # image 2: two person crowds (panopticapi keeps the last one listed per class), a missed road and person
    gt2 = _canvas(10, 12, [(5, s(0, 5), s(None)), (6, s(5, 10), s(None)), (7, s(6, 10), s(0, 2)),
                           (8, s(1, 3), s(8, 12)), (9, s(3, 5), s(8, 12)), (0, s(6, 10), s(10, 12))])
    gt2_info = [{"id": 5, "category_id": 20, "iscrowd": 0}, {"id": 6, "category_id": 21, "iscrowd": 0},
                {"id": 7, "category_id": 1, "iscrowd": 0}, {"id": 8, "category_id": 1, "iscrowd": 1},
                {"id": 9, "category_id": 1, "iscrowd": 1}]
    pred2 = _canvas(10, 12, [(201, s(0, 5), s(0, 8)),              # sky: IoU 40/44 (TP)
                             (202, s(1, 3), s(8, 12)),             # person on crowd 8: FP (not the last crowd)
                             (204, s(5, 10), s(0, 10)),            # dog, in no GT: FP; road and person: FN
                             (205, s(6, 10), s(10, 12))])          # car all on VOID: ignored
    pred2_info = [{"id": 201, "category_id": 20}, {"id": 202, "category_id": 1}, {"id": 204, "category_id": 7},
                  {"id": 205, "category_id": 3}]
    # image 3: IoU exactly 0.5 is no match
    gt3 = _canvas(4, 4, [(1, s(0, 2), s(None)), (2, s(2, 4), s(None))])
    gt3_info = [{"id": 1, "category_id": 3, "iscrowd": 0}, {"id": 2, "category_id": 20, "iscrowd": 0}]
    pred3 = _canvas(4, 4, [(1, s(0, 1), s(None)), (2, s(1, 4), s(None))])  # car IoU 4/8: FN + FP; sky 8/12 TP
    pred3_info = [{"id": 1, "category_id": 3}, {"id": 2, "category_id": 20}]

    def with_area(ids, info):
        return [dict(x, area=int((ids == x["id"]).sum())) for x in info]

    gt = {1: (gt1, with_area(gt1, gt1_info)), 2: (gt2, with_area(gt2, gt2_info)), 3: (gt3, with_area(gt3, gt3_info))}
    return gt, {1: (pred1, pred1_info), 2: (pred2, pred2_info), 3: (pred3, pred3_info)}


def test_hand_built_void_crowd_and_absent_classes(tmp_path, pq_compute):
    gt, pred = hand_built()
    gt_json, pred_json = write_panoptic(tmp_path, "gt", gt), write_panoptic(tmp_path, "pred", pred)
    ours = evaluate_panoptic_files(gt_json, pred_json)
    counts = {name: (c.tp, c.fp, c.fn) for name, c in ours.per_class.items()}
    assert counts == {"person": (1, 1, 1), "car": (0, 2, 1), "dog": (0, 1, 0), "sky": (3, 0, 0),
                      "road": (1, 0, 1), "wall": (0, 0, 0), "never_seen": (0, 0, 0)}
    assert ours.per_class["person"].PQ == pytest.approx(100 * (2 / 3) / 2)
    assert ours.per_class["road"].SQ == pytest.approx(100.0)  # VOID left out of the union
    assert ours.per_class["sky"].SQ == pytest.approx(100 * (1 + 40 / 44 + 8 / 12) / 3)
    assert ours.per_class["dog"].PQ == 0.0 and ours.per_class["wall"].PQ is None
    assert (ours.things.n, ours.stuff.n, ours.all.n) == (3, 2, 5)  # dog counts, wall and never_seen do not
    assert_equals_panopticapi(ours, pq_compute(gt_json, pred_json))


def test_to_dict_uses_the_tensorboard_tags():
    gt, pred = hand_built()
    result = evaluate_panoptic(contiguous(pred), contiguous(gt), contiguous_categories())
    d = result.to_dict()
    assert d["eval/panoptic/PQ"] == result.all.PQ and d["eval/panoptic/PQ_th"] == result.things.PQ
    assert d["eval/panoptic/RQ_st"] == result.stuff.RQ
    assert d["eval/panoptic_class/person/SQ"] == result.per_class["person"].SQ
    assert d["eval/panoptic_class/wall/PQ"] is None
    assert len(d) == 9 + 3 * len(CATEGORIES)


def test_a_group_without_classes_is_none():
    """panopticapi divides by zero when no stuff class occurs; here the group is None and the others stand."""
    ids = _canvas(4, 4, [(1, slice(0, 2), slice(None))])
    item = {"panoptic_seg": ids, "segments_info": [{"id": 1, "category_id": 0}]}
    result = evaluate_panoptic({0: item}, {0: item}, contiguous_categories())
    assert result.stuff.PQ is None and result.stuff.n == 0 and result.things.PQ == pytest.approx(100.0)


def _one(pred_ids, pred_info, gt_ids=None, gt_info=None):
    gt_ids = _canvas(4, 4, [(1, slice(0, 2), slice(None))]) if gt_ids is None else gt_ids
    gt_info = [{"id": 1, "category_id": 0}] if gt_info is None else gt_info
    return ({0: {"panoptic_seg": pred_ids, "segments_info": pred_info}},
            {0: {"panoptic_seg": gt_ids, "segments_info": gt_info}})


@pytest.mark.parametrize("case, code", [
    ("unlisted", "segment_not_listed"), ("absent", "segment_not_in_map"), ("category", "unknown_category"),
    ("size", "size_mismatch"), ("duplicate", "duplicate_segment_id"), ("image", "unknown_image"),
    ("void", "void_segment_id"),
])
def test_bad_predictions_are_refused_naming_the_image(case, code):
    ids = _canvas(4, 4, [(1, slice(0, 2), slice(None)), (2, slice(2, 4), slice(None))])
    info = [{"id": 1, "category_id": 0}, {"id": 2, "category_id": 1}]
    predictions, ground_truth = {
        "unlisted": lambda: _one(ids, info[:1]),
        "absent": lambda: _one(ids, [*info, {"id": 3, "category_id": 0}]),
        "category": lambda: _one(ids, [info[0], {"id": 2, "category_id": 55}]),
        "size": lambda: _one(ids[:3], info),
        "duplicate": lambda: _one(ids, [*info, {"id": 2, "category_id": 0}]),
        "image": lambda: ({7: _one(ids, info)[0][0]}, _one(ids, info)[1]),
        "void": lambda: _one(ids, [*info, {"id": 0, "category_id": 0}]),
    }[case]()
    with pytest.raises(DataError) as e:
        evaluate_panoptic(predictions, ground_truth, contiguous_categories())
    assert e.value.codes == [code]
    assert "image" in str(e.value) or "predictions[7]" in str(e.value)


def test_files_need_a_prediction_for_every_ground_truth_image(tmp_path):
    gt, pred = random_dataset(seed=5)
    del pred[2]
    with pytest.raises(DataError, match="no prediction for image ids \\[2\\]"):
        evaluate_panoptic_files(write_panoptic(tmp_path, "gt", gt), write_panoptic(tmp_path, "pred", pred))


def test_categories_from_schema_use_class_indices_and_isthing():
    """Today's schema has no `isthing` (all things); a category that has it (issue 25's data schema) is honoured."""
    from types import SimpleNamespace

    from workbench.data.schema import Category, Schema

    schema = Schema((Category(5, "person"), Category(9, "car")), ())
    assert categories_from_schema(schema) == [{"id": 0, "name": "person", "isthing": 1},
                                              {"id": 1, "name": "car", "isthing": 1}]
    stuffy = SimpleNamespace(categories=[SimpleNamespace(name="sky", isthing=False)])
    assert categories_from_schema(stuffy) == [{"id": 0, "name": "sky", "isthing": 0}]
