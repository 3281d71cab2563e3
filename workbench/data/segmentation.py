"""A torch Dataset over COCO panoptic or semantic label PNGs, yielding each task's targets.

    item = {"image": uint8 (3, H, W), "instances": {...as CocoAttributeDataset's, with "ignore": bool (H, W)},
            "image_id", "file_name", "height", "width",
            "sem_seg": int64 (H, W) class per pixel, 255 = ignore        # task "semantic" only}

Which targets (targets.py): panoptic = one per non-crowd segment, stuff included; semantic = one per class
present; instance = things only. Ignore pixels (excluded from the mask losses):
  panoptic / instance  crowd segments and marked ignore regions (`ignore_segmentation`, labelme `__ignore__`);
                       void pixels (id 0) are background for every mask, as upstream's panoptic mapper has them
  semantic             label 255, i.e. void and ignore regions, and so also the padding a crop adds (no
                       segment covers it; upstream's semantic mapper pads the label map with 255)
Segments and ignore go through the augmentation together with the image, as one (S + 1, H, W) stack, so they
cannot drift apart; resizing them is nearest-neighbour. Randomness as in dataset.py:
item i in epoch e uses `numpy.random.default_rng([seed, e, i])`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from workbench.data.coco_panoptic import ignore_mask, load_coco_panoptic, read_panoptic_png, segment_masks
from workbench.data.dataset import CocoAttributeDataset, read_image
from workbench.data.io import read_json
from workbench.data.problems import DataError, Problem
from workbench.data.schema import Schema
from workbench.data.semantic_png import IGNORE_VALUE, load_semantic, read_label_png
from workbench.data.targets import TASKS, segment_targets
from workbench.errors import UsageError

__all__ = ["SegmentationDataset", "open_dataset", "source_format", "source_schema"]


class SegmentationDataset(Dataset):
    """records: `load_coco_panoptic`'s or `load_semantic`'s (or use the `from_*` constructors); task: what the
    targets are (semantic label PNGs hold no instances, so they train semantic only); keep_empty=False drops
    panoptic images without a non-crowd segment; augmentation: as CocoAttributeDataset's."""

    def __init__(
        self,
        records: list[dict],
        schema: Schema,
        task: str = "panoptic",
        augmentation: Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple] | None = None,
        seed: int = 0,
        keep_empty: bool = True,
        where: str = "the dataset",
    ):
        if task not in TASKS:
            raise UsageError(f"task must be one of {list(TASKS)}, got {task!r}")
        if task != "semantic" and any("sem_seg_file_name" in r for r in records):
            raise UsageError(f"semantic label PNGs have no instances: they train task 'semantic', not {task!r}")
        if not keep_empty:
            records = [r for r in records if "segments_info" not in r
                       or any(not s["iscrowd"] for s in r["segments_info"])]
        self.records, self.schema, self.task = records, schema, task
        self.augmentation, self.seed, self.epoch, self.where = augmentation, seed, 0, where

    @classmethod
    def from_coco_panoptic(cls, json_path: str | os.PathLike, png_root=None, image_root=None,
                           schema: Schema | None = None, **kwargs) -> "SegmentationDataset":
        records, schema = load_coco_panoptic(json_path, png_root, image_root, schema)
        return cls(records, schema, where=str(json_path), **kwargs)

    @classmethod
    def from_semantic(cls, label_root: str | os.PathLike, image_root: str | os.PathLike, classes,
                      **kwargs) -> "SegmentationDataset":
        records, schema = load_semantic(label_root, image_root, classes)
        return cls(records, schema, task=kwargs.pop("task", "semantic"), where=str(label_root), **kwargs)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def segments(self, index: int) -> tuple[np.ndarray, list[dict], np.ndarray]:
        """Record `index` before augmentation: masks (S, H, W) bool, segment records, marked ignore (H, W) bool."""
        r = self.records[index]
        h, w = r["height"], r["width"]
        if "sem_seg_file_name" in r:  # one segment per class present, no attributes
            labels = read_label_png(r["sem_seg_file_name"], self.schema.num_classes, h, w, self.where)
            classes = [int(c) for c in np.unique(labels) if c != IGNORE_VALUE]
            segs = [{"id": c + 1, "category_id": c, "iscrowd": 0, "isthing": self.schema.categories[c].isthing,
                     "attributes": {}} for c in classes]
            masks = np.stack([labels == c for c in classes]) if classes else np.zeros((0, h, w), bool)
            return masks, segs, labels == IGNORE_VALUE
        ids = read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], h, w, self.where)
        return segment_masks(ids, r["segments_info"]), r["segments_info"], ignore_mask(r)

    def __getitem__(self, index: int) -> dict[str, Any]:
        r = self.records[index]
        h, w = r["height"], r["width"]
        image = read_image(r["file_name"], referenced_by=self.where)
        if image.shape[:2] != (h, w):
            raise DataError([Problem("image_size_mismatch", r["file_name"],
                                     f"image is {image.shape[1]}x{image.shape[0]} but {self.where} says {w}x{h}")])
        masks, segs, marked = self.segments(index)
        stack = np.concatenate([masks, marked[None]])
        if self.augmentation is not None:
            image, stack = self.augmentation(image, stack, np.random.default_rng([self.seed, self.epoch, index]))
        masks, ignore = stack[:-1], stack[-1]
        if self.task == "semantic":  # void (padding included) is label 255 in upstream's semantic maps
            ignore = ignore | ~masks.any(axis=0)
        instances = segment_targets(masks, segs, ignore, self.schema, self.task)
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": instances,
            "image_id": int(r["image_id"]),
            "file_name": r["file_name"],
            "height": h,
            "width": w,
        }
        if self.task == "semantic":
            sem = np.full(ignore.shape, IGNORE_VALUE, dtype=np.int64)
            for label, mask in zip(instances["labels"].tolist(), instances["masks"].numpy()):
                sem[mask] = label
            sem[instances["ignore"].numpy()] = IGNORE_VALUE
            item["sem_seg"] = torch.from_numpy(sem)
        return item


