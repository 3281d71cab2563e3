"""Stuff categories in the schema, the COCO panoptic and semantic PNG readers, and their errors."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from workbench.data.masks import mask_to_rle
from workbench.data.coco_panoptic import id_to_rgb, load_coco_panoptic, read_panoptic_png, rgb_to_id
from workbench.data.problems import DataError
from workbench.data.schema import Schema, check_coco, schema_from_dict
from workbench.data.semantic_png import load_class_list, load_semantic, read_label_png
from workbench.data.validate import validate_coco

H, W = 20, 30
SCHEMA = {"categories": ["car", {"id": 7, "name": "road", "isthing": False}, {"name": "sky", "isthing": False}],
          "attributes": {"color": ["red", "blue"], "state": {"values": ["wet", "dry", "icy"], "kind": "multi"}}}


def test_isthing_round_trips_and_gives_stuff_classes():
    schema = schema_from_dict(SCHEMA)
    assert [(c.id, c.isthing) for c in schema.categories] == [(1, True), (7, False), (3, False)]
    assert schema.stuff_classes == (1, 2)
    assert schema.model_fields()["stuff_classes"] == (1, 2)
    assert schema_from_dict(__import__("yaml").safe_load(schema.to_yaml())) == schema
    header = schema.coco_header()
    assert [c["isthing"] for c in header["categories"]] == [1, 0, 0]
    assert Schema.from_coco({"images": [], "annotations": [], **header}) == schema


def test_all_thing_schemas_are_written_as_before():
    schema = schema_from_dict({"categories": ["car", "bus"], "attributes": {}})
    assert "isthing" not in schema.to_yaml() and "stuff_classes" not in schema.model_fields()
    assert schema.coco_header()["categories"][0] == {"id": 1, "name": "car", "supercategory": ""}


@pytest.mark.parametrize("bad", [{"name": "sky", "isthing": "no"}, {"name": "sky", "stuff": True}])
def test_bad_isthing_in_the_schema_is_named(bad):
    with pytest.raises(DataError, match=r"categories\[1\]"):
        schema_from_dict({"categories": ["car", bad]})


def test_coco_isthing_must_be_0_or_1():
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "sky", "isthing": 2}]}
    assert any("categories[0].isthing" in p.where for p in check_coco(data))


def test_validator_names_the_file_and_image_of_a_split_stuff_region(tmp_path):
    m1, m2 = np.zeros((H, W), bool), np.zeros((H, W), bool)
    m1[:5], m2[10:] = True, True
    schema = schema_from_dict(SCHEMA)
    anns = [{"id": i + 1, "image_id": 1, "category_id": 7, "segmentation": mask_to_rle(m), "bbox": [0, 0, 1, 1],
             "area": 1, "iscrowd": 0} for i, m in enumerate((m1, m2))]
    data = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}], "annotations": anns,
            **schema.coco_header()}
    (tmp_path / "coco.json").write_text(json.dumps(data))
    report = validate_coco(tmp_path / "coco.json", progress=False)
    split = [p for p in report.errors if p.code == "stuff_split"]
    assert len(split) == 1 and "coco.json" in split[0].where and "image 1 (a.png)" in split[0].message
    assert "'road'" in split[0].message
    data["annotations"][0]["category_id"] = data["annotations"][1]["category_id"] = 1
    (tmp_path / "coco.json").write_text(json.dumps(data))  # two things of one class are fine
    assert "stuff_split" not in validate_coco(tmp_path / "coco.json", progress=False).codes


def write_panoptic(folder: Path, ids: np.ndarray, segments: list[dict], schema=None, **ann_extra) -> Path:
    schema = schema or schema_from_dict(SCHEMA)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(folder / "a.jpg")
    (folder / "pan").mkdir(exist_ok=True)
    Image.fromarray(id_to_rgb(ids)).save(folder / "pan" / "a.png")
    header = schema.coco_header()
    data = {"images": [{"id": 5, "file_name": "a.jpg", "height": H, "width": W}],
            "annotations": [{"image_id": 5, "file_name": "a.png", "segments_info": segments, **ann_extra}], **header}
    (folder / "pan.json").write_text(json.dumps(data))
    return folder / "pan.json"


def id_map():
    ids = np.zeros((H, W), np.int32)
    ids[:8] = 300  # road, an id above 255 to exercise G
    ids[10:15, 2:8] = 2  # car
    ids[10:15, 20:28] = 70000  # a crowd of cars, an id using B
    return ids


SEGMENTS = [{"id": 300, "category_id": 7, "iscrowd": 0, "attributes": {"state": [0, 2]}},
            {"id": 2, "category_id": 1, "iscrowd": 0, "attributes": {"color": 1}},
            {"id": 70000, "category_id": 1, "iscrowd": 1}]


def test_rgb_ids_round_trip():
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 70000, 16777215]])
    np.testing.assert_array_equal(rgb_to_id(id_to_rgb(ids)), ids)
    assert id_to_rgb(np.array(256 + 2 * 65536)).tolist() == [0, 1, 2]


def test_reader_gives_contiguous_labels_isthing_attributes_and_crowd(tmp_path):
    path = write_panoptic(tmp_path, id_map(), SEGMENTS)
    records, schema = load_coco_panoptic(path)
    (r,) = records
    assert r["pan_seg_file_name"] == str(tmp_path / "pan" / "a.png") and r["file_name"] == str(tmp_path / "a.jpg")
    segs = r["segments_info"]
    assert [(s["category_id"], s["isthing"], s["iscrowd"]) for s in segs] == [(1, False, 0), (0, True, 0), (0, True, 1)]
    assert segs[0]["attributes"] == {"color": -1, "state": [0, 2]} and segs[1]["attributes"] == {"color": 1, "state": -1}
    ids = read_panoptic_png(r["pan_seg_file_name"], segs, H, W)
    np.testing.assert_array_equal(ids, id_map())


def test_a_pixel_id_without_segment_is_named_with_file_and_value(tmp_path):
    ids = id_map()
    ids[19, 29] = 513
    path = write_panoptic(tmp_path, ids, SEGMENTS)
    (r,), _ = load_coco_panoptic(path)
    with pytest.raises(DataError, match=r"a\.png.*pixel value id 513 \(RGB \(1, 2, 0\)\)"):
        read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], H, W)


@pytest.mark.parametrize("segments, match", [
    (SEGMENTS + [{"id": 9, "category_id": 7, "iscrowd": 0}], r"a second segment of the stuff category 'road'"),
    ([dict(SEGMENTS[1], attributes={"color": 2})], r"segments_info\[0\] \(id 2\)\.attributes\.color.*outside 0\.\.1"),
    ([dict(SEGMENTS[1], category_id=99)], r"no category with id 99"),
    ([dict(SEGMENTS[1], attributes={"state": 1})], r"multi-label group"),
])
def test_bad_segments_info_is_named(tmp_path, segments, match):
    with pytest.raises(DataError, match=match) as e:
        load_coco_panoptic(write_panoptic(tmp_path, id_map(), segments))
    assert "pan.json" in str(e.value) and "image 5, a.png" in str(e.value)


def test_missing_png_and_grayscale_png_are_errors(tmp_path):
    path = write_panoptic(tmp_path, id_map(), SEGMENTS)
    (tmp_path / "pan" / "a.png").unlink()
    with pytest.raises(DataError, match="panoptic PNG .*a.png not found"):
        load_coco_panoptic(path)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "pan" / "a.png")
    (r,), _ = load_coco_panoptic(path)
    with pytest.raises(DataError, match="mode L"):
        read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], H, W)


def write_semantic(folder: Path, labels: np.ndarray, classes="[road, car, sky]\n", name="classes.yaml"):
    (folder / "img").mkdir(exist_ok=True)
    (folder / "lab").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((*labels.shape, 3), np.uint8)).save(folder / "img" / "x.jpg")
    Image.fromarray(labels.astype(np.uint8)).save(folder / "lab" / "x.png")
    (folder / name).write_text(classes)
    return folder / "lab", folder / "img", folder / name


def test_semantic_reader_pairs_by_name_and_reads_json_class_lists(tmp_path):
    labels = np.full((H, W), 255, np.uint8)
    labels[:5] = 2
    lab, img, classes = write_semantic(tmp_path, labels, '["road", "car", "sky"]', "classes.json")
    records, schema = load_semantic(lab, img, classes)
    assert schema.category_names == ["road", "car", "sky"] and records[0]["file_name"].endswith("x.jpg")
    np.testing.assert_array_equal(read_label_png(records[0]["sem_seg_file_name"], 3, H, W), labels)


def test_semantic_pixel_value_outside_the_classes_is_named(tmp_path):
    labels = np.zeros((H, W), np.uint8)
    labels[4, 7] = 3
    lab, img, classes = write_semantic(tmp_path, labels)
    records, _ = load_semantic(lab, img, classes)
    with pytest.raises(DataError, match=r"x\.png: error: pixel value 3 at \(x=7, y=4\) is no class \(0\.\.2"):
        read_label_png(records[0]["sem_seg_file_name"], 3, H, W)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(lab / "x.png")
    with pytest.raises(DataError, match="mode RGB"):
        read_label_png(lab / "x.png", 3)
    (img / "x.jpg").unlink()
    with pytest.raises(DataError, match=r"no image\(s\)"):
        load_semantic(lab, img, classes)
    (tmp_path / "bad.yaml").write_text("{road: 1}")
    with pytest.raises(DataError, match="bad.yaml"):
        load_class_list(tmp_path / "bad.yaml")


def test_cli_validate_checks_a_panoptic_file_and_its_pngs(tmp_path, capsys):
    from workbench.cli import main

    path = write_panoptic(tmp_path, id_map(), SEGMENTS)
    args = ["data", "validate", str(path), "--pngs", str(tmp_path / "pan"), "--images", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 images" in out and "2 instances, 1 ignore regions" in out and "road" in out
    ids = id_map()
    ids[0, 0] = 4242
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "pan" / "a.png")
    assert main(args) == 1
    assert "pixel value id 4242" in capsys.readouterr().out
    Image.fromarray(id_to_rgb(id_map())).save(tmp_path / "pan" / "a.png")
    (tmp_path / "a.jpg").unlink()
    assert main(args) == 1
    assert "a.jpg not found" in capsys.readouterr().out


def test_a_segment_without_pixels_is_named(tmp_path):
    path = write_panoptic(tmp_path, id_map(), SEGMENTS + [{"id": 9, "category_id": 1, "iscrowd": 0}])
    (r,), _ = load_coco_panoptic(path)
    with pytest.raises(DataError, match=r"a\.png: error: segments_info lists id 9 but no pixel has it"):
        read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], H, W)
