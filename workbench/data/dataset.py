"""A torch Dataset over a COCO-with-attributes file, yielding the model's batch format.

    item = {"image": uint8 (3, H, W) RGB,
            "instances": {"labels": int64 (T,), "masks": bool (T, H, W), "boxes": float32 (T, 4) xyxy,
                          "attributes": {name: int64 (T,)},       # every single group, -1 = unlabeled
                          # with multi-label groups also: "attributes": {name: bool (T, K) multi-hot} and
                          # "attribute_labeled": {name: bool (T,)} (False = the group is unlabeled)
                          "ignore": bool (H, W)},                 # union of iscrowd regions (labelme __ignore__)
            "image_id": int, "file_name": str, "height": int, "width": int}

`labels` are category positions in the schema (0..C-1), not COCO category ids. `height`/`width` are the
original image size (as in detectron2: predictions are resized back to it); the tensor's shape is the
augmented size. Instances that augmentation crops to nothing are dropped together with their attributes.
T may be 0: images without instances are negatives (every query learns "no object"), kept unless
`keep_empty=False`. `iscrowd` annotations are not instances: their pixels form `ignore`, where the mask
losses sample no points (model/criterion.py).
Randomness: item i in epoch e uses `numpy.random.default_rng([seed, e, i])`, so results do not depend on
worker count or order; call `set_epoch` to get new augmentations each epoch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from workbench.data.masks import boxes_from_masks, mask_to_rle, rle_bbox, segmentation_to_mask
from workbench.data.problems import DataError, Problem
from workbench.data.schema import UNLABELED, Schema, check_coco, check_schema_matches, load_coco

__all__ = ["CocoAttributeDataset", "collate", "detectron2_dicts", "read_image", "require_images"]

BOX_MODE_XYWH_ABS = 1  # detectron2's BoxMode.XYWH_ABS


def read_image(path: str | os.PathLike, referenced_by: str | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB, EXIF orientation applied (as labelme shows the image while annotating).

    A missing, truncated or undecodable file raises `DataError` naming it (and the annotation file that
    references it, when given); PIL's own messages name neither. 16- and 32-bit grayscale is scaled to 8 bits
    (the high byte of 16-bit values, as OpenCV and torchvision do) and float grayscale in [0, 1] by 255: PIL's
    convert("RGB") clips those to 255 or 0, a blank image trained on in silence.
    """
    ref = f" (referenced by {referenced_by})" if referenced_by else ""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I", "F") or im.mode.startswith("I;16"):
                return np.repeat(_gray_to_uint8(np.asarray(im), im.mode, path, ref)[..., None], 3, axis=2)
            return np.array(im.convert("RGB"))  # a writable copy (torch wants one)
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise DataError([Problem("unreadable_image", str(path),
                                 f"cannot read the image{ref}: {type(e).__name__}: {e}")]) from None


def _gray_to_uint8(values: np.ndarray, mode: str, path, ref: str) -> np.ndarray:
    """A high-bit-depth grayscale image -> (H, W) uint8."""
    if mode == "F":
        if values.size and (np.nanmin(values) < 0 or np.nanmax(values) > 1):
            raise DataError([Problem("unsupported_image", str(path), f"a float image{ref} with values outside "
                                     f"[0, 1] ({np.nanmin(values):g}..{np.nanmax(values):g}): save it as 8-bit")])
        return np.round(np.nan_to_num(values) * 255).astype(np.uint8)
    wide = values.astype(np.int64)
    if wide.size and (wide.min() < 0 or wide.max() > 65535):
        raise DataError([Problem("unsupported_image", str(path), f"a 32-bit integer image{ref} with values "
                                 f"outside 0..65535: save it as 8- or 16-bit")])
    return (wide >> 8).astype(np.uint8)


