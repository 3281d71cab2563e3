"""The on-disk COCO panoptic form: a JSON whose "annotations" hold one {image_id, file_name, segments_info} per
image, beside a folder of PNGs whose RGB encodes the segment id (id = R + 256 G + 256^2 B), read exactly as
panopticapi's `pq_compute` reads them, so `evaluate_panoptic_files` equals it (tests/test_metrics_panoptic.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from workbench.data.io import read_json
from workbench.metrics.inputs import input_error
from workbench.metrics.panoptic import CategoryTable, PanopticResult, evaluate_images

__all__ = ["evaluate_panoptic_files", "load_panoptic_json", "panoptic_files", "read_panoptic_png"]


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """A COCO panoptic PNG as int64 (H, W) segment ids: id = R + 256 G + 256^2 B (panopticapi's rgb2id)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
    except FileNotFoundError:
        raise input_error("missing_file", str(path), "panoptic PNG not found") from None
    except OSError as e:
        raise input_error("unreadable_file", str(path), f"cannot read the panoptic PNG: {e}") from None
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def load_panoptic_json(path: str | os.PathLike) -> dict:
    """A COCO panoptic JSON with its "annotations" (one per image: image_id, file_name, segments_info)."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise input_error("bad_panoptic_json", str(path), "expected a COCO panoptic JSON with an 'annotations' list")
    for i, ann in enumerate(data["annotations"]):
        missing = [k for k in ("image_id", "file_name", "segments_info") if k not in ann]
        if missing:
            raise input_error("bad_panoptic_json", f"{path} annotations[{i}]", f"missing {missing}")
    return data


def panoptic_files(gt_json: str | os.PathLike, pred_json: str | os.PathLike,
                   gt_folder: str | os.PathLike | None = None, pred_folder: str | os.PathLike | None = None,
                   progress: bool = False) -> tuple[CategoryTable, Iterator[tuple[str, Any, list, Any, list]]]:
    """The GT JSON's categories and, lazily, (where, gt_map, gt_segments, pred_map, pred_segments) per GT image,
    read as `pq_compute` reads them (see `evaluate_panoptic_files`)."""
    gt, pred = load_panoptic_json(gt_json), load_panoptic_json(pred_json)
    if "categories" not in gt:
        raise input_error("bad_panoptic_json", str(gt_json), "has no 'categories' list")
    table = CategoryTable.from_records(gt["categories"], f"{gt_json} categories")
    gt_folder = Path(gt_folder if gt_folder is not None else str(gt_json).replace(".json", ""))
    pred_folder = Path(pred_folder if pred_folder is not None else str(pred_json).replace(".json", ""))
    for folder in (gt_folder, pred_folder):
        if not folder.is_dir():
            raise input_error("missing_folder", str(folder), "folder of panoptic PNGs not found")
    predicted = {ann["image_id"]: ann for ann in pred["annotations"]}
    missing = [ann["image_id"] for ann in gt["annotations"] if ann["image_id"] not in predicted]
    if missing:
        raise input_error("missing_prediction", str(pred_json), f"no prediction for image ids {missing[:10]}"
                     + (f" and {len(missing) - 10} more" if len(missing) > 10 else ""))

    def images():
        from tqdm import tqdm

        for gt_ann in tqdm(gt["annotations"], desc="PQ", unit="image", disable=not progress):
            pred_ann = predicted[gt_ann["image_id"]]
            yield (f"image {gt_ann['image_id']!r}", read_panoptic_png(gt_folder / gt_ann["file_name"]),
                   gt_ann["segments_info"], read_panoptic_png(pred_folder / pred_ann["file_name"]),
                   pred_ann["segments_info"])

    return table, images()


def evaluate_panoptic_files(gt_json: str | os.PathLike, pred_json: str | os.PathLike,
                            gt_folder: str | os.PathLike | None = None, pred_folder: str | os.PathLike | None = None,
                            progress: bool = False) -> PanopticResult:
    """PQ of COCO panoptic files, as `panopticapi.evaluation.pq_compute(gt_json, pred_json, gt_folder,
    pred_folder)`: the categories are the GT JSON's, every GT image needs a prediction (extra predicted images
    are ignored), a folder defaults to its JSON's path without ".json"."""
    return evaluate_images(*panoptic_files(gt_json, pred_json, gt_folder, pred_folder, progress))
