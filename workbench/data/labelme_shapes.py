"""labelme's shapes as pixels: each shape type drawn exactly as labelme draws it (PIL ImageDraw, outline included).

Every converter (labelme -> COCO, -> panoptic, -> semantic) and the synthetic generator rasterise through
`shape_to_mask`, so what a user drew in labelme is what the model trains on.
"""
from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SHAPE_TYPES", "Degenerate", "Unsupported", "shape_to_mask"]

SHAPE_TYPES = ("polygon", "rectangle", "circle", "mask", "oriented_rectangle")


def shape_to_mask(shape: dict, height: int, width: int) -> np.ndarray:
    """One labelme shape -> (H, W) bool, drawn the way labelme draws it.

    Polygons and rectangles include their outline; an oriented rectangle is a 4-point polygon; a circle is
    `points[0]` = centre, `points[1]` on the rim; a "mask" shape is a base64 PNG placed at the box
    `points[0]`..`points[1]` (see `_mask_shape` for fractional corners).
    Raises ValueError (with a message for the user) on malformed shapes.
    """
    kind = shape.get("shape_type") or "polygon"
    points = shape.get("points")
    if not isinstance(points, list) or not all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(_is_number(v) for v in p) for p in points
    ):
        raise ValueError("'points' must be a list of [x, y] numbers")
    xy = [(float(x), float(y)) for x, y in points]
    if kind == "mask":
        return _mask_shape(shape, xy, height, width)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "polygon":
        if len(xy) < 3:
            raise Degenerate(f"polygon has {len(xy)} point(s); needs at least 3")
        if _polygon_area(xy) == 0:
            raise Degenerate("polygon has zero area (all points on a line)")
        draw.polygon(xy, fill=1, outline=1)
    elif kind == "rectangle":
        if len(xy) != 2:
            raise ValueError(f"rectangle needs 2 points (opposite corners), got {len(xy)}")
        (x0, y0), (x1, y1) = xy
        if x0 == x1 or y0 == y1:
            raise Degenerate("rectangle has zero width or height")
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=1, outline=1)
    elif kind == "oriented_rectangle":
        if len(xy) != 4:
            raise ValueError(f"oriented_rectangle needs 4 points (its corners in order), got {len(xy)}")
        if _polygon_area(xy) == 0:
            raise Degenerate("oriented_rectangle has zero area")
        draw.polygon(xy, fill=1, outline=1)
    elif kind == "circle":
        if len(xy) != 2:
            raise ValueError(f"circle needs 2 points (centre, a point on the rim), got {len(xy)}")
        (cx, cy), (px, py) = xy
        r = math.hypot(px - cx, py - cy)
        if r == 0:
            raise Degenerate("circle has zero radius")
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1, outline=1)
    else:
        raise Unsupported(f"shape_type {kind!r} is not an instance shape; supported: {list(SHAPE_TYPES)}")
    return np.asarray(canvas, dtype=bool)


class Degenerate(ValueError):
    """A shape that encloses no area."""


class Unsupported(ValueError):
    """A labelme shape that is not a region (line, linestrip, point, ...)."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _polygon_area(xy: list[tuple[float, float]]) -> float:
    x = np.array([p[0] for p in xy])
    y = np.array([p[1] for p in xy])
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _mask_shape(shape: dict, xy, height: int, width: int) -> np.ndarray:
    if len(xy) != 2:
        raise ValueError(f"mask shape needs 2 points (box corners), got {len(xy)}")
    if not isinstance(shape.get("mask"), str):
        raise ValueError("mask shape needs 'mask': a base64-encoded PNG")
    try:
        region = Image.open(io.BytesIO(base64.b64decode(shape["mask"], validate=True)))
        region = np.asarray(region.convert("L")) > 0
    except Exception as e:  # binascii.Error, PIL.UnidentifiedImageError, ...: all mean "not a PNG in base64"
        raise ValueError(f"'mask' is not a base64-encoded image ({type(e).__name__}: {e})") from None
    # As labelme places it (examples/utils.py): corners rounded (numpy's half-to-even); with integer corners the
    # box is the inclusive corners and a larger stored image is cropped to it; with fractional ones (released
    # labelme versions write them) the stored image keeps its own size from the rounded top-left corner.
    corners = np.asarray(xy, dtype=float)
    (x0, y0), (x1, y1) = np.round(corners).astype(int).tolist()
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    if np.array_equal(corners, np.trunc(corners)):
        box_h, box_w = y1 - y0 + 1, x1 - x0 + 1
        if region.shape[0] < box_h or region.shape[1] < box_w:
            raise ValueError(f"'mask' image is {region.shape[1]}x{region.shape[0]} (w x h) but its box "
                             f"{x0},{y0}..{x1},{y1} is {box_w}x{box_h}")
        region = region[:box_h, :box_w]
    x1, y1 = x0 + region.shape[1] - 1, y0 + region.shape[0] - 1
    full = np.zeros((height, width), dtype=bool)
    # the part of the box inside the image
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1 + 1, width), min(y1 + 1, height)
    if sx0 < sx1 and sy0 < sy1:
        full[sy0:sy1, sx0:sx1] = region[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    return full