def _load(coco: str | os.PathLike | dict, image_root, schema: Schema | None):
    if isinstance(coco, dict):
        where = "coco"
        problems = check_coco(coco, where)
        if problems:
            raise DataError(problems)
        data, root = coco, Path(image_root) if image_root is not None else Path(".")
    else:
        where = str(coco)
        data = load_coco(coco)
        root = Path(image_root) if image_root is not None else Path(coco).parent
    if schema is None:
        schema = Schema.from_coco(data, where)
    else:
        check_schema_matches(data, schema, where)
    return data, root, schema


def require_images(coco: str | os.PathLike, image_root: str | os.PathLike | None = None) -> None:
    """Every `file_name` of the COCO file `coco` must name an existing file (joined with `image_root`, default
    the JSON's folder, as the loaders join it): checked before a run starts, so a wrong image root stops it
    with the first missing image and the JSON named, not at the first batch after the run folder was made."""
    data = load_coco(coco)
    root = Path(image_root) if image_root else Path(coco).parent
    base = "data.image_root" if image_root else "the JSON's folder"
    for i, image in enumerate(data["images"]):
        path = root / image["file_name"]
        if not path.is_file():
            missing = sum(not (root / im["file_name"]).is_file() for im in data["images"][i:])
            raise DataError([Problem("missing_image", f"{coco}: images[{i}].file_name",
                                     f"{image['file_name']!r} resolves to {path}, which does not exist "
                                     f"({missing} of {len(data['images'])} images missing); file_names are "
                                     f"relative to {base} {root}: fix them, move the file, or set "
                                     "data.image_root")])


def detectron2_dicts(coco: str | os.PathLike | dict, image_root=None, schema: Schema | None = None) -> list[dict]:
    """detectron2-style dataset dicts, for registering in `DatasetCatalog`.

    Per image: `file_name` (joined with `image_root`), `height`, `width`, `image_id`, `annotations`; per
    annotation: `segmentation` (as stored: RLE or polygons), `bbox` [x, y, w, h], `bbox_mode` (1 =
    BoxMode.XYWH_ABS), `category_id` (contiguous 0..C-1, as detectron2's loader maps it), `iscrowd`, and
    `attributes` {name: value id, -1 = unlabeled} for every single group and {name: [value ids], -1 =
    unlabeled} for every multi-label group.
    """
    data, root, schema = _load(coco, image_root, schema)
    label_of = schema.label_of()
    images = {im["id"]: im for im in data["images"]}
    by_image: dict[int, list[dict]] = {im["id"]: [] for im in data["images"]}
    for ann in data["annotations"]:
        attrs = ann.get("attributes", {})
        by_image[ann["image_id"]].append({
            "segmentation": ann["segmentation"],
            "bbox": list(ann["bbox"]) if "bbox" in ann else _bbox_of(ann["segmentation"], images[ann["image_id"]]),
            "bbox_mode": BOX_MODE_XYWH_ABS,
            "category_id": label_of[ann["category_id"]],
            "iscrowd": int(ann.get("iscrowd", 0)),
            "attributes": {a.name: _multi_value(attrs.get(a.name, UNLABELED)) if a.multi
                           else int(attrs.get(a.name, UNLABELED)) for a in schema.attributes},
        })
    return [
        {"file_name": str(root / im["file_name"]), "height": im["height"], "width": im["width"],
         "image_id": im["id"], "annotations": by_image[im["id"]]}
        for im in data["images"]
    ]


def _bbox_of(segmentation, image: dict) -> list[float]:
    """COCO [x, y, w, h] of a segmentation, for files written without `bbox` (validate warns about them)."""
    return rle_bbox(mask_to_rle(segmentation_to_mask(segmentation, image["height"], image["width"])))


def _multi_value(value) -> list[int] | int:
    return UNLABELED if value == UNLABELED else [int(v) for v in value]


