"""labelme JSON -> COCO panoptic (JSON + PNG folder) and -> semantic label PNGs (+ class list).

Pixels follow labelme's own `labelme2voc.py` (its `shapes_to_label`): shapes are painted in file order, a later
shape overwriting an earlier one; shapes with one label and one `group_id` are one object, a shape without a
`group_id` is an object of its own; an ignore label (`__ignore__`) paints ignore pixels. On top of that, the
schema's stuff categories (`isthing: false`) are merged per class: one segment per stuff class per image.
Unannotated pixels are void (panoptic id 0, semantic 255) unless the schema has a category named
`_background_` (labelme's class 0), which then covers them, as labelme2voc's class map does.

    panoptic:  OUT/panoptic.json + OUT/panoptic/<image path>.png; `__ignore__` pixels are void in the PNG and
               kept as the annotation's `ignore_segmentation` (see coco_panoptic.py); segments wholly painted
               over by later shapes are dropped (panopticapi rejects empty segments)
    semantic:  OUT/labels/<image path>.png (class index, 255 = ignore or void) + OUT/classes.yaml
Image `file_name`s are relative to the labelme folder (as the COCO converter writes them). Every problem in
every file is reported at once, and the output folder appears only when all files converted.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from workbench.data.coco_panoptic import check_coco_panoptic, id_to_rgb
from workbench.data.io import write_bytes_atomic, write_folder_atomic, write_json_atomic
from workbench.data.labelme import LabelmeShape, labelme_files, read_labelme_shapes
from workbench.data.masks import mask_to_rle, rle_bbox
from workbench.data.problems import DataError, Problem
from workbench.data.schema import BACKGROUND_LABEL, Schema
from workbench.data.semantic_png import IGNORE_VALUE, class_list_yaml, write_label_png

__all__ = ["PaintedImage", "convert_labelme_panoptic", "convert_labelme_semantic", "paint_shapes"]

PANOPTIC_JSON = "panoptic.json"
CLASSES_FILE = "classes.yaml"
_IGNORE = -1  # painted id of ignore pixels


@dataclass
class PaintedImage:
    """One labelme file painted: `ids` (H, W) int32 segment ids (0 = void, -1 = ignore) and, per id k,
    `segments[k - 1]` = (category, attributes)."""

    ids: np.ndarray
    segments: list[tuple]

    def class_map(self, schema: Schema) -> np.ndarray:
        """(H, W) uint8 class index, 255 = ignore / void (or void -> `_background_` if the schema has it)."""
        label_of = schema.label_of()
        lut = np.array([IGNORE_VALUE] + [label_of[c.id] for c, _ in self.segments], dtype=np.uint8)
        out = lut[np.maximum(self.ids, 0)]
        background = schema.category_by_name(BACKGROUND_LABEL)
        if background is not None:
            out[self.ids == 0] = label_of[background.id]
        out[self.ids == _IGNORE] = IGNORE_VALUE
        return out


def paint_shapes(shapes: list[LabelmeShape], height: int, width: int, schema: Schema) -> PaintedImage:
    """labelme's painting order and object rule, with stuff merged per class (see the module docstring)."""
    ids = np.zeros((height, width), dtype=np.int32)
    keys: dict[tuple, int] = {}
    segments: list[tuple] = []
    background = schema.category_by_name(BACKGROUND_LABEL)
    if background is not None:  # labelme2voc's class 0: every pixel no shape covers
        keys[("stuff", background.id)] = 1
        segments.append((background, None))
        ids[:] = 1
    for shape in shapes:
        if shape.category is None:
            ids[shape.mask] = _IGNORE
            continue
        c = shape.category
        if not c.isthing:
            key = ("stuff", c.id)
        else:
            key = ("thing", c.id, shape.group_id) if shape.group_id is not None else ("shape", shape.index)
        if key not in keys:
            keys[key] = len(segments) + 1
            segments.append((c, shape.attributes))
        elif segments[keys[key] - 1][1] is not None:  # parts of one object / one stuff region: one attribute set
            segments[keys[key] - 1][1].merge(shape.attributes)
        ids[shape.mask] = keys[key]
    return PaintedImage(ids, segments)


