"""labelme JSON -> COCO-with-attributes.

One labelme file per image. Each shape becomes (part of) an instance: shapes sharing a `group_id` and a
category are parts of one object and are merged into one mask; all shapes of a stuff category (`isthing: false`)
in a file are its one region. Masks are rasterised here exactly as labelme
draws them and stored as RLE, so `pycocotools.COCO.annToMask` returns the pixels we drew.

Attributes can be written three ways (read by labelme_attributes.py); the schema's `attribute_sources` says which
are allowed:
    flags        {"red": true} or {"color=red": true}      (a bare value must be unique across attributes)
    label        "circle color=red size=small"            (the non-`key=value` words are the category)
    description  "color=red, size=small"                   (other words in the description are ignored)
A multi-label group (schema `kind: multi`) takes every value given for it on a shape (e.g. two flags
"stripes" and "dots"); several values of a single-label group on one shape are an error. A missing attribute is
unlabeled (-1 downstream). Shapes labelled with one of the schema's `ignore_labels` (labelme's `__ignore__`)
become ignore regions: COCO `iscrowd: 1` annotations, one per category (see schema.py). A file with no shapes
is an image without instances (a negative), as in COCO. Every problem in every file is collected first; if there is
any, `DataError` lists them all and nothing is written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from workbench.data.io import read_json, remove_stale_temps
from workbench.data.labelme_attributes import ShapeAttributes, read_shape_attributes
from workbench.data.labelme_shapes import Degenerate, Unsupported, shape_to_mask
from workbench.data.masks import mask_to_rle, rle_area, rle_bbox
from workbench.data.problems import DataError, Problem
from workbench.data.schema import Category, Schema, save_coco

__all__ = ["LabelmeShape", "convert_labelme", "labelme_files", "read_labelme_file", "read_labelme_shapes",
           "shape_to_mask"]

_EMBEDDED_HINT = "; the JSON embeds imageData: save that image as a file and point imagePath at it"
_OUTSIDE_TOLERANCE = 1.0  # px: labelme clamps points to the image, so anything further out means a wrong size


def labelme_files(root: str | os.PathLike, exclude: str | os.PathLike | None = None) -> list[Path]:
    """Every `*.json` under `root` (recursively, sorted), except `exclude` (the output file, or the output
    folder with everything in it and the temporary folders it is written through) and earlier panoptic
    outputs (panoptic.json beside its panoptic/ PNG folder)."""
    root = Path(root)
    excluded = Path(exclude).resolve() if exclude is not None else None

    def kept(p: Path) -> bool:
        if p.name == "panoptic.json" and (p.parent / "panoptic").is_dir():  # a panoptic conversion's output
            return False
        if excluded is None:
            return True
        r = p.resolve()
        if r == excluded or excluded in r.parents:
            return False
        return not any(q.parent == excluded.parent and q.name.startswith(f".{excluded.name}.") for q in r.parents)

    return [p for p in sorted(root.rglob("*.json")) if kept(p)]


# --- files ------------------------------------------------------------------------------------------------------
def _safe_image_path(image_path: Any, json_path: Path, root: Path, where: str, problems: list[Problem],
                     embedded: bool = False) -> str | None:
    """`imagePath` resolved against the JSON's folder -> path relative to `root` (posix), or None on error."""
    if not isinstance(image_path, str) or not image_path:
        problems.append(Problem("bad_format", f"{where}: imagePath", "missing or not a string"))
        return None
    normalised = image_path.replace("\\", "/")  # labelme on Windows writes backslashes
    joined = os.path.normpath(os.path.join(json_path.parent.absolute(), normalised))
    root_abs = os.path.normpath(root.absolute())
    if os.path.commonpath([joined, root_abs]) != root_abs:
        problems.append(Problem("unsafe_image_path", f"{where}: imagePath",
                                f"{image_path!r} points outside the dataset folder {root}"))
        return None
    hint = _EMBEDDED_HINT if embedded else ""
    if not os.path.isfile(joined):
        problems.append(Problem("missing_image", f"{where}: imagePath", f"image file {joined} not found{hint}"))
        return None
    if os.path.normpath(json_path.absolute()) == joined:
        problems.append(Problem("missing_image", f"{where}: imagePath", f"{image_path!r} is this labelme JSON "
                                f"itself, not an image{hint}"))
        return None
    return PurePosixPath(Path(os.path.relpath(joined, root_abs))).as_posix()


@dataclass
class LabelmeShape:
    """One region shape of a labelme file, rasterised: `category` None = an ignore label (`__ignore__`)."""

    index: int
    mask: np.ndarray  # (H, W) bool
    category: Category | None
    attributes: ShapeAttributes | None
    group_id: int | None


