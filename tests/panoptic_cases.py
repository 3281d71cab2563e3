"""Panoptic test data shared by tests/test_metrics_panoptic.py and tests/test_metrics_panoptic_attributes.py:
random GT / prediction pairs with things, stuff, crowd and VOID, and writers of the COCO panoptic on-disk form."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# dataset ids on purpose not contiguous; isthing as COCO panoptic writes it
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 7, "name": "dog", "isthing": 1},
    {"id": 20, "name": "sky", "isthing": 0},
    {"id": 21, "name": "road", "isthing": 0},
    {"id": 40, "name": "wall", "isthing": 0},
    {"id": 99, "name": "never_seen", "isthing": 1},  # in no GT and no prediction
]
THINGS = [1, 3, 7]
STUFF = [20, 21, 40]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def _new_id(rng, used: set) -> int:
    while True:
        i = int(rng.integers(1, 2**24))
        if i not in used:
            used.add(i)
            return i


def _box(rng, h, w):
    y0, x0 = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
    return slice(y0, int(rng.integers(y0 + 1, h + 1))), slice(x0, int(rng.integers(x0 + 1, w + 1)))


def random_gt(rng, h=24, w=32) -> tuple[np.ndarray, list[dict]]:
    """Stuff bands (one segment per class), thing boxes (sometimes crowd), a VOID strip; ids up to 2^24."""
    ids, used, segments = np.zeros((h, w), np.int64), set(), []
    cuts = sorted(rng.choice(np.arange(2, h - 2), size=2, replace=False).tolist())
    stuff_of_class = {}
    for band, (a, b) in enumerate(zip([0, *cuts], [*cuts, h])):
        c = int(rng.choice(STUFF))
        if c not in stuff_of_class:
            stuff_of_class[c] = _new_id(rng, used)
            segments.append({"id": stuff_of_class[c], "category_id": c, "iscrowd": 0})
        ids[a:b] = stuff_of_class[c]
    for _ in range(int(rng.integers(1, 6))):
        s = {"id": _new_id(rng, used), "category_id": int(rng.choice(THINGS)), "iscrowd": int(rng.random() < 0.2)}
        ids[_box(rng, h, w)] = s["id"]
        segments.append(s)
    if rng.random() < 0.7:
        ids[_box(rng, h, w)] = 0
    return ids, _listed(ids, segments)


def _listed(ids: np.ndarray, segments: list[dict]) -> list[dict]:
    """The segments that still have pixels, with their areas (COCO panoptic stores them)."""
    present, counts = np.unique(ids, return_counts=True)
    area = dict(zip(present.tolist(), counts.tolist()))
    return [dict(s, area=area[s["id"]]) for s in segments if s["id"] in area]


def random_prediction(rng, gt_ids: np.ndarray, gt_segments: list[dict]) -> tuple[np.ndarray, list[dict]]:
    """The GT's segments under new ids, some shifted, relabelled or dropped, plus a few spurious boxes."""
    h, w = gt_ids.shape
    ids, used, segments = np.zeros_like(gt_ids), set(), []
    for s in gt_segments:
        if rng.random() < 0.15:
            continue
        mask = gt_ids == s["id"]
        if rng.random() < 0.5:
            mask = np.roll(mask, (int(rng.integers(-3, 4)), int(rng.integers(-4, 5))), axis=(0, 1))
        category = s["category_id"]
        if rng.random() < 0.15:
            category = int(rng.choice(THINGS + STUFF))
        new = {"id": _new_id(rng, used), "category_id": category}
        ids[mask] = new["id"]
        segments.append(new)
    for _ in range(int(rng.integers(0, 3))):
        new = {"id": _new_id(rng, used), "category_id": int(rng.choice(THINGS + STUFF))}
        ids[_box(rng, h, w)] = new["id"]
        segments.append(new)
    return ids, [{k: v for k, v in s.items() if k != "area"} for s in _listed(ids, segments)]


def write_panoptic(folder: Path, name: str, images: dict, categories=CATEGORIES) -> Path:
    """`images`: {image_id: (ids (H, W), segments_info)} -> <folder>/<name>.json + <folder>/<name>/<id>.png."""
    png_dir = folder / name
    png_dir.mkdir(parents=True, exist_ok=True)
    annotations = []
    for image_id, (ids, segments) in images.items():
        file_name = f"{image_id:06d}.png"
        Image.fromarray(id_to_rgb(ids)).save(png_dir / file_name)
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"images": [{"id": i} for i in images], "categories": categories,
                                "annotations": annotations}))
    return path


def contiguous(images: dict, categories=CATEGORIES) -> dict:
    """The in-memory form: category ids replaced by contiguous class indices (the model's labels)."""
    position = {c["id"]: i for i, c in enumerate(categories)}
    return {image_id: {"panoptic_seg": ids, "segments_info": [dict(s, category_id=position[s["category_id"]])
                                                             for s in segments]}
            for image_id, (ids, segments) in images.items()}


def contiguous_categories(categories=CATEGORIES) -> list[dict]:
    return [dict(c, id=i) for i, c in enumerate(categories)]
