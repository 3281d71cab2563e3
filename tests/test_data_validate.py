"""The validator: one specific problem per bad input, exit codes, and the category x attribute table."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.cli import main
from workbench.data.labelme import convert_labelme
from workbench.data.masks import mask_to_rle
from workbench.data.schema import load_schema, schema_from_dict
from workbench.data.validate import validate_coco

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(tmp_path):
    """The committed sample, converted: (coco path, image folder, data dict). The file sits in the image folder:
    convert writes file_names relative to the output's folder."""
    images = tmp_path / "images"
    shutil.copytree(REPO / "data" / "sample", images)
    coco = convert_labelme(images, load_schema(REPO / "data" / "schema.yaml"), out=images / "coco.json",
                           progress=False)
    return images / "coco.json", images, coco


def rewrite(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))


def test_clean_dataset_passes_and_summary_counts_instances(dataset):
    path, images, coco = dataset
    report = validate_coco(path, images=images, schema=load_schema(REPO / "data" / "schema.yaml"), progress=False)
    assert report.ok and report.problems == []
    table = report.summary
    assert table.loc["total", ("instances", "")] == len(coco["annotations"]) == report.num_annotations
    for category in ("circle", "square", "triangle"):
        expected = sum(a["category_id"] == {"circle": 1, "square": 2, "triangle": 3}[category] for a in coco["annotations"])
        assert table.loc[category, ("instances", "")] == expected
        row = table.loc[category]
        assert row["color"].sum() == row["size"].sum() == expected  # every instance counted once per attribute
    reds = sum(a["attributes"].get("color") == 0 for a in coco["annotations"])
    assert table.loc["total", ("color", "red")] == reds
    assert "instances per category x attribute value" in str(report)


def test_unlabeled_attributes_are_counted(dataset):
    path, images, coco = dataset
    del coco["annotations"][0]["attributes"]["size"]
    rewrite(path, coco)
    report = validate_coco(path, progress=False)
    assert report.ok
    assert report.summary.loc["total", ("size", "unlabeled")] == 1


def _set_ann(i, **kv):
    return lambda d, images: d["annotations"][i].update(kv)


def _blank_rle(d, images):
    im = d["images"][0]
    d["annotations"][0]["segmentation"] = mask_to_rle(np.zeros((im["height"], im["width"]), bool))


def _resize_image(d, images):
    Image.new("RGB", (64, 64)).save(images / d["images"][0]["file_name"])


def _corrupt_image(d, images):
    (images / d["images"][0]["file_name"]).write_bytes(b"\x89PNG\r\n\x1a\n not really")


BAD = {
    "unknown_category": _set_ann(0, category_id=99),
    "unknown_image": _set_ann(0, image_id=99),
    "unknown_attribute": lambda d, images: d["annotations"][0]["attributes"].update(shade=1),
    "id_out_of_range": lambda d, images: d["annotations"][0]["attributes"].update(color=3),
    "duplicate_id": lambda d, images: d["annotations"].append(dict(d["annotations"][0])),
    "degenerate_polygon": _set_ann(0, segmentation=[[1, 1, 5, 5]]),
    "duplicate_image": lambda d, images: d["images"][1].update(file_name=d["images"][0]["file_name"]),
    "out_of_image": _set_ann(0, segmentation=[[1, 1, 500, 1, 5, 9]]),
    "zero_area_mask": _blank_rle,
    "mask_size_mismatch": lambda d, images: d["annotations"][0]["segmentation"].update(size=[10, 10]),
    "missing_image": lambda d, images: (images / d["images"][0]["file_name"]).unlink(),
    "unreadable_image": _corrupt_image,
    "image_size_mismatch": _resize_image,
}


@pytest.mark.parametrize("code", sorted(BAD))
def test_each_bad_input_gets_its_specific_error(dataset, code, capsys):
    path, images, coco = dataset
    BAD[code](coco, images)
    rewrite(path, coco)
    report = validate_coco(path, images=images, progress=False)
    assert not report.ok
    assert report.codes == {code}
    assert all(str(path) in p.where for p in report.problems)
    assert main(["data", "validate", str(path), "--images", str(images)]) == 1
    assert f"[{code}]" in capsys.readouterr().out


def test_collinear_polygon_is_degenerate(dataset):
    path, images, coco = dataset
    coco["annotations"][1]["segmentation"] = [[1, 1, 5, 5, 9, 9]]
    rewrite(path, coco)
    report = validate_coco(path, progress=False)
    assert report.codes == {"degenerate_polygon"}
    assert "annotations[1]" in report.problems[0].where and "segmentation[0]" in report.problems[0].where


def test_image_without_instances_is_a_warning_not_an_error(dataset, capsys):
    path, images, coco = dataset
    first = coco["images"][0]["id"]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != first]
    rewrite(path, coco)
    report = validate_coco(path, images=images, progress=False)
    assert report.ok and report.codes == {"empty_image"}
    assert report.warnings[0].severity == "warning"
    assert main(["data", "validate", str(path), "--images", str(images)]) == 0


def test_json_syntax_error_is_reported_with_line_and_column(tmp_path):
    path = tmp_path / "coco.json"
    path.write_text('{"images": [],\n "annotations": [] "categories": []}')
    report = validate_coco(path, progress=False)
    assert report.codes == {"json_syntax"} and not report.ok
    assert report.problems[0].where == f"{path}:2:20"


def test_vocabulary_must_agree_with_the_schema(dataset):
    path, images, coco = dataset
    other = schema_from_dict({"categories": ["circle", "square", "star"],
                              "attributes": {"color": ["red", "green", "blue"], "size": ["small", "large"]}})
    report = validate_coco(path, schema=other, progress=False)
    assert report.codes == {"unknown_category", "unknown_attribute_value"}


IMAGE = {"id": 1, "file_name": "a.png", "height": 5, "width": 5}
CATEGORIES = [{"id": 1, "name": "a"}]


@pytest.mark.parametrize("doc, code", [
    ([], "bad_format"),
    ({"images": [1], "annotations": [1], "categories": []}, "bad_format"),
    ({"images": [{**IMAGE, "height": "5"}], "annotations": [], "categories": CATEGORIES}, "bad_format"),
    ({"images": [IMAGE], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": 5}],
      "categories": CATEGORIES}, "bad_format"),
    ({"images": [IMAGE], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "attributes": [0],
                                          "segmentation": [[1, 1, 4, 1, 2, 4]]}], "categories": CATEGORIES}, "bad_format"),
    ({"images": [IMAGE], "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                          "segmentation": {"size": [5, 5], "counts": "not rle!"}}],
      "categories": CATEGORIES}, "bad_format"),
    ({"images": [IMAGE], "annotations": [{"id": 1, "image_id": [1], "category_id": 1, "segmentation": []}],
      "categories": CATEGORIES}, "unknown_image"),
])
def test_malformed_files_are_reported_not_crashed_on(tmp_path, doc, code):
    path = tmp_path / "coco.json"
    rewrite(path, doc)
    report = validate_coco(path, progress=False)
    assert not report.ok and code in report.codes
