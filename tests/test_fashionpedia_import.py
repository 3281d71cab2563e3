"""Fashionpedia -> COCO-with-attributes: groups per supercategory, single vs multi, names and ids kept."""
import pytest

from workbench.data.fashionpedia import fashionpedia_to_coco
from workbench.data.problems import DataError
from workbench.data.schema import Schema, check_coco

SEG = [[0, 0, 4, 0, 4, 4, 0, 4]]


def source(annotation_ids):
    attributes = [{"id": 115, "name": "above-the-hip (length)", "supercategory": "length", "level": 1},
                  {"id": 116, "name": "maxi (length)", "supercategory": "length", "level": 1},
                  {"id": 200, "name": "single breasted", "supercategory": "opening type", "level": 1},
                  {"id": 300, "name": "plaid", "supercategory": "textile pattern", "level": 1},
                  {"id": 301, "name": "floral", "supercategory": "textile pattern", "level": 1}]
    anns = [{"id": i, "image_id": 1, "category_id": 0, "segmentation": SEG, "area": 16.0, "bbox": [0, 0, 4, 4],
             "iscrowd": 0, "attribute_ids": ids} for i, ids in enumerate(annotation_ids)]
    return {"info": {"year": 2020}, "images": [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}],
            "categories": [{"id": 0, "name": "shirt, blouse", "supercategory": "upperbody"}],
            "annotations": anns, "attributes": attributes}


def test_groups_kinds_names_and_unlabeled():
    out = fashionpedia_to_coco(source([[115, 300, 301], [116], []]))
    assert check_coco(out) == []
    groups = {g["name"]: g for g in out["attributes"]}
    assert list(groups) == ["length", "opening_type", "textile_pattern"]
    assert [g.get("kind", "single") for g in groups.values()] == ["single", "single", "multi"]
    assert [v["name"] for v in groups["length"]["values"]] == ["above-the-hip_(length)", "maxi_(length)"]
    assert [(v["source_id"], v["source_name"]) for v in groups["textile_pattern"]["values"]] == [
        (300, "plaid"), (301, "floral")]
    assert groups["opening_type"]["source_name"] == "opening type"
    a0, a1, a2 = (a["attributes"] for a in out["annotations"])
    assert a0 == {"length": 0, "textile_pattern": [0, 1]}
    assert a1 == {"length": 1, "textile_pattern": []}  # annotated item: no pattern listed = none applies
    assert a2 == {}  # no attribute_ids at all: every group unlabeled
    assert "attribute_ids" not in out["annotations"][0]
    assert out["categories"] == source([])["categories"] and out["info"] == {"year": 2020}
    schema = Schema.from_coco(out)
    assert schema.attribute("textile_pattern").source_ids == (300, 301)


def test_all_multi_flag():
    out = fashionpedia_to_coco(source([[115], [200]]), all_multi=True)
    assert all(g["kind"] == "multi" for g in out["attributes"])
    assert out["annotations"][0]["attributes"] == {"length": [0], "opening_type": [], "textile_pattern": []}


def test_errors_name_the_field():
    bad = source([[115, 999]])
    bad["attributes"][2]["supercategory"] = ""
    with pytest.raises(DataError) as err:
        fashionpedia_to_coco(bad, "src.json")
    text = str(err.value)
    assert "src.json: annotations[0] (id 0).attribute_ids[1]" in text
    assert "src.json: attributes[2].supercategory" in text
    clash = source([[115]])
    clash["attributes"][1]["name"] = "above-the-hip  (length)"  # the same value name once spaces are joined
    with pytest.raises(DataError, match="twice"):
        fashionpedia_to_coco(clash)
    with pytest.raises(DataError, match="attributes"):
        fashionpedia_to_coco({k: v for k, v in source([]).items() if k != "attributes"})
