"""COCO panoptic with attributes: read, check and write.

The format is COCO's (panopticapi and detectron2 read our files unchanged and ignore the extras):

    panoptic.json   "images": [...], "categories": [{"id", "name", "isthing": 0/1}, ...],
                    "annotations": [{"image_id", "file_name": "<png>", "segments_info": [
                        {"id": 7, "category_id": 3, "iscrowd": 0, "area", "bbox",
                         "attributes": {"color": 0, "pattern": [1, 2]}}, ...]}, ...]
                    "attributes": [{"name": "color", "values": [...]}, ...]      # as COCO-with-attributes
    <png folder>/   one RGB PNG per image: segment id = R + 256 G + 256^2 B, 0 = void (unlabeled)

Per-segment `attributes` follow COCO-with-attributes exactly (missing / -1 = unlabeled, lists for multi-label
groups). One extension: an annotation may carry `"ignore_segmentation"` (a COCO RLE) for pixels the annotator
marked as ignore (labelme's `__ignore__`); they are void in the PNG, as panopticapi expects, and the reader
returns them so training excludes them from the mask losses.

Records (`load_coco_panoptic`) are detectron2's panoptic dicts: `file_name`, `pan_seg_file_name`, `height`,
`width`, `image_id`, `segments_info` with `category_id` the contiguous model label (0..C-1) and `isthing`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from workbench.data.categories import UNLABELED, attribute_value_problems, is_int
from workbench.data.io import read_json
from workbench.data.masks import segmentation_to_mask
from workbench.data.problems import DataError, Problem
from workbench.data.schema import Schema, check_coco_header, check_schema_matches

__all__ = ["check_coco_panoptic", "id_to_rgb", "ignore_mask", "load_coco_panoptic", "read_panoptic_png", "rgb_to_id",
           "segment_masks"]


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int32 segment ids, id = R + 256 G + 256^2 B (panopticapi's encoding)."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) int segment ids -> (H, W, 3) uint8, the inverse of `rgb_to_id`."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str | os.PathLike, segments: list[dict], height: int, width: int,
                      referenced_by: str = "") -> np.ndarray:
    """(H, W) int32 segment ids of one PNG, checked against its `segments_info`: a pixel value that no segment
    has is an error naming the file, the id and its RGB colour (panopticapi stops on the same thing)."""
    ref = f" (referenced by {referenced_by})" if referenced_by else ""
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA"):
                raise DataError([Problem("bad_panoptic_png", str(path), f"mode {im.mode}{ref}; a panoptic PNG is "
                                         "RGB with id = R + 256 G + 256^2 B (panopticapi's id2rgb)")])
            ids = rgb_to_id(np.asarray(im.convert("RGB")))
    except DataError:
        raise
    except (OSError, ValueError) as e:
        raise DataError([Problem("unreadable_image", str(path), f"cannot read the panoptic PNG{ref}: "
                                 f"{type(e).__name__}: {e}")]) from None
    if ids.shape != (height, width):
        raise DataError([Problem("image_size_mismatch", str(path), f"the PNG is {ids.shape[1]}x{ids.shape[0]} but "
                                 f"the image is {width}x{height} (w x h){ref}")])
    known = {s["id"] for s in segments}
    unknown = sorted(set(np.unique(ids).tolist()) - known - {0})
    if unknown:
        v = unknown[0]
        rgb = tuple(id_to_rgb(np.array(v)).tolist())
        raise DataError([Problem("unknown_segment", str(path), f"pixel value id {v} (RGB {rgb}) "
                                 f"is no segment of its segments_info{ref}; known ids: {sorted(known)}"
                                 + (f" ({len(unknown)} unknown ids in all)" if len(unknown) > 1 else ""))])
    missing = sorted(known - set(np.unique(ids).tolist()))
    if missing:
        raise DataError([Problem("empty_segment", str(path), f"segments_info lists id {missing[0]} but no pixel "
                                 f"has it{ref}: drop the segment or fix the PNG")])
    return ids


def segment_masks(ids: np.ndarray, segments: list[dict]) -> np.ndarray:
    """(H, W) segment ids -> (S, H, W) bool, one mask per entry of `segments` in order."""
    if not segments:
        return np.zeros((0, *ids.shape), dtype=bool)
    return np.stack([ids == s["id"] for s in segments])


def _segment_problems(seg: Any, label_of: dict, vocab: dict, multi: set, where: str) -> list[Problem]:
    if not isinstance(seg, dict) or not is_int(seg.get("id")) or seg["id"] <= 0:
        return [Problem("bad_format", where, "needs an integer 'id' > 0 (0 is void)")]
    w = f"{where} (id {seg['id']})"
    problems = []
    if seg.get("category_id") not in label_of:
        problems.append(Problem("unknown_category", f"{w}.category_id", f"no category with id "
                                f"{seg.get('category_id')!r}; known: {sorted(label_of)}"))
    if seg.get("iscrowd", 0) not in (0, 1):
        problems.append(Problem("bad_format", f"{w}.iscrowd", f"must be 0 or 1, got {seg['iscrowd']!r}"))
    attrs = seg.get("attributes", {})
    if not isinstance(attrs, dict):
        return problems + [Problem("bad_format", f"{w}.attributes", "must be an object {name: value id}")]
    for name, value in attrs.items():
        if name not in vocab:
            problems.append(Problem("unknown_attribute", f"{w}.attributes.{name}", f"attribute {name!r} is not in "
                                    f"the file's 'attributes'; known: {list(vocab)}"))
        else:
            problems += attribute_value_problems(value, vocab[name], name in multi, f"{w}.attributes.{name}")
    return problems


def check_coco_panoptic(data: Any, where: str) -> list[Problem]:
    """Format and reference checks of a COCO panoptic dict (no PNGs): ids, categories, attributes, and a stuff
    category with more than one segment in an image."""
    problems = check_coco_header(data, where)
    if problems:
        return problems
    label_of = {c["id"]: i for i, c in enumerate(data["categories"])}
    stuff = {c["id"] for c in data["categories"] if not c.get("isthing", 1)}
    names = {c["id"]: c["name"] for c in data["categories"]}
    vocab = {a["name"]: len(a["values"]) for a in data.get("attributes", [])}
    multi = {a["name"] for a in data.get("attributes", []) if a.get("kind") == "multi"}
    images = {}
    for i, im in enumerate(data["images"]):
        ok = isinstance(im, dict) and is_int(im.get("id")) and isinstance(im.get("file_name"), str)
        ok = ok and all(is_int(im.get(k)) and im[k] > 0 for k in ("height", "width"))
        if not ok:
            problems.append(Problem("bad_format", f"{where}: images[{i}]", "needs integer 'id', 'height', 'width' "
                                    "and a string 'file_name'"))
        elif im["id"] in images:
            problems.append(Problem("duplicate_id", f"{where}: images[{i}]", f"image id {im['id']} appears twice"))
        else:
            images[im["id"]] = im
    annotated: dict[int, int] = {}
    for i, ann in enumerate(data["annotations"]):
        w = f"{where}: annotations[{i}]"
        if not (isinstance(ann, dict) and isinstance(ann.get("file_name"), str)
                and isinstance(ann.get("segments_info"), list)):
            problems.append(Problem("bad_format", w, "needs 'image_id', a PNG 'file_name' and a 'segments_info' list"))
            continue
        if ann.get("image_id") not in images:
            problems.append(Problem("unknown_image", f"{w}.image_id", f"no image with id {ann.get('image_id')!r}"))
            continue
        if ann["image_id"] in annotated:
            problems.append(Problem("duplicate_image", f"{w}.image_id", f"image {ann['image_id']} is already "
                                    f"annotated by annotations[{annotated[ann['image_id']]}]"))
            continue
        annotated[ann["image_id"]] = i
        w = f"{w} (image {ann['image_id']}, {ann['file_name']})"
        ids, stuff_seen = set(), {}
        for k, seg in enumerate(ann["segments_info"]):
            found = _segment_problems(seg, label_of, vocab, multi, f"{w}.segments_info[{k}]")
            problems += found
            if found:
                continue
            if seg["id"] in ids:
                problems.append(Problem("duplicate_id", f"{w}.segments_info[{k}]", f"segment id {seg['id']} twice"))
            ids.add(seg["id"])
            if seg["category_id"] in stuff and not seg.get("iscrowd", 0):
                if seg["category_id"] in stuff_seen:
                    problems.append(Problem("stuff_split", f"{w}.segments_info[{k}]", f"a second segment of the stuff "
                                            f"category {names[seg['category_id']]!r} (the first is segments_info"
                                            f"[{stuff_seen[seg['category_id']]}]); a stuff category has one region "
                                            "per image: give both pixels one segment id"))
                stuff_seen[seg["category_id"]] = k
        if "ignore_segmentation" in ann and not isinstance(ann["ignore_segmentation"], dict):
            problems.append(Problem("bad_format", f"{w}.ignore_segmentation", "must be a COCO RLE object"))
    return problems


def load_coco_panoptic(
    json_path: str | os.PathLike,
    png_root: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
    schema: Schema | None = None,
) -> tuple[list[dict], Schema]:
    """-> (records, schema). `png_root` defaults to the JSON's folder / its stem (COCO's layout:
    panoptic_val2017.json next to panoptic_val2017/), `image_root` to the JSON's folder. PNGs are read lazily
    (`read_panoptic_png`); a missing PNG is reported here, with every format problem of the JSON at once."""
    json_path = Path(json_path)
    data = read_json(json_path)
    problems = check_coco_panoptic(data, str(json_path))
    if problems:
        raise DataError(problems)
    if schema is None:
        schema = Schema.from_coco(data, str(json_path))
    else:
        check_schema_matches(data, schema, str(json_path))
    png_root = Path(png_root) if png_root is not None else json_path.parent / json_path.stem
    image_root = Path(image_root) if image_root is not None else json_path.parent
    label_of = schema.label_of()
    isthing = {c.id: c.isthing for c in schema.categories}
    by_image = {a["image_id"]: a for a in data["annotations"]}
    records = []
    for im in data["images"]:
        ann = by_image.get(im["id"])
        if ann is None:
            problems.append(Problem("missing_annotation", f"{json_path}: images (id {im['id']}, {im['file_name']})",
                                    "no entry in 'annotations' (an image without segments still needs one, with "
                                    "an all-void PNG and segments_info [])"))
            continue
        png = png_root / ann["file_name"]
        if not png.is_file():
            problems.append(Problem("missing_image", f"{json_path}: annotations (image {im['id']})",
                                    f"panoptic PNG {png} not found"))
        records.append({
            "file_name": str(image_root / im["file_name"]), "pan_seg_file_name": str(png),
            "height": im["height"], "width": im["width"], "image_id": im["id"],
            "ignore_segmentation": ann.get("ignore_segmentation"),
            "segments_info": [{
                "id": s["id"], "category_id": label_of[s["category_id"]], "isthing": isthing[s["category_id"]],
                "iscrowd": int(s.get("iscrowd", 0)),
                "attributes": {a.name: _value(s.get("attributes", {}).get(a.name, UNLABELED), a.multi)
                               for a in schema.attributes},
            } for s in ann["segments_info"]],
        })
    if problems:
        raise DataError(problems)
    return records, schema


def _value(v, multi: bool):
    return UNLABELED if v == UNLABELED else ([int(x) for x in v] if multi else int(v))


def ignore_mask(record: dict) -> np.ndarray:
    """(H, W) bool: the record's `ignore_segmentation` (all False when it has none)."""
    rle = record.get("ignore_segmentation")
    if rle is None:
        return np.zeros((record["height"], record["width"]), dtype=bool)
    return segmentation_to_mask(rle, record["height"], record["width"])
