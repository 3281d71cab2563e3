"""The dataset validator: every problem in a COCO-with-attributes file and its images, and a summary table.

Format and reference checks come from `schema.check_coco`; this adds geometry (degenerate polygons, empty or
out-of-image masks, masks whose size disagrees with the image), image files (missing, unreadable, size
differs from the JSON), agreement with a YAML schema, stuff categories with more than one region in an image,
and images without instances (a warning: fine for negatives, usually a forgotten annotation). COCO panoptic files
get the same report from `validate_coco_panoptic` (format, every PNG, image files). `workbench data validate`
prints the report and exits non-zero on errors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm import tqdm

from workbench.data.io import read_json
from workbench.data.masks import segmentation_to_mask
from workbench.data.problems import DataError, Problem
from workbench.data.schema import UNLABELED, Schema, check_coco, check_coco_header

__all__ = ["ValidationReport", "is_coco_panoptic", "stuff_region_problems", "summary_table", "validate_coco",
           "validate_coco_panoptic"]

_TOLERANCE = 1.0  # px beyond the image border still accepted for polygon points and boxes


@dataclass
class ValidationReport:
    path: str
    problems: list[Problem] = field(default_factory=list)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    num_images: int = 0
    num_annotations: int = 0  # instances (iscrowd 0)
    num_empty_images: int = 0  # images without an instance: negatives, kept for training (data.keep_empty)
    num_ignore_regions: int = 0  # iscrowd 1 annotations (labelme __ignore__)
    summary_title: str = "instances per category x attribute value"
    unit: str = "instances"  # what num_annotations counts ("class regions" for semantic label maps)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def codes(self) -> set[str]:
        return {p.code for p in self.problems}

    def __str__(self) -> str:
        lines = [str(p) for p in self.errors + self.warnings]
        lines.append(f"{self.path}: {self.num_images} images ({self.num_empty_images} without {self.unit}), "
                     f"{self.num_annotations} {self.unit}, {self.num_ignore_regions} ignore regions, "
                     f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        if not self.summary.empty:
            lines += ["", f"{self.summary_title}:", self.summary.to_string()]
        return "\n".join(lines)


def summary_table(data: dict, schema: Schema) -> pd.DataFrame:
    """Rows: categories (+ "total"); columns: ("instances", "") and (attribute, value | "unlabeled") counts.

    A multi-label group counts, per value, the instances holding it (a row may hold several values).
    """
    columns = [("instances", "")] + [(a.name, v) for a in schema.attributes for v in (*a.values, "unlabeled")]
    names = {c.id: c.name for c in schema.categories}
    counts = pd.DataFrame(0, index=[c.name for c in schema.categories], columns=pd.MultiIndex.from_tuples(columns))
    for ann in data["annotations"]:
        category_id = ann.get("category_id") if isinstance(ann, dict) else None
        row = names.get(category_id) if isinstance(category_id, int) else None
        if row is None or ann.get("iscrowd"):  # malformed ones are reported elsewhere; crowd regions are no instances
            continue
        counts.loc[row, ("instances", "")] += 1
        attrs = ann.get("attributes", {}) if isinstance(ann.get("attributes"), dict) else {}
        for a in schema.attributes:
            v = attrs.get(a.name, UNLABELED)
            if a.multi and isinstance(v, list):  # every value it holds is counted (a row may hold several)
                for k in {k for k in v if isinstance(k, int) and 0 <= k < len(a.values)}:
                    counts.loc[row, (a.name, a.values[k])] += 1
                continue
            label = a.values[v] if isinstance(v, int) and 0 <= v < len(a.values) else "unlabeled"
            counts.loc[row, (a.name, label)] += 1
    counts.loc["total"] = counts.sum(axis=0)
    return counts


def stuff_region_problems(data: dict, schema: Schema, where: str) -> list[Problem]:
    """A stuff category (isthing false) has one region per image: two of its (non-crowd) annotations in one image
    would be two segments of one class, which panoptic quality and the semantic targets cannot tell apart."""
    stuff = {c.id: c.name for c in schema.categories if not c.isthing}
    images = {im.get("id"): im for im in data["images"] if isinstance(im, dict)}
    seen: dict[tuple[int, int], int] = {}
    problems = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or ann.get("iscrowd") or ann.get("category_id") not in stuff:
            continue
        key = (ann.get("image_id"), ann["category_id"])
        if key in seen:
            image = images.get(key[0], {})
            problems.append(Problem("stuff_split", f"{where}: annotations[{i}] (id {ann.get('id')})",
                                    f"image {key[0]} ({image.get('file_name')}) already has a region of the stuff "
                                    f"category {stuff[key[1]]!r} (annotations[{seen[key]}]); a stuff category has "
                                    "one region per image: merge them into one annotation"))
        else:
            seen[key] = i
    return problems


def _polygon_problems(segmentation, h: int, w: int, where: str) -> list[Problem]:
    problems = []
    for k, poly in enumerate(segmentation):
        wk = f"{where}.segmentation[{k}]"
        if not isinstance(poly, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly):
            problems.append(Problem("bad_format", wk, "a polygon must be a flat list of numbers [x1, y1, x2, y2, ...]"))
            continue
        if len(poly) % 2 or len(poly) < 6:
            problems.append(Problem("degenerate_polygon", wk, f"{len(poly)} coordinates; a polygon needs an even "
                                    "count of at least 6 (3 points)"))
            continue
        x, y = np.asarray(poly[0::2], float), np.asarray(poly[1::2], float)
        if 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) == 0:
            problems.append(Problem("degenerate_polygon", wk, "zero area (points on a line or repeated)"))
        elif x.min() < -_TOLERANCE or y.min() < -_TOLERANCE or x.max() > w + _TOLERANCE or y.max() > h + _TOLERANCE:
            problems.append(Problem("out_of_image", wk, f"points outside the {w}x{h} image"))
    return problems


def _annotation_problems(ann: dict, image: dict, where: str) -> list[Problem]:
    h, w = image["height"], image["width"]
    segm = ann["segmentation"]
    if isinstance(segm, list):
        problems = _polygon_problems(segm, h, w, where)
        if problems:
            return problems
    elif isinstance(segm, dict):
        if not isinstance(segm.get("counts"), (str, list)) or not isinstance(segm.get("size"), list):
            return [Problem("bad_format", f"{where}.segmentation", "RLE needs 'size' [h, w] and 'counts'")]
        if list(segm["size"]) != [h, w]:
            return [Problem("mask_size_mismatch", f"{where}.segmentation",
                            f"RLE size {segm['size']} but image {image['id']} is [{h}, {w}] (h, w)")]
    else:
        return [Problem("bad_format", f"{where}.segmentation", "must be a polygon list or an RLE object")]
    try:
        area = int(segmentation_to_mask(segm, h, w).sum())
    except Exception as e:  # pycocotools raises bare Exceptions on corrupt RLE strings
        return [Problem("bad_format", f"{where}.segmentation", f"cannot decode: {e}")]
    problems = []
    if area == 0:
        problems.append(Problem("zero_area_mask", f"{where}.segmentation", "the mask covers no pixel of the image"))
    missing = [k for k in ("bbox", "area") if k not in ann]
    if missing:
        problems.append(Problem("missing_bbox_area", where, f"no {' / '.join(missing)}: the loaders compute "
                                "them from the segmentation (write them to silence this)", severity="warning"))
    bbox = ann.get("bbox")
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            problems.append(Problem("bad_format", f"{where}.bbox", f"must be [x, y, w, h], got {bbox!r}"))
        elif bbox[2] < 0 or bbox[3] < 0:
            problems.append(Problem("bad_format", f"{where}.bbox", f"negative width or height: {bbox}"))
        elif bbox[0] < -_TOLERANCE or bbox[1] < -_TOLERANCE or bbox[0] + bbox[2] > w + _TOLERANCE or bbox[1] + bbox[3] > h + _TOLERANCE:
            problems.append(Problem("out_of_image", f"{where}.bbox", f"box {bbox} leaves the {w}x{h} image"))
    return problems


def _image_file_problems(image: dict, root: Path, where: str) -> list[Problem]:
    path = root / image["file_name"]
    if not path.is_file():
        return [Problem("missing_image", where, f"image file {path} not found")]
    try:
        with Image.open(path) as im:
            im.load()  # decodes everything: truncated files fail here, not in the data loader
            width, height = ImageOps.exif_transpose(im).size
    except Exception as e:  # PIL raises several unrelated types for corrupt files
        return [Problem("unreadable_image", where, f"cannot read {path}: {type(e).__name__}: {e}")]
    if (height, width) != (image["height"], image["width"]):
        return [Problem("image_size_mismatch", where, f"{path} is {width}x{height} (w x h) but the JSON says "
                        f"{image['width']}x{image['height']}")]
    return []


def _schema_problems(file_schema: Schema, schema: Schema, where: str) -> list[Problem]:
    problems = []
    for c in file_schema.categories:
        if schema.category_by_name(c.name) is None:
            problems.append(Problem("unknown_category", f"{where}: categories", f"category {c.name!r} is not in the "
                                    f"schema ({schema.category_names})"))
        elif schema.category_by_name(c.name).id != c.id:
            problems.append(Problem("id_mismatch", f"{where}: categories", f"category {c.name!r} has id {c.id}, the "
                                    f"schema says {schema.category_by_name(c.name).id}"))
        elif schema.category_by_name(c.name).isthing != c.isthing:
            problems.append(Problem("schema_mismatch", f"{where}: categories", f"category {c.name!r} is "
                                    f"{'a thing' if c.isthing else 'stuff'} in the file, not in the schema (isthing)"))
    for a in file_schema.attributes:
        ref = schema.attribute(a.name)
        if ref is None:
            problems.append(Problem("unknown_attribute", f"{where}: attributes", f"attribute {a.name!r} is not in the "
                                    f"schema ({schema.attribute_names})"))
        elif a.kind != ref.kind:
            problems.append(Problem("schema_mismatch", f"{where}: attributes.{a.name}",
                                    f"the file says kind {a.kind!r}, the schema {ref.kind!r}"))
        elif a.values != ref.values:
            problems.append(Problem("unknown_attribute_value", f"{where}: attributes.{a.name}",
                                    f"values {list(a.values)} differ from the schema's {list(ref.values)}"))
    return problems


def validate_coco(
    coco: str | os.PathLike,
    images: str | os.PathLike | None = None,
    schema: Schema | None = None,
    progress: bool = True,
) -> ValidationReport:
    """Check a COCO-with-attributes file (and, with `images`, the image files under that folder).

    Never raises on bad data: everything found is in the report (`report.ok` is False on any error).
    """
    report = ValidationReport(str(coco))
    try:
        data = read_json(coco)
    except DataError as e:
        report.problems += e.problems
        return report
    header = check_coco_header(data, str(coco))
    if header:  # the top level or the vocabularies are broken; nothing below can be read reliably
        report.problems += header
        return report
    report.problems += check_coco(data, str(coco))
    file_schema = Schema.from_coco(data, str(coco))
    if schema is not None:
        report.problems += _schema_problems(file_schema, schema, str(coco))
    report.num_images = len(data["images"])
    report.num_ignore_regions = sum(1 for a in data["annotations"] if isinstance(a, dict) and a.get("iscrowd"))
    report.num_annotations = len(data["annotations"]) - report.num_ignore_regions

    images_by_id = {im["id"]: im for im in data["images"] if isinstance(im, dict) and "id" in im}
    usable_images = {i: im for i, im in images_by_id.items()
                     if all(isinstance(im.get(k), int) and im[k] > 0 for k in ("height", "width"))}
    instances_per_image = dict.fromkeys(images_by_id, 0)
    for i, ann in enumerate(tqdm(data["annotations"], desc="annotations", unit="ann", disable=not progress)):
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if not isinstance(image_id, int) or image_id not in usable_images or "segmentation" not in ann:
            continue  # already reported by check_coco
        instances_per_image[ann["image_id"]] += 0 if ann.get("iscrowd") else 1
        report.problems += _annotation_problems(ann, usable_images[ann["image_id"]], f"{coco}: annotations[{i}] (id {ann.get('id')})")
    report.problems += stuff_region_problems(data, file_schema, str(coco))
    first_with_file: dict[str, int] = {}
    for i, im in enumerate(data["images"]):
        name = im.get("file_name") if isinstance(im, dict) else None
        if isinstance(name, str) and name in first_with_file:
            report.problems.append(Problem("duplicate_image", f"{coco}: images[{i}] (id {im.get('id')})",
                                           f"{name} is also images[{first_with_file[name]}]: its instances would "
                                           "be split over two records"))
        elif isinstance(name, str):
            first_with_file[name] = i
        if isinstance(im, dict) and instances_per_image.get(im.get("id"), 1) == 0:
            report.num_empty_images += 1
            report.problems.append(Problem("empty_image", f"{coco}: images[{i}] (id {im['id']}, {im.get('file_name')})",
                                           "no instances (a negative: trained on unless data.keep_empty is false)",
                                           severity="warning"))
    if images is not None:
        root = Path(images)
        for i, im in enumerate(tqdm(data["images"], desc="images", unit="image", disable=not progress)):
            if isinstance(im, dict) and im.get("id") in usable_images and isinstance(im.get("file_name"), str):
                report.problems += _image_file_problems(im, root, f"{coco}: images[{i}] (id {im['id']})")
    report.summary = summary_table(data, file_schema)
    return report


def is_coco_panoptic(data) -> bool:
    """A COCO panoptic dict (annotations hold `segments_info`) rather than COCO-with-attributes."""
    anns = data.get("annotations") if isinstance(data, dict) else None
    return isinstance(anns, list) and any(isinstance(a, dict) and "segments_info" in a for a in anns)


def validate_coco_panoptic(
    path: str | os.PathLike,
    png_root: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    schema: Schema | None = None,
    progress: bool = True,
) -> ValidationReport:
    """Check a COCO panoptic file and every PNG (ids against segments_info, sizes); with `images`, the image
    files too. Never raises on bad data: everything found is in the report."""
    from workbench.data.coco_panoptic import load_coco_panoptic, read_panoptic_png

    report = ValidationReport(str(path))
    try:
        records, file_schema = load_coco_panoptic(path, png_root, images, None)
    except DataError as e:
        report.problems += e.problems
        return report
    if schema is not None:
        report.problems += _schema_problems(file_schema, schema, str(path))
    report.num_images = len(records)
    for r in tqdm(records, desc="panoptic PNGs", unit="image", disable=not progress):
        try:
            read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], r["height"], r["width"], str(path))
        except DataError as e:
            report.problems += e.problems
        things = [s for s in r["segments_info"] if not s["iscrowd"]]
        report.num_annotations += len(things)
        report.num_ignore_regions += len(r["segments_info"]) - len(things)
        if not things:
            report.num_empty_images += 1
        if images is not None:
            report.problems += _image_file_problems({"id": r["image_id"], "file_name": r["file_name"], "height":
                                                     r["height"], "width": r["width"]}, Path("."),
                                                    f"{path}: images (id {r['image_id']})")
    flat = {"annotations": [dict(s, category_id=file_schema.categories[s["category_id"]].id, attributes={
        k: v for k, v in s["attributes"].items() if v != UNLABELED}) for r in records for s in r["segments_info"]]}
    report.summary = summary_table(flat, file_schema)
    return report
