"""labelme -> COCO-with-attributes: shapes, groups, attribute sources, and one specific error per bad input."""
import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from workbench.cli import main
from workbench.data.labelme import convert_labelme, shape_to_mask
from workbench.data.problems import DataError
from workbench.data.schema import schema_from_dict

H, W = 48, 64
SCHEMA = {"categories": ["cat", "dog"], "attributes": {"color": ["red", "green", "blue"], "size": ["small", "large"]}}


def schema(**changes):
    return schema_from_dict({**SCHEMA, **changes})


def shape(label, points, shape_type="polygon", **extra):
    return {"label": label, "points": points, "group_id": None, "description": "", "shape_type": shape_type,
            "flags": {}, **extra}


def b64_png(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_labelme(folder: Path, name: str, shapes, image_path=None, **overrides) -> Path:
    """A labelme JSON; without `image_path` also a black H x W image next to it."""
    if image_path is None:
        image_path = f"{name}.png"
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(folder / image_path)
    doc = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
           "imageHeight": H, "imageWidth": W, **overrides}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_rasteriser_draws_known_pixels():
    rect = shape_to_mask(shape("cat", [[10, 8], [2, 3]], "rectangle"), H, W)  # corners in any order
    expected = np.zeros((H, W), bool)
    expected[3:9, 2:11] = True  # labelme includes the outline: rows 3..8, columns 2..10
    assert np.array_equal(rect, expected)

    circle = shape_to_mask(shape("cat", [[30, 20], [35, 20]], "circle"), H, W)
    assert circle[20, 30] and circle[20, 35] and not circle[20, 37] and not circle[14, 30]
    assert abs(circle.sum() - np.pi * 25) < 0.25 * np.pi * 25

    region = np.zeros((4, 6), bool)
    region[1:3, 2:5] = True
    mask = shape_to_mask(shape("cat", [[40, 10], [45, 13]], "mask", mask=b64_png(region)), H, W)
    assert np.array_equal(np.argwhere(mask), np.argwhere(region) + [10, 40])


def test_mask_shapes_are_placed_as_labelme_places_them():
    """labelme (examples/utils.py shapes_to_label) rounds the corners; integer corners crop a larger stored image
    to the inclusive box, fractional ones (written by released labelme versions) keep the image's own size."""
    region = np.zeros((4, 6), bool)
    region[1:3, 2:5] = True
    at = np.argwhere(region)
    fractional = shape_to_mask(shape("cat", [[39.6, 10.2], [45.4, 13.3]], "mask", mask=b64_png(region)), H, W)
    assert np.array_equal(np.argwhere(fractional), at + [10, 40])  # top-left rounds to (40, 10), not 39
    drifted = shape_to_mask(shape("cat", [[39.6, 10.2], [46.5, 13.3]], "mask", mask=b64_png(region)), H, W)
    assert np.array_equal(drifted, fractional)  # a box a pixel wider than the image: the image's size wins
    bigger = np.zeros((5, 8), bool)
    bigger[:4, :6] = region
    bigger[4, 7] = True  # outside the box: cropped away
    cropped = shape_to_mask(shape("cat", [[40, 10], [45, 13]], "mask", mask=b64_png(bigger)), H, W)
    assert np.array_equal(cropped, fractional)
    with pytest.raises(ValueError, match="'mask' image is 6x4"):
        shape_to_mask(shape("cat", [[40, 10], [47, 13]], "mask", mask=b64_png(region)), H, W)


def test_oriented_rectangle_is_its_filled_polygon():
    corners = [[10, 5], [30, 15], [25, 25], [5, 15]]
    oriented = shape_to_mask(shape("cat", corners, "oriented_rectangle"), H, W)
    assert oriented.sum() > 200 and np.array_equal(oriented, shape_to_mask(shape("cat", corners), H, W))


