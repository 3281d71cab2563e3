"""labelme -> panoptic / semantic: pixel parity with labelme's own labelme2voc.py class and object maps.

labelme is GPLv3, so none of its files are copied here. `labelme2voc_reference` below is our transcription of
the facts of its `examples/utils.py` (`shape_to_mask`, `shapes_to_label`) as `labelme2voc.py` calls them:
  - a canvas of zeros (class 0 = `_background_`, object 0 = none); shapes painted in file order, later wins;
  - polygon: ImageDraw.polygon(xy, outline=1, fill=1); rectangle: ImageDraw.rectangle(((min x, min y),
    (max x, max y)), outline=1, fill=1); circle: ImageDraw.ellipse around points[0] with radius
    |points[1] - points[0]|, outline=1, fill=1;
  - class value = the label's line in labels.txt minus 1 (`__ignore__` = -1, `_background_` = 0), saved as
    uint8 (so -1 becomes 255);
  - object id = 1 + the index of (label, group_id) among the pairs in order of first appearance, where a
    shape without group_id is a pair of its own (a fresh uuid); ignore shapes take an id too, then
    `ins[cls == -1] = 0`.
The generated files below mimic labelme's examples/instance_segmentation/data_annotated (VOC labels with
spaces, one person in two parts joined by group_id, a sofa in parts, an `__ignore__` polygon, shapes
overlapping earlier ones, one wholly). `test_labelme_example_folders` runs on the real example folders and
labelme's own utils.py when a labelme checkout is named by LABELME_REPO (skipped otherwise). Its committed
SegmentationClassNpy of 2011_000006 differs from what its utils.py computes today by one pixel (x=104, y=290:
18 vs 15, older PIL), so we compare with the code, not those files.
"""
import importlib.util
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from workbench.cli import main
from workbench.data.categories import Category
from workbench.data.coco_panoptic import load_coco_panoptic, read_panoptic_png
from workbench.data.labelme import convert_labelme, read_labelme_shapes
from workbench.data.labelme_maps import convert_labelme_panoptic, convert_labelme_semantic, paint_shapes
from workbench.data.problems import DataError
from workbench.data.schema import Schema, schema_from_dict
from workbench.data.semantic_png import load_semantic, read_label_png

H, W = 60, 80
VOC = ["__ignore__", "_background_", "bottle", "person", "potted plant", "sofa", "tv/monitor"]