def _painted_files(labelme_dir, schema: Schema, out, what: str, progress: bool):
    """-> [(image record, PaintedImage)] for every labelme file; DataError listing every problem."""
    root = Path(labelme_dir)
    if not root.is_dir():
        raise DataError([Problem("missing_file", str(root), "labelme folder not found")])
    files = labelme_files(root, exclude=out)
    if not files:
        raise DataError([Problem("no_input", str(root), "no *.json files found")])
    problems: list[Problem] = []
    painted, json_of_image = [], {}
    for path in tqdm(files, desc=f"labelme -> {what}", unit="file", disable=not progress):
        start = len(problems)
        result = read_labelme_shapes(path, root, schema, problems)
        if result is None:
            continue
        image, shapes = result
        image_painted = paint_shapes(shapes, image["height"], image["width"], schema)
        if len(problems) > start:  # parts of one segment with conflicting attributes
            continue
        if image["file_name"] in json_of_image:
            problems.append(Problem("duplicate_image", f"{path}: imagePath", f"{image['file_name']} is already "
                                    f"annotated by {json_of_image[image['file_name']]}"))
            continue
        json_of_image[image["file_name"]] = path
        image["id"] = len(painted) + 1
        painted.append((image, image_painted))
    if problems:
        raise DataError(problems)
    return painted


def _png_name(file_name: str) -> str:
    return PurePosixPath(file_name).with_suffix(".png").as_posix()


def convert_labelme_panoptic(labelme_dir: str | os.PathLike, schema: Schema, out: str | os.PathLike | None = None,
                             progress: bool = True) -> dict:
    """Every labelme JSON under `labelme_dir` -> COCO panoptic with attributes; returns the JSON dict. With
    `out` (a folder), writes OUT/panoptic.json and OUT/panoptic/*.png, all or nothing."""
    painted = _painted_files(labelme_dir, schema, out, "panoptic", progress)
    images, annotations, pngs = [], [], {}
    for image, p in painted:
        segments_info = []
        for k, (category, attrs) in enumerate(p.segments, start=1):
            mask = p.ids == k
            if not mask.any():  # painted over by later shapes, as in labelme's maps
                continue
            rle = mask_to_rle(mask)
            segments_info.append({"id": k, "category_id": category.id, "iscrowd": 0, "area": int(mask.sum()),
                                  "bbox": rle_bbox(rle), "attributes": attrs.ids() if attrs is not None else {}})
        png = _png_name(image["file_name"])
        annotation = {"image_id": image["id"], "file_name": png, "segments_info": segments_info}
        ignore = p.ids == _IGNORE
        if ignore.any():
            annotation["ignore_segmentation"] = mask_to_rle(ignore)
        if out is not None:  # names resolve from the JSON's folder, the reader's default image root
            image = dict(image, file_name=Path(os.path.relpath(Path(labelme_dir) / image["file_name"], out)).as_posix())
        images.append(image)
        annotations.append(annotation)
        pngs[png] = id_to_rgb(np.maximum(p.ids, 0))
    header = schema.coco_header()
    header["categories"] = [dict(c, isthing=int(cat.isthing)) for c, cat in zip(header["categories"], schema.categories)]
    data = {"images": images, "annotations": annotations, **header}
    problems = check_coco_panoptic(data, PANOPTIC_JSON)
    if problems:  # a bug here, not in the user's data: the checks the reader will run
        raise DataError(problems)
    if out is not None:
        def fill(folder: Path) -> None:
            for name, rgb in pngs.items():
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, format="PNG")
                write_bytes_atomic(folder / "panoptic" / name, buf.getvalue())
            write_json_atomic(folder / PANOPTIC_JSON, data)

        write_folder_atomic(out, fill, markers=(PANOPTIC_JSON, "panoptic"))
    return data


def convert_labelme_semantic(labelme_dir: str | os.PathLike, schema: Schema, out: str | os.PathLike | None = None,
                             progress: bool = True) -> dict[str, np.ndarray]:
    """Every labelme JSON under `labelme_dir` -> {image file_name: (H, W) uint8 class map, 255 = ignore}. With
    `out` (a folder), writes OUT/labels/<file_name>.png and OUT/classes.yaml, all or nothing."""
    if len(schema.categories) >= IGNORE_VALUE:
        raise DataError([Problem("bad_schema", "schema: categories", f"{len(schema.categories)} classes do not fit "
                                 f"a label PNG (0..254, {IGNORE_VALUE} = ignore)")])
    painted = _painted_files(labelme_dir, schema, out, "semantic", progress)
    maps = {image["file_name"]: p.class_map(schema) for image, p in painted}
    if out is not None:
        def fill(folder: Path) -> None:
            for name, labels in maps.items():
                write_label_png(folder / "labels" / _png_name(name), labels)
            write_bytes_atomic(folder / CLASSES_FILE, class_list_yaml(schema).encode("utf-8"))

        write_folder_atomic(out, fill, markers=(CLASSES_FILE, "labels"))
    return maps
