"""The YAML schema and COCO-with-attributes load / save / format checks."""
from pathlib import Path

import pytest

import workbench as wb
from workbench.data.io import write_json_atomic
from workbench.data.problems import DataError
from workbench.data.schema import Schema, check_coco, load_coco, load_schema, save_coco
from workbench.data.synthetic import synthetic_schema

REPO = Path(__file__).resolve().parents[1]


def test_committed_schema_is_the_synthetic_one_and_feeds_model_config():
    schema = load_schema(REPO / "data" / "schema.yaml")
    assert schema == synthetic_schema()
    assert schema.category_names == ["circle", "square", "triangle"]
    assert schema.model_attributes() == {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"]}
    cfg = wb.ModelConfig.tiny(num_classes=schema.num_classes, attributes=schema.model_attributes())
    assert cfg.attribute("size").values == ("small", "medium", "large")


def test_schema_round_trips_through_yaml_and_coco(tmp_path):
    schema = load_schema(REPO / "data" / "schema.yaml")
    (tmp_path / "s.yaml").write_text(schema.to_yaml())
    assert load_schema(tmp_path / "s.yaml") == schema
    coco = {"images": [], "annotations": [], **schema.coco_header()}
    assert Schema.from_coco(coco).model_attributes() == schema.model_attributes()
    assert Schema.from_coco(coco).categories == schema.categories


def test_explicit_category_ids(tmp_path):
    (tmp_path / "s.yaml").write_text("categories: [{id: 7, name: cat}, {id: 3, name: dog}]\nattributes: {}\n")
    schema = load_schema(tmp_path / "s.yaml")
    assert schema.label_of() == {7: 0, 3: 1}


@pytest.mark.parametrize("text, code, where", [
    ("categories: [cat\nattributes: {}\n", "yaml_syntax", ":2:11"),
    ("attributes: {color: [red]}\n", "bad_schema", "categories"),
    ("categories: [cat, cat]\n", "duplicate_name", "categories"),
    ("categories: [cat]\nattributes: {color: [red, red]}\n", "duplicate_name", "attributes.color"),
    ("categories: [cat]\nattributes: {my color: [red]}\n", "bad_name", "attributes.my color"),
    ("categories: [cat]\nattributes: {color: [dark red]}\n", "bad_name", "attributes.color"),
    ("categories: [cat]\nattribute_sources: [flags, notes]\n", "bad_schema", "attribute_sources"),
    ("categories: [cat]\ncolours: {}\n", "bad_schema", "s.yaml"),
])
def test_schema_errors_name_file_and_field(tmp_path, text, code, where):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(DataError) as e:
        load_schema(path)
    assert e.value.codes == [code]
    assert str(path) in str(e.value) and where in e.value.problems[0].where


def test_missing_schema_file(tmp_path):
    with pytest.raises(DataError) as e:
        load_schema(tmp_path / "nope.yaml")
    assert e.value.codes == ["missing_file"]


def small_coco():
    schema = synthetic_schema()
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [0, 0, 2, 2],
                         "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]], "attributes": {"color": 2}}],
        **schema.coco_header(),
    }


@pytest.mark.parametrize("mutate, code", [
    (lambda d: d["annotations"][0].update(category_id=9), "unknown_category"),
    (lambda d: d["annotations"][0].update(image_id=9), "unknown_image"),
    (lambda d: d["annotations"][0].update(image_id=[1]), "unknown_image"),
    (lambda d: d["annotations"][0].update(category_id="1"), "unknown_category"),
    (lambda d: d["annotations"][0]["attributes"].update(shape=0), "unknown_attribute"),
    (lambda d: d["annotations"][0]["attributes"].update(color=3), "id_out_of_range"),
    (lambda d: d["annotations"][0]["attributes"].update(color=-2), "id_out_of_range"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate_id"),
    (lambda d: d["attributes"][0]["values"][2].update(id=5), "id_out_of_range"),
    (lambda d: d.pop("images"), "bad_format"),
])
def test_check_coco_finds_each_problem(mutate, code):
    data = small_coco()
    assert check_coco(data) == []
    mutate(data)
    assert code in [p.code for p in check_coco(data)]


def test_unlabeled_minus_one_is_allowed():
    data = small_coco()
    data["annotations"][0]["attributes"]["size"] = -1
    assert check_coco(data) == []


def test_save_is_atomic_and_refuses_bad_data(tmp_path):
    out = tmp_path / "coco.json"
    save_coco(small_coco(), out)
    before = out.read_bytes()
    assert load_coco(out) == small_coco()
    bad = small_coco()
    bad["annotations"][0]["category_id"] = 42
    with pytest.raises(DataError):
        save_coco(bad, out)
    with pytest.raises(TypeError):  # not JSON-serialisable: fails before touching the disk
        write_json_atomic(out, {"x": object()})
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco.json"]


def test_load_coco_reports_json_syntax_with_line_and_column(tmp_path):
    path = tmp_path / "coco.json"
    path.write_text('{\n "images": [],\n "annotations": []\n "categories": []\n}\n')  # missing comma
    with pytest.raises(DataError) as e:
        load_coco(path)
    assert e.value.codes == ["json_syntax"]
    assert f"{path}:4:2:" in str(e.value)