def read_labelme_shapes(path: Path, root: Path, schema: Schema,
                        problems: list[Problem]) -> tuple[dict, list[LabelmeShape]] | None:
    """One labelme JSON -> (image record {file_name, height, width}, its region shapes in file order, i.e.
    labelme's painting order); None if the file has any problem (all appended to `problems`)."""
    try:
        doc = read_json(path)
    except DataError as e:
        problems.extend(e.problems)
        return None
    where = str(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list):
        problems.append(Problem("bad_format", where, "not a labelme file: expected an object with a 'shapes' list"))
        return None
    start = len(problems)
    height, width = doc.get("imageHeight"), doc.get("imageWidth")
    for key, value in (("imageHeight", height), ("imageWidth", width)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            problems.append(Problem("bad_format", f"{where}: {key}", f"must be a positive integer, got {value!r}"))
    file_name = _safe_image_path(doc.get("imagePath"), path, root, where, problems, embedded=bool(doc.get("imageData")))
    if len(problems) > start:
        return None
    _check_image_size(root / file_name, width, height, where, problems, embedded=bool(doc.get("imageData")))
    if len(problems) > start:
        return None
    shapes = []
    for i, shape in enumerate(doc["shapes"]):
        w = f"{where}: shapes[{i}]"
        if not isinstance(shape, dict):
            problems.append(Problem("bad_shape", w, "a shape must be an object"))
            continue
        w = f"{where}: shapes[{i}] ({shape.get('label')!r}, {shape.get('shape_type') or 'polygon'})"
        if isinstance(shape.get("label"), str) and shape["label"].strip() in schema.ignore_labels:
            try:
                shapes.append(LabelmeShape(i, shape_to_mask(shape, height, width), None, None, None))
            except ValueError as e:  # degenerate or unsupported: reported like any shape
                problems.append(Problem("bad_shape", w, str(e)))
            continue
        category_name, attrs = read_shape_attributes(shape, schema, w, problems)
        category = schema.category_by_name(category_name)
        if category is None and isinstance(shape.get("label"), str) and shape["label"].strip():
            problems.append(Problem("unknown_category", w, f"unknown category {category_name!r}; known: "
                                    f"{schema.category_names}"))
        try:
            mask = shape_to_mask(shape, height, width)
        except Degenerate as e:
            problems.append(Problem("degenerate_shape", w, str(e)))
            continue
        except Unsupported as e:
            problems.append(Problem("unsupported_shape", w, str(e)))
            continue
        except ValueError as e:
            problems.append(Problem("bad_shape", w, str(e)))
            continue
        if shape.get("shape_type") != "mask":
            pts = np.asarray(shape["points"], dtype=float)
            t = _OUTSIDE_TOLERANCE
            if (pts[:, 0] < -t).any() or (pts[:, 0] > width + t).any() or (pts[:, 1] < -t).any() or (pts[:, 1] > height + t).any():
                problems.append(Problem("out_of_image", w, f"points outside the {width}x{height} image"))
                continue
        if not mask.any():
            problems.append(Problem("empty_mask", w, "the shape covers no pixel of the image"))
            continue
        if category is None:
            continue
        group = shape.get("group_id")
        if group is not None and (not isinstance(group, int) or isinstance(group, bool)):
            problems.append(Problem("bad_shape", w, f"'group_id' must be an integer or null, got {group!r}"))
            continue
        shapes.append(LabelmeShape(i, mask, category, attrs, group))
    if len(problems) > start:
        return None
    return {"file_name": file_name, "height": height, "width": width}, shapes


def read_labelme_file(path: Path, root: Path, schema: Schema, problems: list[Problem]) -> tuple[dict, list[dict]] | None:
    """One labelme JSON -> (COCO image record without id, [COCO annotations without ids]); None if unusable.

    Problems are appended to `problems` (all of them, not just the first).
    """
    start = len(problems)
    result = read_labelme_shapes(path, root, schema, problems)
    if result is None:
        return None
    image, shapes = result
    instances: dict[tuple, tuple[np.ndarray, ShapeAttributes, int]] = {}  # key -> (mask, attributes, category id)
    ignore = np.zeros((image["height"], image["width"]), dtype=bool)
    for shape in shapes:
        if shape.category is None:
            ignore |= shape.mask
            continue
        key = (shape.category.id, shape.group_id) if shape.group_id is not None else ("shape", shape.index)
        if not shape.category.isthing:  # a stuff category has one region per image
            key = ("stuff", shape.category.id)
        if key in instances:
            prev_mask, prev_attrs, _ = instances[key]
            prev_attrs.merge(shape.attributes)
            instances[key] = (prev_mask | shape.mask, prev_attrs, shape.category.id)
        else:
            instances[key] = (shape.mask, shape.attributes, shape.category.id)
    if len(problems) > start:
        return None
    annotations = []
    for mask, attrs, category_id in instances.values():
        rle = mask_to_rle(mask)
        annotations.append({
            "category_id": category_id,
            "segmentation": rle,
            "area": float(rle_area(rle)),
            "bbox": rle_bbox(rle),
            "iscrowd": 0,
            "attributes": attrs.ids(),
        })
    if ignore.any():
        rle = mask_to_rle(ignore)
        for category in schema.categories:  # COCOeval ignores crowd regions per category
            annotations.append({"category_id": category.id, "segmentation": rle, "area": float(rle_area(rle)),
                                "bbox": rle_bbox(rle), "iscrowd": 1, "attributes": {}})
    return image, annotations


def _check_image_size(path: Path, width: int, height: int, where: str, problems: list[Problem],
                      embedded: bool = False) -> None:
    """The header's imageWidth/imageHeight must be the image's size (as labelme shows it: EXIF-rotated);
    otherwise every mask would be drawn on the wrong canvas and training would fail much later."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that swap width and height
                w, h = h, w
    except Exception as e:  # PIL raises several unrelated types for unreadable files
        hint = _EMBEDDED_HINT if embedded else ""
        problems.append(Problem("unreadable_image", f"{where}: imagePath",
                                f"cannot read {path}: {type(e).__name__}: {e}{hint}"))
        return
    if (w, h) != (width, height):
        problems.append(Problem("image_size_mismatch", f"{where}: imageWidth/imageHeight",
                                f"the header says {width}x{height} (w x h) but {path} is {w}x{h}; fix the header "
                                "(or reopen and save the file in labelme)"))


def _relative_to(image: Path, folder: Path) -> str:
    """`image`'s path from `folder` (posix, `..` where needed); absolute where none exists (another drive)."""
    try:
        return PurePosixPath(Path(os.path.relpath(os.path.abspath(image), os.path.abspath(folder)))).as_posix()
    except ValueError:
        return Path(os.path.abspath(image)).as_posix()


def _refuse_input_as_output(root: Path, out: Path) -> None:
    """The converter reads every JSON under `root` (and their images) but the output: an existing `out` there
    that is not a COCO file (an earlier conversion) is a labelme file or an image, which writing would replace."""
    from workbench.errors import UsageError

    if not out.exists():
        return
    if out.is_dir():
        raise UsageError(f"data convert: --out {out} is a folder; give the COCO JSON file to write, e.g. {out / 'coco.json'}")
    if os.path.commonpath([os.path.abspath(out), os.path.abspath(root)]) != os.path.abspath(root):
        return
    doc = None
    if out.is_file() and out.suffix.lower() == ".json":
        try:
            doc = read_json(out)
        except DataError:
            pass
    if isinstance(doc, dict) and isinstance(doc.get("images"), list) and "shapes" not in doc:
        return  # an earlier output of this command: replacing it is the point
    raise UsageError(f"data convert: --out {out} is one of the inputs under {root} (not a COCO file); writing it "
                     "would replace it: choose another output path")


def convert_labelme(
    labelme_dir: str | os.PathLike,
    schema: Schema,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
    """Convert every labelme JSON under `labelme_dir`; returns the COCO-with-attributes dict.

    `file_name`s are relative to `labelme_dir`, or with `out` to `out`'s folder (the loaders' default image
    root: the file works wherever it is written). With `out`, the file is written atomically, and only if no file
    had a problem; otherwise `DataError` lists every problem in every file. An `out` that is one of the inputs (an
    existing JSON under `labelme_dir` that is not a COCO file) is a `UsageError` naming both.
    """
    root = Path(labelme_dir)
    if not root.is_dir():
        raise DataError([Problem("missing_file", str(root), "labelme folder not found")])
    if out is not None:
        _refuse_input_as_output(root, Path(out))
    files = labelme_files(root, exclude=out)
    if not files:
        raise DataError([Problem("no_input", str(root), "no *.json files found")])
    problems: list[Problem] = []
    images, annotations = [], []
    json_of_image: dict[str, Path] = {}
    for path in tqdm(files, desc="labelme -> coco", unit="file", disable=not progress):
        result = read_labelme_file(path, root, schema, problems)
        if result is None:
            continue
        image, anns = result
        if image["file_name"] in json_of_image:  # two annotation files would split one image's instances
            problems.append(Problem("duplicate_image", f"{path}: imagePath", f"{image['file_name']} is already "
                                    f"annotated by {json_of_image[image['file_name']]}"))
            continue
        json_of_image[image["file_name"]] = path
        image["id"] = len(images) + 1
        images.append(image)
        for ann in anns:
            ann["id"] = len(annotations) + 1
            ann["image_id"] = image["id"]
            annotations.append(ann)
    if problems:
        raise DataError(problems)
    if out is not None:
        for image in images:
            image["file_name"] = _relative_to(root / image["file_name"], Path(out).parent)
    coco = {"images": images, "annotations": annotations, **schema.coco_header()}
    if out is not None:
        remove_stale_temps(Path(out).parent, f".{Path(out).name}.*.tmp")  # a conversion killed mid-write
        save_coco(coco, out)
    return coco
