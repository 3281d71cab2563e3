"""AP(IoU+F1) against the reference evaluator of the `fashionpedia` package, on generated data."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from workbench.metrics.fashionpedia import FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES, attribute_f1, iou_f1_ap

NUM_CATEGORIES = 15  # ids 0..14: 0..12 are in FPEval's hard-coded list of categories with attributes, 13, 14 not
VOCABULARY = [100 + 3 * k for k in range(12)]  # attribute ids are not contiguous, as in Fashionpedia (115, ...)


def reference():
    np.float = float  # fashionpedia uses np.float, removed from numpy
    from fashionpedia.fp import Fashionpedia
    from fashionpedia.fp_eval import FPEval
    return Fashionpedia, FPEval


def rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def box(size, y0, x0, h, w):
    m = np.zeros((size, size), bool)
    m[y0:y0 + h, x0:x0 + w] = True
    return m


def generated(seed=0, num_images=8, size=64, num_categories=NUM_CATEGORIES, attributed_below=13):
    """GT with attribute sets, and detections: shifted masks (varied IoU), partial attribute errors (dropped and
    added ids), duplicates with other attributes, false positives and a wrong-category detection. Categories
    from `attributed_below` on have no attributes in the GT."""
    NUM_CATEGORIES = num_categories  # noqa: N806 (the module's default, overridden for this file)
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": size, "width": size})
        for _ in range(int(rng.integers(2, 6))):
            c = int(rng.integers(NUM_CATEGORIES))
            h, w = (int(v) for v in rng.integers(8, 30, 2))
            y0, x0 = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
            m = box(size, y0, x0, h, w)
            attrs = [] if c >= attributed_below else sorted(rng.choice(VOCABULARY, int(rng.integers(0, 5)), replace=False).tolist())
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": c, "segmentation": rle(m),
                                "area": float(m.sum()), "bbox": [x0, y0, w, h], "iscrowd": 0, "attribute_ids": attrs})
            for _copy in range(int(rng.integers(0, 3))):  # 0-2 detections of this object
                dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
                md = box(size, max(0, y0 + dy), max(0, x0 + dx), h, w)
                pred = set(attrs)
                for a in list(pred):  # drop some
                    if rng.random() < 0.25:
                        pred.discard(a)
                for a in VOCABULARY:  # add some
                    if rng.random() < 0.08:
                        pred.add(a)
                cat = c if rng.random() > 0.1 else int(rng.integers(NUM_CATEGORIES))
                detections.append({"image_id": i + 1, "category_id": cat, "segmentation": rle(md),
                                   "score": float(rng.random()), "attribute_ids": sorted(int(a) for a in pred)})
        for _fp in range(int(rng.integers(0, 3))):
            m = box(size, int(rng.integers(0, 40)), int(rng.integers(0, 40)), 20, 20)
            detections.append({"image_id": i + 1, "category_id": int(rng.integers(NUM_CATEGORIES)),
                               "segmentation": rle(m), "score": float(rng.random()),
                               "attribute_ids": sorted(rng.choice(VOCABULARY, 2, replace=False).tolist())})
    gt = {"images": images, "annotations": annotations,
          "categories": [{"id": c, "name": f"c{c}", "supercategory": "s"} for c in range(NUM_CATEGORIES)],
          "attributes": [{"id": a, "name": f"a{a}", "supercategory": f"g{a % 3}", "level": 1} for a in VOCABULARY]}
    return gt, detections


def reference_ap(gt, detections):
    Fashionpedia, FPEval = reference()
    with contextlib.redirect_stdout(io.StringIO()):
        fp_gt = Fashionpedia()
        fp_gt.dataset = {k: [dict(x) for x in v] for k, v in gt.items()}
        fp_gt.createIndex()
        fp_dt = fp_gt.loadRes([dict(d) for d in detections])
        e = FPEval(fp_gt, fp_dt, "segm")
        e.evaluate()
        e.accumulate()
        return {"AP": e._summarize("ap"), "AP_IOU50_F150": e._summarize("ap", iouThr=0.5, f1Thr=0.5),
                "AP_IOU75_F175": e._summarize("ap", iouThr=0.75, f1Thr=0.75),
                "AP_IOU50": e._summarize("ap", iouThr=0.5)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iou_f1_ap_equals_fashionpedia_reference(seed):
    gt, detections = generated(seed)
    ours = iou_f1_ap(gt, detections, VOCABULARY, attributed=FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES)
    ref = reference_ap(gt, detections)
    assert 0 < ref["AP"] < 1  # a non-trivial case: partial attribute errors cost AP
    for key, value in ref.items():
        assert ours[key] == pytest.approx(100 * value, abs=1e-4), key  # percent: 1e-6 as a fraction


def test_attribute_errors_lower_the_metric_and_perfect_attributes_do_not():
    gt, detections = generated(0)
    perfect = []
    for a in gt["annotations"]:
        perfect.append({"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                        "score": 1.0, "attribute_ids": a["attribute_ids"]})
    assert iou_f1_ap(gt, perfect, VOCABULARY)["AP"] == pytest.approx(100.0)
    wrong = [dict(d, attribute_ids=[VOCABULARY[0]] if d["attribute_ids"] != [VOCABULARY[0]] else [VOCABULARY[1]])
             for d in perfect]
    ap = iou_f1_ap(gt, wrong, VOCABULARY)
    assert ap["AP"] < 100.0


def test_attribute_f1_is_sklearn_binary_macro():
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(0)
    for _ in range(50):
        g = set(rng.choice(12, int(rng.integers(0, 5)), replace=False).tolist())
        d = set(rng.choice(12, int(rng.integers(0, 5)), replace=False).tolist())
        yt, yp = np.zeros(12, int), np.zeros(12, int)
        yt[list(g)], yp[list(d)] = 1, 1
        assert attribute_f1(g, d, 12) == pytest.approx(f1_score(yt, yp, average="macro"), abs=1e-12)


def test_a_later_gt_must_beat_the_current_match_on_iou_and_f1():
    """FPEval's rule (not COCO's IoU-only one): detection 1 overlaps GT 2 more (IoU .9) but agrees with GT 1 on
    attributes (IoU .8, F1 1), so it takes GT 1 and detection 2 can take GT 2."""
    size, a, b = 64, VOCABULARY[0], VOCABULARY[1]
    gt1, gt2 = box(size, 0, 0, 20, 16), box(size, 0, 0, 20, 18)
    gt = {"images": [{"id": 1, "file_name": "x.png", "height": size, "width": size}],
          "categories": [{"id": c, "name": f"c{c}", "supercategory": "s"} for c in range(NUM_CATEGORIES)],
          "attributes": [{"id": v, "name": f"a{v}", "supercategory": "g", "level": 1} for v in VOCABULARY],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 0, "segmentation": rle(gt1), "area": float(gt1.sum()),
               "bbox": [0, 0, 16, 20], "iscrowd": 0, "attribute_ids": [a, b]},
              {"id": 2, "image_id": 1, "category_id": 0, "segmentation": rle(gt2), "area": float(gt2.sum()),
               "bbox": [0, 0, 18, 20], "iscrowd": 0, "attribute_ids": [a]}]}
    detections = [
        {"image_id": 1, "category_id": 0, "segmentation": rle(box(size, 0, 0, 20, 20)), "score": 0.9,
         "attribute_ids": [a, b]},
        {"image_id": 1, "category_id": 0, "segmentation": rle(box(size, 0, 1, 20, 18)), "score": 0.8,
         "attribute_ids": [a]}]
    ours = iou_f1_ap(gt, detections, VOCABULARY, attributed=FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES)
    ref = reference_ap(gt, detections)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(100 * value, abs=1e-4), key


# ---- issue 24: `workbench eval --fashionpedia-results` is FPEval on any Fashionpedia-format file ----------------
def test_cli_gives_fpevals_numbers_on_a_file_with_48_categories(tmp_path, capsys):
    """Fashionpedia's published sample has 48 categories; FPEval applies its hard-coded list of categories with
    attributes to it all the same (the former rule, "46 categories or else the data's", scored every category
    with an attribute by F1 and gave 41.99 for FPEval's 58.97 there)."""
    import json

    from workbench.cli import main

    gt, detections = generated(5, num_categories=48, attributed_below=48)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(detections))
    assert main(["eval", "--fashionpedia-results", str(tmp_path / "results.json"), "--data", str(tmp_path / "gt.json"),
                 "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    ref = reference_ap(gt, detections)
    for key, value in ref.items():
        assert printed[key] == pytest.approx(100 * value, abs=1e-4), key
    assert printed["category_rule"] == "fashionpedia"
    assert printed["categories_with_attributes"] == sorted(FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES)
    assert main(["eval", "--fashionpedia-results", str(tmp_path / "results.json"), "--data", str(tmp_path / "gt.json")]) == 0
    assert "FPEval's hard-coded Fashionpedia list" in capsys.readouterr().out


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(score=float("nan")), "[1].score"),
    (lambda r: r.update(score=float("inf")), "[1].score"),
    (lambda r: r["segmentation"].update(counts=r["segmentation"]["counts"][:-2]), "[1].segmentation.counts"),
    (lambda r: r["segmentation"].update(counts=r["segmentation"]["counts"] + "~"), "[1].segmentation.counts"),
    (lambda r: r.update(attribute_ids=[True]), "[1].attribute_ids"),
], ids=["nan-score", "inf-score", "cut-rle", "garbled-rle", "bool-attribute-id"])
def test_results_fpeval_would_score_in_silence_are_data_errors_naming_the_entry(tmp_path, capsys, change, field):
    import json

    from workbench.cli import main

    gt, detections = generated(0)
    gt["attributes"].append({"id": 1, "name": "a1", "supercategory": "g1", "level": 1})  # True == 1 in Python
    change(detections[1])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(detections))  # NaN / Infinity: Python's json writes them
    assert main(["eval", "--fashionpedia-results", str(tmp_path / "results.json"), "--data", str(tmp_path / "gt.json")]) == 1
    err = capsys.readouterr().err
    assert f"results.json: {field}" in err and "Traceback" not in err, err


def test_compressed_rle_check_accepts_every_mask_pycocotools_writes():
    from workbench.data.masks import compressed_rle_error

    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        m = rng.random((h, w)) < rng.random()
        assert compressed_rle_error(rle(m)["counts"], h, w) is None
        assert compressed_rle_error(rle(m)["counts"], h + 1, w) is not None  # the runs cover H x W exactly