def multi_hot(values: list, num_values: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance value lists (or -1 = unlabeled) -> (T, K) bool multi-hot and (T,) bool labeled."""
    hot = np.zeros((len(values), num_values), dtype=bool)
    labeled = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v != UNLABELED:
            hot[i, v] = True
            labeled[i] = True
    return hot, labeled


class CocoAttributeDataset(Dataset):
    """Images of a COCO-with-attributes file with their instances, augmented by `augmentation`.

    coco: path or dict; image_root: folder the `file_name`s are relative to (default: the JSON's folder, or
    the working directory for a dict); iscrowd annotations are not instances (as in upstream's mappers) but
    their union is returned as `instances["ignore"]`; keep_empty=False drops images without an instance
    (upstream's training default `DATALOADER.FILTER_EMPTY_ANNOTATIONS`);
    augmentation: `transforms.build_augmentation(cfg, train)` or any callable (image, masks, rng) ->
    (image, masks); None = images as stored. schema: checked against the file when given.
    """

    def __init__(
        self,
        coco: str | os.PathLike | dict,
        image_root: str | os.PathLike | None = None,
        augmentation: Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple] | None = None,
        schema: Schema | None = None,
        seed: int = 0,
        keep_empty: bool = True,
        cache_images: bool = False,
    ):
        self.data, self.image_root, self.schema = _load(coco, image_root, schema)
        self.where = "the coco dict" if isinstance(coco, dict) else str(coco)
        self.records = detectron2_dicts(self.data, self.image_root, self.schema)
        if not keep_empty:
            self.records = [r for r in self.records if any(not a["iscrowd"] for a in r["annotations"])]
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0
        # decoded once, in image order (the same errors as a lazy read, raised now); copied on each use
        self.images = [read_image(r["file_name"], self.where) for r in self.records] if cache_images else None

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        if self.images is not None:
            image = self.images[index].copy()  # augmentations may write in place; the cache must not change
        else:
            image = read_image(record["file_name"], referenced_by=self.where)
        h, w = record["height"], record["width"]
        if image.shape[:2] != (h, w):
            raise DataError([Problem("image_size_mismatch", record["file_name"],
                                     f"image is {image.shape[1]}x{image.shape[0]} but {self.where} says {w}x{h}")])
        anns = [a for a in record["annotations"] if not a["iscrowd"]]
        crowd = [a for a in record["annotations"] if a["iscrowd"]]
        # instances and crowd regions travel through augmentation together, then split again
        masks = np.zeros((len(anns) + len(crowd), h, w), bool)
        for i, a in enumerate(anns + crowd):
            masks[i] = segmentation_to_mask(a["segmentation"], h, w)
        labels = np.array([a["category_id"] for a in anns], dtype=np.int64)
        attributes = {n: np.array([a["attributes"][n] for a in anns], dtype=np.int64) for n in self.schema.single_label_names}
        labeled = {}
        for group in self.schema.attributes:
            if group.multi:
                attributes[group.name], labeled[group.name] = multi_hot([a["attributes"][group.name] for a in anns],
                                                                         len(group.values))
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, masks = self.augmentation(image, masks, rng)
        masks, ignore = masks[: len(anns)], masks[len(anns):].any(axis=0)
        keep = masks.any(axis=(1, 2))  # cropped to nothing -> dropped with its attributes
        masks = masks[keep]
        instances = {
            "labels": torch.from_numpy(labels[keep]),
            "masks": torch.from_numpy(np.ascontiguousarray(masks)),
            "boxes": torch.from_numpy(boxes_from_masks(masks)),
            "attributes": {n: torch.from_numpy(np.ascontiguousarray(attributes[n][keep]))
                           for n in self.schema.attribute_names},
            "ignore": torch.from_numpy(np.ascontiguousarray(ignore)),
        }
        if labeled:  # multi-hot rows and labeled flags are dropped with their cropped-away instances
            instances["attribute_labeled"] = {n: torch.from_numpy(v[keep]) for n, v in labeled.items()}
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": instances,
            "image_id": int(record["image_id"]),
            "file_name": record["file_name"],
            "height": h,
            "width": w,
        }


def collate(batch: list[dict]) -> list[dict]:
    """DataLoader `collate_fn`: the model takes a list of per-image dicts (images differ in size)."""
    return list(batch)