def test_image_path_naming_the_json_itself_says_so(tmp_path):
    """labelme's own tutorial file has imagePath "apc2016_obj3.json" (its imageData holds the picture)."""
    write_labelme(tmp_path, "a", [shape("cat", TRIANGLE)], image_path="a.json", imageData="aGVsbG8=")
    with pytest.raises(DataError, match=r"'a\.json' is this labelme JSON itself, not an image; the JSON embeds "
                                        r"imageData"):
        convert_labelme(tmp_path, schema(), out=tmp_path / "coco.json")
    assert not (tmp_path / "coco.json").exists()


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
def test_round_trip_pycocotools_loads_and_ann_to_mask_equals_our_rasterisation(tmp_path):
    region = np.ones((5, 7), bool)
    region[0, 0] = False
    shapes = [
        shape("cat color=red size=small", [[5, 5], [20, 5], [12, 18]]),
        shape("dog", [[30, 2], [40, 12]], "rectangle", flags={"green": True, "size=large": True}),
        shape("cat", [[50, 30], [55, 30]], "circle", description="color=blue, size=large"),
        shape("dog", [[2, 30], [8, 34]], "mask", mask=b64_png(region)),
        # two parts of one dog (group 7): one instance, attributes from either part
        shape("dog color=red", [[20, 30], [28, 30], [24, 40]], group_id=7),
        shape("dog", [[30, 38], [40, 46]], "rectangle", group_id=7, flags={"size=small": True}),
        # same group id but another category: a separate instance
        shape("cat", [[44, 20], [48, 20], [46, 24]], group_id=7),
    ]
    write_labelme(tmp_path, "a", shapes)
    out = tmp_path / "coco.json"
    convert_labelme(tmp_path, schema(), out=out, progress=False)

    coco = COCO(str(out))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == 6
    expected = [shape_to_mask(s, H, W) for s in shapes]
    expected_masks = expected[:4] + [expected[4] | expected[5], expected[6]]
    for ann, mask in zip(anns, expected_masks):
        assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
        assert ann["area"] == mask.sum()
    assert [a["category_id"] for a in anns] == [1, 2, 1, 2, 2, 1]
    assert [a["attributes"] for a in anns] == [
        {"color": 0, "size": 0}, {"color": 1, "size": 1}, {"color": 2, "size": 1}, {}, {"color": 0, "size": 0}, {}]
    assert coco.loadImgs(1)[0]["file_name"] == "a.png"
    data = json.loads(out.read_text())
    assert data["attributes"][0] == {"name": "color", "values": [{"id": 0, "name": "red"}, {"id": 1, "name": "green"},
                                                                 {"id": 2, "name": "blue"}]}


def test_image_path_may_climb_inside_the_dataset_folder_and_uses_windows_separators(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "images" / "x.png")
    write_labelme(tmp_path / "labels", "x", [shape("cat", [[1, 1], [9, 1], [5, 9]])], image_path="..\\images\\x.png")
    coco = convert_labelme(tmp_path, schema(), progress=False)
    assert coco["images"][0]["file_name"] == "images/x.png"


def test_output_inside_the_labelme_folder_is_not_read_back_as_input(tmp_path):
    write_labelme(tmp_path, "a", [shape("cat", [[1, 1], [9, 1], [5, 9]])])
    out = tmp_path / "coco.json"
    convert_labelme(tmp_path, schema(), out=out, progress=False)
    second = convert_labelme(tmp_path, schema(), out=out, progress=False)
    assert len(second["images"]) == 1


def test_sources_not_allowed_by_the_schema_are_errors(tmp_path):
    write_labelme(tmp_path, "a", [shape("cat", [[1, 1], [9, 1], [5, 9]], flags={"red": True})])
    with pytest.raises(DataError) as e:
        convert_labelme(tmp_path, schema(attribute_sources=["label"]), progress=False)
    assert e.value.codes == ["source_not_allowed"]
    convert_labelme(tmp_path, schema(attribute_sources=["flags"]), progress=False)


def test_free_text_description_is_ignored_but_key_value_pairs_are_read(tmp_path):
    write_labelme(tmp_path, "a", [shape("cat", [[1, 1], [9, 1], [5, 9]], description="half hidden, size=large")])
    coco = convert_labelme(tmp_path, schema(), progress=False)
    assert coco["annotations"][0]["attributes"] == {"size": 1}


def test_a_bare_flag_in_two_vocabularies_must_name_its_attribute(tmp_path):
    s = schema(attributes={"color": ["red", "green"], "trim": ["red", "none"]})
    write_labelme(tmp_path, "a", [shape("cat", [[1, 1], [9, 1], [5, 9]], flags={"red": True})])
    with pytest.raises(DataError) as e:
        convert_labelme(tmp_path, s, progress=False)
    assert e.value.codes == ["ambiguous_flag"]


TRIANGLE = [[1, 1], [9, 1], [5, 9]]
BAD_INPUTS = {
    "unknown_category": [shape("horse", TRIANGLE)],
    "unknown_attribute": [shape("cat weight=heavy", TRIANGLE)],
    "bad_shape": [shape("", TRIANGLE)],
    "unknown_attribute_value": [shape("cat color=purple", TRIANGLE)],
    "conflicting_attribute": [shape("cat color=red", TRIANGLE, flags={"blue": True})],
    "degenerate_shape": [shape("cat", [[1, 1], [9, 1]])],
    "unsupported_shape": [shape("cat", [[1, 1], [9, 1]], "line")],
    "out_of_image": [shape("cat", [[1, 1], [90, 1], [5, 9]])],
    "empty_mask": [shape("cat", [[0, 0], [1, 0]], "mask", mask=b64_png(np.zeros((1, 2), bool)))],
}


@pytest.mark.parametrize("code", sorted(BAD_INPUTS))
def test_each_bad_shape_gets_its_error_and_nothing_is_written(tmp_path, code):
    write_labelme(tmp_path, "good", [shape("cat", TRIANGLE)])
    write_labelme(tmp_path, "bad", BAD_INPUTS[code])
    out = tmp_path / "out" / "coco.json"
    with pytest.raises(DataError) as e:
        convert_labelme(tmp_path, schema(), out=out, progress=False)
    assert e.value.codes == [code]
    assert "bad.json: shapes[0]" in str(e.value)
    assert not out.exists()


def test_label_with_only_attributes_names_no_category(tmp_path):
    write_labelme(tmp_path, "a", [shape("color=red", TRIANGLE)])
    with pytest.raises(DataError) as e:
        convert_labelme(tmp_path, schema(), progress=False)
    assert e.value.codes == ["unknown_category"] and "unknown category ''" in str(e.value)


@pytest.mark.parametrize("bad", [
    {"points": "1,2 3,4"}, {"points": [[1, 2, 3]]}, {"points": [[1, "a"], [2, 2], [3, 1]]},
    {"points": [[1, 1], [float("nan"), 2], [3, 1]]}, {"label": 5}, {"flags": ["red"]}, {"group_id": [1]},
    {"shape_type": "mask", "points": [[1, 1], [2, 2]], "mask": "not base64!"},
])
def test_malformed_shapes_are_reported(tmp_path, bad):
    write_labelme(tmp_path, "a", [{**shape("cat", TRIANGLE), **bad}])
    with pytest.raises(DataError) as e:
        convert_labelme(tmp_path, schema(), progress=False)
    assert e.value.codes == ["bad_shape"]


def test_collinear_polygon_and_mask_of_wrong_size(tmp_path):
    write_labelme(tmp_path, "a", [shape("cat", [[1, 1], [5, 5], [9, 9]]),
                                  shape("dog", [[0, 0], [3, 3]], "mask", mask=b64_png(np.ones((2, 2), bool)))])
    with pytest.raises(DataError) as e:
        convert_labelme(tmp_path, schema(), progress=False)
    assert e.value.codes == ["degenerate_shape", "bad_shape"]
    assert "zero area" in str(e.value) and "box" in str(e.value)


@pytest.mark.parametrize("image_path, code", [("../escape.png", "unsafe_image_path"), ("nowhere.png", "missing_image")])
def test_image_paths_outside_the_folder_or_missing_are_rejected(tmp_path, image_path, code):
    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "escape.png")  # exists, but outside
    write_labelme(folder, "a", [shape("cat", TRIANGLE)], image_path=image_path)
    with pytest.raises(DataError) as e:
        convert_labelme(folder, schema(), out=folder / "coco.json", progress=False)
    assert e.value.codes == [code]
    assert not (folder / "coco.json").exists()


def test_two_files_for_one_image_and_embedded_image_data(tmp_path):
    write_labelme(tmp_path, "a", [shape("cat", TRIANGLE)])
    write_labelme(tmp_path, "b", [shape("dog", TRIANGLE)], image_path="a.png")
    write_labelme(tmp_path, "c", [shape("dog", TRIANGLE)], image_path="gone.png", imageData="iVBORw0KGgo=")
    with pytest.raises(DataError) as e:
        convert_labelme(tmp_path, schema(), progress=False)
    assert e.value.codes == ["duplicate_image", "missing_image"]
    assert "already annotated by" in str(e.value) and "embeds imageData" in str(e.value)


def test_byte_order_mark_is_accepted(tmp_path):
    path = write_labelme(tmp_path, "a", [shape("cat", TRIANGLE)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(convert_labelme(tmp_path, schema(), progress=False)["annotations"]) == 1


def test_json_syntax_error_names_file_line_and_column_and_keeps_previous_output(tmp_path):
    write_labelme(tmp_path, "good", [shape("cat", TRIANGLE)])
    out = tmp_path / "coco.json"
    convert_labelme(tmp_path, schema(), out=out, progress=False)
    before = out.read_bytes()
    (tmp_path / "typo.json").write_text('{\n  "shapes": []\n  "imagePath": "good.png"\n}\n')  # missing comma
    with pytest.raises(DataError) as e:
        convert_labelme(tmp_path, schema(), out=out, progress=False)
    assert e.value.codes == ["json_syntax"]
    assert f"{tmp_path / 'typo.json'}:3:3" in str(e.value)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_every_problem_in_every_file_is_reported_at_once(tmp_path):
    write_labelme(tmp_path, "a", [shape("horse", TRIANGLE), shape("cat color=pink", TRIANGLE)])
    write_labelme(tmp_path, "b", [shape("cat", [[1, 1]])])
    with pytest.raises(DataError) as e:
        convert_labelme(tmp_path, schema(), progress=False)
    assert e.value.codes == ["unknown_category", "unknown_attribute_value", "degenerate_shape"]


def test_cli_convert_exit_codes(tmp_path, capsys):
    (tmp_path / "schema.yaml").write_text(schema().to_yaml())
    write_labelme(tmp_path, "a", [shape("cat color=red", TRIANGLE)])
    out = tmp_path / "coco.json"
    args = ["data", "convert", str(tmp_path), "--schema", str(tmp_path / "schema.yaml"), "--out", str(out)]
    assert main(args) == 0 and out.exists()
    out.unlink()
    write_labelme(tmp_path, "b", [shape("horse", TRIANGLE)])
    assert main(args) == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert "unknown category 'horse'" in err and err.rstrip().endswith("nothing written.")
    with pytest.raises(DataError, match="horse"):  # --debug shows the traceback, here as everywhere
        main(args + ["--debug"])
    assert not out.exists()
    assert main(["data", "convert", str(tmp_path), "--out", str(out)]) == 2  # neither --schema nor --labels
    assert "--schema" in capsys.readouterr().err