def labelme2voc_reference(doc: dict, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(class map int32, object map int32) as labelme2voc.py computes them (facts in the module docstring)."""
    value = {name: i - 1 for i, name in enumerate(labels)}
    h, w = doc["imageHeight"], doc["imageWidth"]
    cls = np.zeros((h, w), np.int32)
    ins = np.zeros((h, w), np.int32)
    pairs: list[tuple] = []
    for n, s in enumerate(doc["shapes"]):
        pair = (s["label"], s["group_id"] if s.get("group_id") is not None else ("fresh", n))
        if pair not in pairs:
            pairs.append(pair)
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        xy = [tuple(p) for p in s["points"]]
        kind = s.get("shape_type") or "polygon"
        if kind == "polygon":
            draw.polygon(xy, outline=1, fill=1)
        elif kind == "rectangle":
            (x0, y0), (x1, y1) = xy
            draw.rectangle(((min(x0, x1), min(y0, y1)), (max(x0, x1), max(y0, y1))), outline=1, fill=1)
        elif kind == "circle":
            (cx, cy), (px, py) = xy
            d = math.sqrt((cx - px) ** 2 + (cy - py) ** 2)
            draw.ellipse(((cx - d, cy - d), (cx + d, cy + d)), outline=1, fill=1)
        mask = np.array(canvas, dtype=bool)
        cls[mask] = value[s["label"]]
        ins[mask] = pairs.index(pair) + 1
    ins[cls == -1] = 0
    return cls, ins


def shape(label, points, shape_type="polygon", group_id=None, **extra):
    return {"label": label, "points": points, "group_id": group_id, "description": "", "shape_type": shape_type,
            "flags": {}, **extra}


EXAMPLES = {
    "a": [shape("person", [[5, 5], [30, 4], [33, 40], [8, 44]]),
          shape("person", [[40, 10], [60, 12], [58, 30]], group_id=0),
          shape("person", [[45, 35.5], [70, 33], [66, 55]], group_id=0),  # the same person, second part
          shape("bottle", [[20, 20], [50, 22], [48, 50], [22, 48]]),  # painted over both persons
          shape("__ignore__", [[0, 50], [15, 50], [15, 59], [0, 59]])],
    "b": [shape("sofa", [[2, 30], [30, 30], [30, 58]], group_id=0), shape("sofa", [[32, 31], [60, 31], [50, 57]], group_id=0),
          shape("potted plant", [[60.4, 4.6], [75.2, 20.1]], "rectangle"),
          shape("tv/monitor", [[20, 15], [28, 15]], "circle"),
          shape("__ignore__", [[18, 10], [30, 10], [30, 12]]),
          shape("bottle", [[13, 13], [15, 15]], "rectangle"),  # wholly painted over by the next shape
          shape("person", [[10, 10], [25, 12], [12, 25]])],
    "empty": [],
}


def write_examples(folder: Path, examples=EXAMPLES) -> dict[str, dict]:
    docs = {}
    for name, shapes in examples.items():
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(folder / f"{name}.jpg")
        docs[name] = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{name}.jpg",
                      "imageData": None, "imageHeight": H, "imageWidth": W}
        (folder / f"{name}.json").write_text(json.dumps(docs[name]))
    return docs


def voc_schema(stuff=("_background_",)) -> Schema:
    """labelme's labels.txt as a schema: `_background_` kept as class 0, so class index = labelme's value."""
    return Schema(tuple(Category(i, n, isthing=n not in stuff) for i, n in enumerate(VOC[1:], start=1)), ())


def same_partition(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """The two id maps split the pixels the same way (ids themselves may differ)."""
    pairs = set(zip(ours.ravel().tolist(), theirs.ravel().tolist()))
    return len(pairs) == len(np.unique(ours)) == len(np.unique(theirs))


def test_semantic_and_panoptic_equal_labelme2voc_maps(tmp_path):
    docs = write_examples(tmp_path)
    schema = voc_schema()
    maps = convert_labelme_semantic(tmp_path, schema, progress=False)
    panoptic = convert_labelme_panoptic(tmp_path, schema, out=tmp_path / "out", progress=False)
    records, _ = load_coco_panoptic(tmp_path / "out" / "panoptic.json", schema=schema)
    for record in records:
        name = Path(record["file_name"]).stem
        cls, ins = labelme2voc_reference(docs[name], VOC)
        np.testing.assert_array_equal(maps[f"{name}.jpg"], cls.astype(np.uint8), err_msg=f"class map of {name}")
        ids = read_panoptic_png(record["pan_seg_file_name"], record["segments_info"], H, W)
        ignore = cls == -1
        ids_vs_labelme = np.where(cls == 0, 0, ids)  # our `_background_` segment <-> labelme's object 0
        assert (ids[ignore] == 0).all(), "ignore pixels are void in the panoptic PNG"
        assert same_partition(ids_vs_labelme, ins), f"object map of {name}"
        labels = {s["id"]: s["category_id"] for s in record["segments_info"]}
        assert all(labels[i] == cls[ids == i][0] for i in labels), "segment classes = labelme's class values"
    assert len(panoptic["annotations"]) == 3


def test_stuff_merges_per_class_and_things_by_group(tmp_path):
    docs = write_examples(tmp_path, {"a": EXAMPLES["a"]})
    schema = voc_schema(stuff=("_background_", "person"))  # person as stuff: all its shapes one segment
    data = convert_labelme_panoptic(tmp_path, schema, progress=False)
    segments = data["annotations"][0]["segments_info"]
    person = [s for s in segments if s["category_id"] == schema.category_by_name("person").id]
    assert len(person) == 1
    cls, ins = labelme2voc_reference(docs["a"], VOC)
    assert person[0]["area"] == int((cls == VOC.index("person") - 1).sum())
    assert [c["isthing"] for c in data["categories"]] == [0, 1, 0, 1, 1, 1]
    coco = convert_labelme(tmp_path, schema, progress=False)  # the COCO converter merges stuff the same way
    person_id = schema.category_by_name("person").id
    assert sum(a["category_id"] == person_id and not a["iscrowd"] for a in coco["annotations"]) == 1


def test_without_background_class_unannotated_pixels_are_void_and_attributes_ride_along(tmp_path):
    schema = schema_from_dict({"categories": ["person", {"name": "sky", "isthing": False}],
                               "attributes": {"color": ["red", "blue"]}})
    write_examples(tmp_path, {"a": [shape("sky color=blue", [[0, 0], [79, 0], [79, 10], [0, 10]]),
                                    shape("sky", [[0, 50], [79, 50], [79, 59]]),
                                    shape("person color=red", [[10, 10], [40, 12], [20, 40]])]})
    out = tmp_path / "sem"
    maps = convert_labelme_semantic(tmp_path, schema, out=out, progress=False)
    labels = maps["a.jpg"]
    assert set(np.unique(labels).tolist()) == {0, 1, 255}
    assert labels[30, 70] == 255  # nothing drawn there
    records, read_schema = load_semantic(out / "labels", tmp_path, out / "classes.yaml")
    assert read_schema.category_names == ["person", "sky"]
    np.testing.assert_array_equal(read_label_png(records[0]["sem_seg_file_name"], 2), labels)
    data = convert_labelme_panoptic(tmp_path, schema, progress=False)
    segments = {s["category_id"]: s for s in data["annotations"][0]["segments_info"]}
    assert segments[2]["attributes"] == {"color": 1} and segments[1]["attributes"] == {"color": 0}


def test_conflicting_attributes_of_one_stuff_region_and_nothing_written(tmp_path):
    schema = schema_from_dict({"categories": ["person", {"name": "sky", "isthing": False}],
                               "attributes": {"color": ["red", "blue"]}})
    write_examples(tmp_path, {"a": [shape("sky color=blue", [[0, 0], [79, 0], [79, 10]]),
                                    shape("sky color=red", [[0, 50], [79, 50], [79, 59]])]})
    with pytest.raises(DataError, match="parts of one group disagree") as e:
        convert_labelme_panoptic(tmp_path, schema, out=tmp_path / "out", progress=False)
    assert "a.json" in str(e.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_cli_convert_panoptic_and_semantic_replace_only_their_own_output(tmp_path, capsys):
    write_examples(tmp_path, {"a": EXAMPLES["a"]})
    (tmp_path / "schema.yaml").write_text(voc_schema().to_yaml())
    base = ["data", "convert", str(tmp_path), "--schema", str(tmp_path / "schema.yaml")]
    assert main(base + ["--out", str(tmp_path / "pan"), "--task", "panoptic"]) == 0
    assert (tmp_path / "pan" / "panoptic.json").is_file() and (tmp_path / "pan" / "panoptic" / "a.png").is_file()
    assert main(base + ["--out", str(tmp_path / "pan"), "--task", "panoptic"]) == 0  # re-run replaces it
    assert main(base + ["--out", str(tmp_path / "sem"), "--task", "semantic"]) == 0
    assert (tmp_path / "sem" / "classes.yaml").is_file() and (tmp_path / "sem" / "labels" / "a.png").is_file()
    assert main(base + ["--out", str(tmp_path / "pan.json"), "--task", "panoptic"]) == 2  # a folder, not a file
    assert "writes a folder" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "mine" / "classes.yaml").write_text("[a]")  # a class list alone does not make it ours
    assert main(base + ["--out", str(tmp_path / "mine"), "--task", "semantic"]) == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert "not an earlier output" in capsys.readouterr().err
    write_examples(tmp_path, {"bad": [shape("horse", [[1, 1], [9, 1], [5, 9]])]})
    before = (tmp_path / "sem" / "labels" / "a.png").read_bytes()
    assert main(base + ["--out", str(tmp_path / "sem"), "--task", "semantic"]) == 1
    assert "unknown category 'horse'" in capsys.readouterr().err
    assert (tmp_path / "sem" / "labels" / "a.png").read_bytes() == before and not (tmp_path / "sem" / "labels" / "bad.png").exists()


LABELME_REPO = os.environ.get("LABELME_REPO")


@pytest.mark.skipif(not LABELME_REPO, reason="set LABELME_REPO to a wkentaro/labelme checkout to run")
@pytest.mark.parametrize("example", ["instance_segmentation", "semantic_segmentation"])
def test_labelme_example_folders(example):
    """labelme's own example folders and its own examples/utils.py (what labelme2voc.py runs): our maps and the
    transcribed reference equal it pixel for pixel."""
    repo = Path(LABELME_REPO)
    spec = importlib.util.spec_from_file_location("labelme_example_utils", repo / "examples" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = utils  # its dataclasses look their module up
    spec.loader.exec_module(utils)
    folder = repo / "examples" / example / "data_annotated"
    labels = [x.strip() for x in (repo / "examples" / example / "labels.txt").read_text().splitlines() if x.strip()]
    schema = Schema(tuple(Category(i, n, isthing=n != "_background_") for i, n in enumerate(labels[1:], start=1)), ())
    maps = convert_labelme_semantic(folder, schema, progress=False)
    panoptic = convert_labelme_panoptic(folder, schema, progress=False)
    assert len(maps) == 3
    for image, annotation in zip(panoptic["images"], panoptic["annotations"]):
        path = folder / Path(image["file_name"]).with_suffix(".json")
        lf = utils.load_label_file(str(path))
        cls, ins = utils.shapes_to_label((image["height"], image["width"]), lf.shapes,
                                         {n: i - 1 for i, n in enumerate(labels)})
        ins[cls == -1] = 0
        np.testing.assert_array_equal(maps[image["file_name"]], cls.astype(np.uint8), err_msg=str(path))
        ref_cls, ref_ins = labelme2voc_reference(json.loads(path.read_text()), labels)
        np.testing.assert_array_equal(ref_cls, cls, err_msg=f"the transcribed reference on {path}")
        assert same_partition(ref_ins, ins)
        _, shapes = read_labelme_shapes(path, folder, schema, [])
        ids = paint_shapes(shapes, image["height"], image["width"], schema).ids
        assert same_partition(np.where(cls <= 0, 0, ids), ins), f"object map of {path}"
        assert {s["id"] for s in annotation["segments_info"]} == set(np.unique(ids[cls >= 0]).tolist())


def test_a_failed_final_rename_puts_the_earlier_output_back(tmp_path, monkeypatch):
    import workbench.data.io as io_module

    out = tmp_path / "out"
    io_module.write_folder_atomic(out, lambda d: (d / "labels").mkdir() or (d / "classes.yaml").write_text("1"),
                                  markers=("classes.yaml", "labels"))
    real_replace = io_module.os.replace

    def replace(src, dst):
        if str(src).endswith(".tmp") and Path(dst) == out:  # the new folder's rename fails
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(io_module.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        io_module.write_folder_atomic(out, lambda d: (d / "labels").mkdir() or (d / "classes.yaml").write_text("2"),
                                      markers=("classes.yaml", "labels"))
    assert (out / "classes.yaml").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left
