"""One labelme folder -> the data set of a task, checked (notebook 01, `synthetic_splits`).

    convert_for_task(labelme_dir, schema, out, task) -> TaskSource(source, image_root)
        instance  OUT/coco.json                 COCO-with-attributes (labelme.py)
        panoptic  OUT/panoptic/panoptic.json    COCO panoptic + PNGs, attributes per segment (labelme_maps.py)
        semantic  OUT/semantic                  labels/*.png (class per pixel, 255 = ignore) + classes.yaml;
                                                its images stay in the labelme folder: image_root
    validate_source(source, schema, image_root) -> ValidationReport, by the source's format
        (segmentation.source_format): validate_coco, validate_coco_panoptic, or for a semantic folder every label
        PNG read against its image, counted per class

`open_dataset(source, task, image_root)` reads it; in a run config `data.train` / `data.val` and `data.image_root`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from workbench.data.problems import DataError, Problem
from workbench.data.schema import Schema
from workbench.data.targets import TASKS
from workbench.data.validate import ValidationReport
from workbench.errors import UsageError

__all__ = ["TaskSource", "convert_for_task", "validate_source"]


@dataclass(frozen=True)
class TaskSource:
    """A converted data set: `source` (a COCO JSON or a semantic folder) and the folder its images are found
    in when that is not the format's default (None: COCO file_names resolve from the JSON's folder)."""

    source: Path
    image_root: Path | None = None


def convert_for_task(labelme_dir: str | os.PathLike, schema: Schema, out: str | os.PathLike, task: str,
                     progress: bool = True) -> TaskSource:
    """Convert every labelme JSON under `labelme_dir` into `task`'s format under the folder `out` (all or
    nothing, as `workbench data convert --task`); see the module docstring."""
    if task not in TASKS:
        raise UsageError(f"task must be one of {list(TASKS)}, got {task!r}")
    out = Path(out)
    if task == "instance":
        from workbench.data.labelme import convert_labelme

        convert_labelme(labelme_dir, schema, out / "coco.json", progress=progress)
        return TaskSource(out / "coco.json")
    from workbench.data.labelme_maps import convert_labelme_panoptic, convert_labelme_semantic

    if task == "panoptic":
        convert_labelme_panoptic(labelme_dir, schema, out / "panoptic", progress=progress)
        return TaskSource(out / "panoptic" / "panoptic.json")
    convert_labelme_semantic(labelme_dir, schema, out / "semantic", progress=progress)  # label PNGs name no image
    return TaskSource(out / "semantic", Path(labelme_dir))


def validate_source(source: str | os.PathLike, schema: Schema | None = None, image_root: str | os.PathLike | None = None,
                    progress: bool = True) -> ValidationReport:
    """Check any source `open_dataset` reads, with its image files (in `image_root`, default: the format's, as
    open_dataset); never raises on bad data (the problems are in the report). `schema`: the vocabulary the file
    must hold (None: any)."""
    from workbench.data.segmentation import source_format
    from workbench.data.validate import validate_coco, validate_coco_panoptic

    source = Path(source)
    try:
        kind = source_format(source)
    except DataError as e:
        return ValidationReport(str(source), problems=list(e.problems))
    if kind == "instance":
        return validate_coco(source, images=image_root or source.parent, schema=schema, progress=progress)
    if kind == "panoptic":
        return validate_coco_panoptic(source, images=image_root or source.parent, schema=schema, progress=progress)
    return _validate_semantic(source, Path(image_root or source.parent), schema, progress)


def _validate_semantic(folder: Path, image_root: Path, schema: Schema | None, progress: bool) -> ValidationReport:
    """A semantic folder (labels/ + classes.yaml, images under `image_root`): every label PNG against its image
    and the class list; the summary counts images and pixels per class. num_annotations = class regions (one per
    class present in an image), num_ignore_regions = images with ignore (255) pixels, num_empty_images = images
    with no class."""
    from workbench.data.semantic_png import IGNORE_VALUE, load_semantic, read_label_png

    report = ValidationReport(str(folder), summary_title="images and pixels per class", unit="class regions")
    try:
        records, file_schema = load_semantic(folder / "labels", image_root, folder / "classes.yaml")
    except DataError as e:
        report.problems += e.problems
        return report
    if schema is not None and file_schema.category_names != schema.category_names:
        report.problems.append(Problem("schema_mismatch", str(folder / "classes.yaml"),
                                       f"classes {file_schema.category_names}, expected {schema.category_names}"))
    images, pixels = np.zeros(file_schema.num_classes, np.int64), np.zeros(file_schema.num_classes, np.int64)
    report.num_images = len(records)
    for r in tqdm(records, desc="label PNGs", unit="image", disable=not progress):
        try:
            labels = read_label_png(r["sem_seg_file_name"], file_schema.num_classes, r["height"], r["width"],
                                    str(folder))
        except DataError as e:
            report.problems += e.problems
            continue
        counts = np.bincount(labels[labels != IGNORE_VALUE].ravel(), minlength=file_schema.num_classes)
        images += counts > 0
        pixels += counts
        report.num_annotations += int((counts > 0).sum())
        report.num_ignore_regions += int((labels == IGNORE_VALUE).any())
        report.num_empty_images += int(counts.sum() == 0)
    report.summary = pd.DataFrame({"images": images, "pixels": pixels}, index=file_schema.category_names)
    return report
