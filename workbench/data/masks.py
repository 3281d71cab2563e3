"""Instance-mask encodings: COCO polygons and RLE <-> boolean arrays, and boxes from masks.

The converter stores every instance as compressed RLE: it is exact (what we rasterised is what pycocotools'
`annToMask` returns), it holds labelme "mask" shapes and multi-part objects, and detectron2 reads it with
`mask_format="bitmask"` (what Mask2Former uses). Polygons from other tools are still read everywhere.
"""
from __future__ import annotations

import warnings

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["boxes_from_masks", "compressed_rle_error", "mask_to_rle", "rle_area", "rle_bbox", "segmentation_to_mask"]


def mask_to_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO compressed RLE `{"size": [H, W], "counts": str}` (JSON-serialisable)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def compressed_rle_error(counts: str, height: int, width: int) -> str | None:
    """Why a compressed RLE `counts` string cannot be an (height, width) mask, or None when it can.

    pycocotools decodes any string without a check: a cut or garbled one becomes some other mask (or reads past
    the image) and is scored in silence. The format (pycocotools' rleToString): each run length in 5-bit groups,
    low first, as characters 48 + group, 0x20 = more groups follow, 0x10 in the last group = negative; from the
    fourth run on the value is a difference to the run two before. The runs must be >= 0 and sum to H x W."""
    runs: list[int] = []
    value, shift, more = 0, 0, False
    for position, char in enumerate(counts):
        group = ord(char) - 48
        if not 0 <= group < 64:
            return f"character {char!r} at {position} is not part of a compressed RLE"
        value |= (group & 0x1F) << shift
        shift += 5
        more = bool(group & 0x20)
        if not more:
            if group & 0x10:
                value |= -1 << shift
            if len(runs) > 2:
                value += runs[-2]
            if value < 0:
                return f"run {len(runs)} has negative length {value}"
            runs.append(value)
            value, shift = 0, 0
    if more:
        return "the string ends inside a run length (cut short?)"
    if sum(runs) != height * width:
        return f"its runs cover {sum(runs)} pixels, not {height} x {width} = {height * width}"
    return None


def _as_rle(segmentation, height: int, width: int):
    if isinstance(segmentation, list):  # polygons: [[x1, y1, x2, y2, ...], ...]
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        return {"size": segmentation["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    raise TypeError(f"segmentation must be a polygon list or an RLE dict, got {type(segmentation).__name__}")


def segmentation_to_mask(segmentation, height: int, width: int) -> np.ndarray:
    """COCO segmentation (polygons, RLE or compressed RLE) -> (H, W) bool, the same pixels as `annToMask`."""
    rle = _as_rle(segmentation, height, width)
    with warnings.catch_warnings():
        # pycocotools' compiled decode predates numpy 2's `copy` keyword and warns on every call; harmless
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy", category=DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def rle_area(rle: dict) -> int:
    return int(mask_utils.area(_as_rle(rle, *rle["size"])))


def rle_bbox(rle: dict) -> list[float]:
    """COCO box [x, y, w, h] of an RLE."""
    return [float(v) for v in mask_utils.toBbox(_as_rle(rle, *rle["size"]))]


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """(T, H, W) bool -> (T, 4) float32 xyxy, pixel-edge convention (a single pixel at (x, y) is [x, y, x+1, y+1]).

    Empty masks give a zero box; callers drop empty instances first.
    """
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    for i, m in enumerate(masks):
        rows = np.flatnonzero(m.any(axis=1))
        cols = np.flatnonzero(m.any(axis=0))
        if rows.size:
            boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes
