"""A Fashionpedia-format file (generated: synthetic shapes with a multi-label pattern group) imports, trains a
few steps with a tiny model, and evaluates with AP(IoU+F1); its results file scores through the CLI."""
import json

import numpy as np
import pytest
import yaml

from workbench.cli import main
from workbench.data.synthetic import synthetic_splits


def to_fashionpedia(coco: dict) -> dict:
    """Our COCO-with-attributes -> Fashionpedia's format: attributes with ids and supercategories, attribute_ids
    per annotation (ids deliberately not 0..n-1), categories with ids 0..C-1 as Fashionpedia's."""
    attributes, ids = [], {}
    for g in coco["attributes"]:
        for v in g["values"]:
            ids[g["name"], v["id"]] = 300 + 7 * len(attributes)
            attributes.append({"id": ids[g["name"], v["id"]], "name": v["name"].replace("_", " "),
                               "supercategory": "textile pattern" if g["name"] == "pattern" else g["name"],
                               "level": 1})
    cat_index = {c["id"]: i for i, c in enumerate(coco["categories"])}
    annotations = []
    for a in coco["annotations"]:
        attrs = a.pop("attributes")
        a["attribute_ids"] = sorted(ids[n, k] for n, v in attrs.items() for k in (v if isinstance(v, list) else [v]))
        a["category_id"] = cat_index[a["category_id"]]
        annotations.append(a)
    categories = [dict(c, id=i) for i, c in enumerate(coco["categories"])]
    return {"info": {}, "images": coco["images"], "categories": categories, "annotations": annotations,
            "attributes": attributes}


@pytest.fixture(scope="module")
def fashionpedia_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp")
    train, val = synthetic_splits(root, 8, 4, image_size=64, progress=False, patterns=True)
    paths = []
    for coco_path in (train, val):
        src = coco_path.parent / "fashionpedia.json"
        src.write_text(json.dumps(to_fashionpedia(json.loads(coco_path.read_text()))))
        paths.append(src)
    return paths


def test_import_train_evaluate_with_iou_f1(fashionpedia_files, tmp_path, capsys):
    train_src, val_src = fashionpedia_files
    train_dst, val_dst = train_src.parent / "imported.json", val_src.parent / "imported.json"
    assert main(["data", "import-fashionpedia", str(train_src), "--out", str(train_dst)]) == 0
    assert main(["data", "import-fashionpedia", str(val_src), "--out", str(val_dst)]) == 0
    imported = json.loads(train_dst.read_text())
    kinds = {g["name"]: g.get("kind", "single") for g in imported["attributes"]}
    assert kinds == {"color": "single", "size": "single", "textile_pattern": "multi"}
    pattern = next(g for g in imported["attributes"] if g["name"] == "textile_pattern")
    assert [v["source_id"] for v in pattern["values"]] == [342, 349, 356]
    assert [v["source_name"] for v in pattern["values"]] == ["stripes", "dots", "outline"]

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"preset": "tiny", "loss": {"num_points": 64, "multi_label_loss": "focal"}},
        "solver": {"base_lr": 1e-3, "batch_size": 2, "max_iter": 3, "warmup_iters": 1, "checkpoint_period": 3,
                   "log_period": 1},
        "augment": {"image_size": 64, "min_scale": 0.9, "max_scale": 1.1, "test_shortest_edge": 0},
        "data": {"train": str(train_dst), "val": str(val_dst)}, "device": "cpu"}))
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["iou_f1"]) >= {"AP", "AP_IOU50_F150", "AP_IOU75_F175"}
    assert metrics["iou_f1"]["AP"] is not None and 0 <= metrics["iou_f1"]["AP"] <= 100
    assert set(metrics["multi_label"]) == {"textile_pattern"}
    assert set(metrics["attributes"]) == {"color", "size"}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert {a["name"]: a["kind"] for a in saved["model"]["attributes"]}["textile_pattern"] == "multi"
    losses = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss_attr_textile_pattern" in rec.get("losses", rec) for rec in losses)


def test_results_file_scores_through_the_cli(fashionpedia_files, tmp_path, capsys):
    """GT re-submitted as results (with one attribute dropped from every annotation that has two or more)."""
    _, val_src = fashionpedia_files
    gt = json.loads(val_src.read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"],
                "score": 1.0, "attribute_ids": a["attribute_ids"]} for a in gt["annotations"]]
    damaged = [dict(r, attribute_ids=r["attribute_ids"][1:]) for r in perfect]
    scores = {}
    for name, results in (("perfect", perfect), ("damaged", damaged)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(results))
        assert main(["eval", "--fashionpedia-results", str(path), "--data", str(val_src), "--json"]) == 0
        scores[name] = json.loads(capsys.readouterr().out)
    assert scores["perfect"]["AP"] == pytest.approx(100.0)
    assert scores["damaged"]["AP"] < 100.0


def test_bad_results_and_bad_source_name_the_field_and_write_nothing(fashionpedia_files, tmp_path, capsys):
    _, val_src = fashionpedia_files
    gt = json.loads(val_src.read_text())
    bad = [{"image_id": gt["images"][0]["id"], "category_id": 0, "segmentation": gt["annotations"][0]["segmentation"],
            "score": 0.5, "attribute_ids": [999]}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["eval", "--fashionpedia-results", str(path), "--data", str(val_src)]) == 1
    assert "[0].attribute_ids" in capsys.readouterr().err
    gt["annotations"][2]["attribute_ids"] = [12345]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(gt))
    out = tmp_path / "out.json"
    assert main(["data", "import-fashionpedia", str(broken), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "annotations[2]" in err and "attribute_ids[0]" in err and "nothing written" in err
    assert not out.exists()


def test_results_with_a_malformed_rle_name_the_field(fashionpedia_files, tmp_path, capsys):
    """pycocotools would raise TypeError deep inside on these; the check names the entry and field."""
    _, val_src = fashionpedia_files
    gt = json.loads(val_src.read_text())
    ann, image = gt["annotations"][0], next(im for im in gt["images"] if im["id"] == gt["annotations"][0]["image_id"])
    good = {"image_id": ann["image_id"], "category_id": ann["category_id"], "segmentation": ann["segmentation"],
            "score": 0.5, "attribute_ids": []}
    for segmentation, field in (({"counts": [3, 4], "size": ann["segmentation"]["size"]}, "[0].segmentation.counts"),
                                ({"counts": ann["segmentation"]["counts"], "size": "64x64"}, "[0].segmentation.size"),
                                ({"counts": ann["segmentation"]["counts"],
                                  "size": [image["height"] + 1, image["width"]]}, "[0].segmentation.size")):
        path = tmp_path / "results.json"
        path.write_text(json.dumps([dict(good, segmentation=segmentation)]))
        assert main(["eval", "--fashionpedia-results", str(path), "--data", str(val_src)]) == 1
        err = capsys.readouterr().err
        assert field in err and "Traceback" not in err, err
