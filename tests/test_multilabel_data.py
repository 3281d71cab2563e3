"""Multi-label attribute groups in the data: file format, schema, labelme, dataset (with augmentation), synthetic."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data.dataset import CocoAttributeDataset
from workbench.data.labelme import convert_labelme
from workbench.data.problems import DataError
from workbench.data.schema import Schema, check_coco, schema_from_dict
from workbench.data.synthetic import SynthConfig, make_image, synthetic_schema
from workbench.data.validate import summary_table

H = W = 32


def coco(pattern_values, kind="multi"):
    """One 32x32 image; instance i is a 8x8 square at column 8i, with `pattern_values[i]` (None = key missing)."""
    anns = []
    for i, v in enumerate(pattern_values):
        attrs = {"color": i % 2} if v is None else {"color": i % 2, "pattern": v}
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [8 * i, 0, 8, 8],
                     "area": 64.0, "segmentation": [[8 * i, 0, 8 * i + 7.9, 0, 8 * i + 7.9, 7.9, 8 * i, 7.9]],
                     "attributes": attrs})
    group = {"name": "pattern", "values": [{"id": k, "name": n} for k, n in enumerate(["stripes", "dots", "outline"])]}
    if kind:
        group["kind"] = kind
    return {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}], "annotations": anns,
            "categories": [{"id": 1, "name": "shape"}],
            "attributes": [{"name": "color", "values": [{"id": 0, "name": "red"}, {"id": 1, "name": "blue"}]}, group]}


def test_file_format_multi_groups_and_errors_name_the_field():
    assert check_coco(coco([[0, 2], [], -1, None])) == []
    schema = Schema.from_coco(coco([[0]]))
    assert schema.attribute("pattern").multi and not schema.attribute("color").multi
    assert schema.model_fields()["attributes"] == {"color": ["red", "blue"],
                                                   "pattern": {"values": ["stripes", "dots", "outline"], "kind": "multi"}}
    problems = check_coco(coco([[0, 3]]))
    assert [p.where for p in problems] == ["coco: annotations[0] (id 1).attributes.pattern"]
    assert "outside 0..2" in problems[0].message
    problems = check_coco(coco([[1, 1]]))
    assert problems and problems[0].code == "duplicate_id"
    problems = check_coco(coco([[0, 1]], kind=None))  # a list on a single-label group
    assert problems and "single-label" in problems[0].message and "kind" in problems[0].message
    problems = check_coco(coco([[0]], kind="several"))
    assert problems and problems[0].where.endswith(".kind")


def test_header_round_trip_and_single_groups_unchanged():
    data = coco([[0]])
    schema = Schema.from_coco(data)
    header = schema.coco_header()["attributes"]
    assert header[0] == {"name": "color", "values": [{"id": 0, "name": "red"}, {"id": 1, "name": "blue"}]}
    assert header[1]["kind"] == "multi"
    assert Schema.from_coco({**data, "attributes": header}) == schema


def test_yaml_schema_multi_group():
    s = schema_from_dict({"categories": ["a"], "attributes": {"color": ["r"], "pattern": {"values": ["x", "y"], "kind": "multi"}}})
    assert s.attribute("pattern").multi
    assert schema_from_dict(__import__("yaml").safe_load(s.to_yaml())) == s
    with pytest.raises(DataError, match="attributes.pattern"):
        schema_from_dict({"categories": ["a"], "attributes": {"pattern": {"values": ["x"], "kind": "many"}}})


def test_dataset_gives_multi_hot_and_labeled_mask_and_drops_cropped_rows(tmp_path):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.png")
    data = coco([[0, 2], [], -1, None])
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    item = CocoAttributeDataset(path)[0]["instances"]
    assert item["attributes"]["pattern"].dtype == torch.bool
    assert item["attributes"]["pattern"].tolist() == [[True, False, True], [False] * 3, [False] * 3, [False] * 3]
    assert item["attribute_labeled"]["pattern"].tolist() == [True, True, False, False]
    assert item["attributes"]["color"].tolist() == [0, 1, 0, 1]

    def crop_left_half(image, masks, rng):  # instances 2 and 3 (columns 16..31) are cropped away
        return image[:, :16], masks[:, :, :16]

    item = CocoAttributeDataset(path, augmentation=crop_left_half)[0]["instances"]
    assert item["attributes"]["pattern"].tolist() == [[True, False, True], [False] * 3]
    assert item["attribute_labeled"]["pattern"].tolist() == [True, True]
    assert item["attributes"]["color"].tolist() == [0, 1]


def test_single_only_items_have_no_new_keys(tmp_path):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.png")
    data = coco([None])
    data["attributes"] = data["attributes"][:1]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    assert set(CocoAttributeDataset(path)[0]["instances"]) == {"labels", "masks", "boxes", "attributes", "ignore"}  # no attribute_labeled


def labelme(tmp_path, flags):
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "x.png")
    doc = {"version": "5.4.1", "flags": {}, "imagePath": "x.png", "imageData": None, "imageHeight": H,
           "imageWidth": W, "shapes": [{"label": "shape", "points": [[2, 2], [12, 12]], "group_id": None,
                                        "description": "", "shape_type": "rectangle", "flags": flags}]}
    (tmp_path / "x.json").write_text(json.dumps(doc))


def test_labelme_several_flags_of_a_multi_group_and_error_for_single(tmp_path):
    schema = schema_from_dict({"categories": ["shape"], "attributes": {
        "color": ["red", "blue"], "pattern": {"values": ["stripes", "dots", "outline"], "kind": "multi"}}})
    labelme(tmp_path, {"stripes": True, "pattern=outline": True, "red": True})
    out = convert_labelme(tmp_path, schema, progress=False)
    assert out["annotations"][0]["attributes"] == {"color": 0, "pattern": [0, 2]}
    assert next(a for a in out["attributes"] if a["name"] == "pattern")["kind"] == "multi"
    labelme(tmp_path, {"red": True, "blue": True})
    with pytest.raises(DataError) as err:
        convert_labelme(tmp_path, schema, tmp_path / "out.json", progress=False)
    message = str(err.value)
    assert "x.json" in message and "shapes[0]" in message and "single-label" in message
    assert not (tmp_path / "out.json").exists()


def test_validator_counts_every_value_of_a_multi_group():
    table = summary_table(coco([[0, 2], [2], -1]), Schema.from_coco(coco([[0]])))
    assert table.loc["total", ("pattern", "stripes")] == 1
    assert table.loc["total", ("pattern", "outline")] == 2
    assert table.loc["total", ("pattern", "unlabeled")] == 1


def test_synthetic_patterns_are_optional_and_default_is_unchanged():
    plain = make_image(np.random.default_rng([1, 0]))
    again = make_image(np.random.default_rng([1, 0]), SynthConfig(patterns=False))
    assert np.array_equal(plain.image, again.image) and plain.patterns is None
    assert synthetic_schema().attribute_names == ["color", "size"]
    rich = make_image(np.random.default_rng([1, 0]), SynthConfig(patterns=True))
    assert len(rich.patterns) == len(rich.shapes)
    assert synthetic_schema(patterns=True).attribute("pattern").multi
    for shape, chosen in zip(rich.shapes, rich.patterns):
        assert {f for f, on in shape["flags"].items() if f.startswith("pattern=")} == {f"pattern={p}" for p in chosen}
