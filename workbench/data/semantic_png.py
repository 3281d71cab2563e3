"""Semantic label PNGs (ADE20K / Cityscapes style): one class index per pixel, 255 = ignore, plus a class list.

    classes.yaml    [wall, building, sky, ...]          # class index = position (a JSON list works too);
                    or a schema file (categories: ...)   # then its categories, in order, are the classes
    labels/<name>.png   single-channel (L or P) PNG, values 0..C-1 or 255; the image is images/<name>.<ext>

Values are the model's labels directly (as ADE20K's `*_sem_seg` after detectron2's "minus one" and Cityscapes'
trainIds). A value that is neither a class nor 255 is an error naming the file, the value and where it is.
Records are detectron2's semantic dicts: `file_name`, `sem_seg_file_name`, `height`, `width`, `image_id`.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageOps

from workbench.data.categories import Category
from workbench.data.io import write_bytes_atomic
from workbench.data.problems import DataError, Problem
from workbench.data.schema import Schema, schema_from_dict

__all__ = ["IGNORE_VALUE", "class_list_yaml", "load_class_list", "load_semantic", "read_label_png",
           "write_label_png"]

IGNORE_VALUE = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def load_class_list(path: str | os.PathLike) -> Schema:
    """A YAML/JSON list of class names (or a schema file) -> Schema with ids 1..C in list order."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError([Problem("missing_file", str(path), "class list not found")]) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError([Problem("unreadable_file", str(path), f"not a YAML/JSON class list: {e}")]) from None
    if isinstance(doc, dict):
        return schema_from_dict(doc, str(path))
    if not isinstance(doc, list) or not doc or not all(isinstance(n, str) for n in doc):
        raise DataError([Problem("bad_schema", str(path), "expected a non-empty list of class names, e.g. "
                                 "[wall, building, sky], or a schema with 'categories'")])
    if len(doc) >= IGNORE_VALUE:
        raise DataError([Problem("bad_schema", str(path), f"{len(doc)} classes; a label PNG holds 0..254 "
                                 f"({IGNORE_VALUE} = ignore)")])
    return Schema(tuple(Category(i + 1, n, isthing=False) for i, n in enumerate(doc)), ())


def class_list_yaml(schema: Schema) -> str:
    """The class list file `load_class_list` reads back: one name per line, index = position."""
    return "# class index = position (0-based); 255 in the label PNGs = ignore\n" + yaml.safe_dump(
        schema.category_names, default_flow_style=False)


def read_label_png(path: str | os.PathLike, num_classes: int, height: int | None = None, width: int | None = None,
                   referenced_by: str = "") -> np.ndarray:
    """(H, W) uint8 class indices of one label PNG; 255 = ignore. Colour PNGs, sizes that differ from the image
    and values outside 0..C-1 / 255 are errors naming the file (and the value and one pixel holding it)."""
    ref = f" (referenced by {referenced_by})" if referenced_by else ""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError([Problem("bad_label_png", str(path), f"mode {im.mode}{ref}: a label PNG has one "
                                         "channel of class indices (L or P), not colours")])
            labels = np.asarray(im)  # P: the palette indices, which are the classes (VOC / labelme style)
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError([Problem("unreadable_image", str(path), f"cannot read the label PNG{ref}: "
                                 f"{type(e).__name__}: {e}")]) from None
    if height is not None and labels.shape != (height, width):
        raise DataError([Problem("image_size_mismatch", str(path), f"the label PNG is {labels.shape[1]}x"
                                 f"{labels.shape[0]} but the image is {width}x{height} (w x h){ref}")])
    bad = (labels >= num_classes) & (labels != IGNORE_VALUE)
    if bad.any():
        y, x = (int(v[0]) for v in np.nonzero(bad))
        values = sorted(np.unique(labels[bad]).tolist())
        raise DataError([Problem("unknown_class", str(path), f"pixel value {labels[y, x]} at (x={x}, y={y}) is no "
                                 f"class (0..{num_classes - 1}, {IGNORE_VALUE} = ignore){ref}; values outside: {values}")])
    return labels.astype(np.uint8)


def load_semantic(label_root: str | os.PathLike, image_root: str | os.PathLike,
                  classes: str | os.PathLike | Schema) -> tuple[list[dict], Schema]:
    """Pair every `*.png` under `label_root` with the image of the same relative path and stem under
    `image_root` -> (records, schema). Missing or ambiguous images are reported all at once."""
    label_root, image_root = Path(label_root), Path(image_root)
    schema = classes if isinstance(classes, Schema) else load_class_list(classes)
    if not label_root.is_dir():
        raise DataError([Problem("missing_file", str(label_root), "label folder not found")])
    labels = sorted(label_root.rglob("*.png"))
    if not labels:
        raise DataError([Problem("no_input", str(label_root), "no *.png label files found")])
    problems, records = [], []
    for k, label in enumerate(labels):
        rel = label.relative_to(label_root).with_suffix("")
        found = [p for p in sorted((image_root / rel.parent).glob(rel.name + ".*"))
                 if p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() != label.resolve()]
        if len(found) != 1:
            problems.append(Problem("missing_image" if not found else "ambiguous_image", str(label),
                                    f"{'no' if not found else len(found)} image(s) {image_root / rel}.* "
                                    f"({', '.join(IMAGE_SUFFIXES)}) for this label file"))
            continue
        try:
            with Image.open(found[0]) as im:
                width, height = ImageOps.exif_transpose(im).size
        except (OSError, ValueError) as e:
            problems.append(Problem("unreadable_image", str(found[0]), f"cannot read: {type(e).__name__}: {e}"))
            continue
        records.append({"file_name": str(found[0]), "sem_seg_file_name": str(label), "height": height,
                        "width": width, "image_id": k + 1})
    if problems:
        raise DataError(problems)
    return records, schema


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> None:
    """(H, W) uint8 class indices -> a single-channel PNG, written atomically."""
    buf = io.BytesIO()
    Image.fromarray(labels.astype(np.uint8)).save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