def source_format(source: str | os.PathLike) -> str:
    """"semantic" (a folder holding labels/ and classes.yaml), "panoptic" (COCO panoptic JSON) or "instance"
    (COCO-with-attributes JSON): what `open_dataset` reads `source` as."""
    source = Path(source)
    if source.is_dir():
        if not (source / "labels").is_dir() or not (source / "classes.yaml").is_file():
            raise DataError([Problem("missing_file", str(source), "a semantic data folder holds labels/ and "
                                     "classes.yaml (workbench data convert ... --task semantic writes them)")])
        return "semantic"
    data = read_json(source)
    anns = data.get("annotations") if isinstance(data, dict) else None
    if isinstance(anns, list) and any(isinstance(a, dict) and "segments_info" in a for a in anns):
        return "panoptic"
    return "instance"


def source_schema(source: str | os.PathLike) -> Schema:
    """The categories and attributes of any source `open_dataset` reads (no image is opened)."""
    from workbench.data.schema import schema_of_coco

    kind = source_format(source)
    if kind == "semantic":
        from workbench.data.semantic_png import load_class_list

        return load_class_list(Path(source) / "classes.yaml")
    if kind == "panoptic":
        return load_coco_panoptic(source)[1]
    return schema_of_coco(source)


def open_dataset(source: str | os.PathLike, task: str = "instance", image_root: str | os.PathLike | None = None,
                 **kwargs) -> Dataset:
    """The dataset of `source` for `task`, whatever its format: a COCO-with-attributes JSON (instance), a COCO
    panoptic JSON (any task) or a semantic folder holding `labels/` and `classes.yaml` (semantic; images in
    `image_root`, by default the folder above it, as `data convert --task semantic` lays them out). `kwargs`
    go to the dataset (augmentation, seed, keep_empty, schema...); `cache_images` only to the COCO one."""
    source = Path(source)
    if task not in TASKS:
        raise UsageError(f"task must be one of {list(TASKS)}, got {task!r}")
    kind = source_format(source)
    if kind == "semantic":
        kwargs.pop("schema", None)  # the class list is the schema
        kwargs.pop("cache_images", None)
        return SegmentationDataset.from_semantic(source / "labels", image_root or source.parent,
                                                 source / "classes.yaml", task=task, **kwargs)
    if kind == "panoptic":
        kwargs.pop("cache_images", None)
        return SegmentationDataset.from_coco_panoptic(source, image_root=image_root, task=task, **kwargs)
    if task != "instance":
        raise UsageError(f"{source} is COCO-with-attributes (instances): it trains task 'instance'; for {task!r} "
                         "convert the labelme folder with `workbench data convert ... --task " + task + "`")
    return CocoAttributeDataset(source, image_root, **kwargs)
