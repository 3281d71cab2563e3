"""The inspector's query view drawn as an array (numpy + PIL), not a matplotlib figure.

Shows what `figures.query_figure` shows, in the same grid: row 0 the query's mask over the image (outside
darkened, outline yellow, matched ground truth outlined green) with its caption, then one bar chart per head
(class and every attribute: no-object grey, top-1 orange; a multi-label group: values above its threshold
orange, the threshold a dashed red line); row 1 the mask probability after every decoder stage (magma); row 2
where the next layer's cross-attention may look (white), framed, with the visible fraction.

Why not matplotlib: drawing and constrained layout of that figure took ~75 % of a click (issue 27). Here the
layout is a fixed grid computed once per image shape (`PanelLayout`), colour maps are 256-entry lookup tables,
resizing samples the nearest pixel (as matplotlib's interpolation="nearest") before anything per-pixel is
computed (sigmoid, colour map), and the PNG is written with the fastest zlib level and no row filter. The
output is deterministic: the same inspection, query and row give the same pixels.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from workbench.inspect.queries import ImageQueries, _sigmoid, attention_masks, distributions, outline

__all__ = ["PanelLayout", "colour_lut", "fit", "levels", "png_bytes", "query_panel"]

BLUE, ORANGE, GREY, RED = (76, 114, 176), (221, 132, 82), (153, 153, 153), (196, 78, 82)
TITLE_H, LINE_H, PAD = 26, 12, 6


@lru_cache(maxsize=None)
def colour_lut(name: str) -> np.ndarray:
    """(256, 3) uint8: matplotlib's colour map `name` sampled at 256 levels (what imshow draws for uint8-like
    data), computed once."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def levels(values: np.ndarray) -> np.ndarray:
    """(H, W) floats in [0, 1] -> (H, W) uint8 indices into a colour map's lookup table."""
    return np.clip(np.asarray(values, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=None)
def _font(size: int):
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=2048)
def _text_mask(text: str, size: int, anchor: str) -> tuple[Image.Image, int, int]:
    """The rendered text as an "L" coverage mask and its offset from the anchor point: titles and value names
    repeat from query to query, so each is rasterised once."""
    font = _font(size)
    x0, y0, x1, y1 = font.getbbox(text, anchor=anchor)
    mask = Image.new("L", (max(1, x1 - x0), max(1, y1 - y0)), 0)
    ImageDraw.Draw(mask).text((-x0, -y0), text, fill=255, font=font, anchor=anchor)
    return mask, x0, y0


def _text(canvas: Image.Image, xy: tuple[float, float], text: str, size: int, anchor: str,
          fill: tuple[int, int, int] = (0, 0, 0)) -> None:
    mask, dx, dy = _text_mask(text, size, anchor)
    x, y = round(xy[0]) + dx, round(xy[1]) + dy
    canvas.paste(fill, (x, y, x + mask.width, y + mask.height), mask)


@dataclass(frozen=True)
class PanelLayout:
    """The grid of one query view: `cols` cells of `cell` x `cell` pixels (plus a title strip each) in 3 rows;
    images fitted into a cell keep their aspect ratio. Depends only on the image shape and the number of
    stages and heads, so the widget computes it once per image."""

    cols: int
    cell: int
    image_size: tuple[int, int]  # (h, w) of an image drawn into a cell

    @classmethod
    def for_inspection(cls, q: ImageQueries, cell: int = 150) -> "PanelLayout":
        h, w = q.image.shape[:2]
        scale = cell / max(h, w)
        return cls(cols=max(q.num_stages, 1 + len(q.attribute_probs) + 1), cell=cell,
                   image_size=(max(1, round(h * scale)), max(1, round(w * scale))))

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the whole panel in pixels."""
        return 3 * (TITLE_H + self.cell + PAD), self.cols * (self.cell + PAD) + PAD

    def origin(self, row: int, col: int) -> tuple[int, int]:
        """(x, y) of the top-left corner of cell (row, col)'s image area (below its title)."""
        return PAD + col * (self.cell + PAD), row * (TITLE_H + self.cell + PAD) + TITLE_H


@lru_cache(maxsize=64)
def _nearest(source: tuple[int, int], target: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rows (h, 1), cols (1, w)) source indices of each target pixel's nearest source pixel (centres aligned)."""
    (sh, sw), (th, tw) = source, target
    rows = np.minimum(((np.arange(th) + 0.5) * sh / th).astype(np.int64), sh - 1)
    cols = np.minimum(((np.arange(tw) + 0.5) * sw / tw).astype(np.int64), sw - 1)
    return rows[:, None], cols[None, :]


def fit(array: np.ndarray, layout: PanelLayout) -> np.ndarray:
    """(..., H, W) or (H, W, 3) -> the same at the cell's image size, each pixel the nearest source pixel
    (sampled, never blended, as matplotlib's interpolation="nearest")."""
    channels_last = array.ndim == 3 and array.shape[-1] == 3 and array.dtype == np.uint8
    hw = array.shape[-3:-1] if channels_last else array.shape[-2:]
    if tuple(hw) == layout.image_size:
        return array
    rows, cols = _nearest(tuple(hw), layout.image_size)
    return array[..., rows, cols, :] if channels_last else array[..., rows, cols]


def _title(canvas: Image.Image, layout: PanelLayout, row: int, col: int, text: str) -> None:
    x, y = layout.origin(row, col)
    lines = text.split("\n")[-2:]
    for k, line in enumerate(lines):
        _text(canvas, (x + layout.cell // 2, y - TITLE_H + 1 + (2 - len(lines) + k) * LINE_H), line, 10, "ma")


def _bars(canvas: Image.Image, draw: ImageDraw.ImageDraw, layout: PanelLayout, col: int, series,
          threshold: float | None) -> None:
    """One head's probabilities as horizontal bars, first value on top, x from 0 to 1 (ticks 0, 0.5, 1). Every
    bar is drawn; when the labels would overlap (80 COCO classes in one cell) only the 3 most probable values and
    no-object are named."""
    x0, y0 = layout.origin(0, col)
    probs = series.to_numpy()
    n = len(probs)
    label_w = 52
    left, right = x0 + label_w, x0 + layout.cell - 4
    bottom = y0 + layout.cell - 14
    step = (bottom - y0) / max(n, 1)
    if threshold is not None:
        colours = [ORANGE if p > threshold else BLUE for p in probs]
    else:
        colours = [BLUE] * n
        colours[-1] = GREY
        colours[int(np.argmax(probs))] = ORANGE
    named = set(range(n)) if step >= 9 else {*np.argsort(-probs, kind="mergesort")[:3].tolist(),
                                              *([n - 1] if threshold is None else [])}
    for i, (name, p) in enumerate(zip(series.index, probs)):
        top = y0 + i * step + step * 0.1
        height = max(1.0, step * 0.8)
        if p > 0:
            draw.rectangle([left, top, left + float(p) * (right - left), top + height], fill=colours[i])
        if i in named:
            _text(canvas, (left - 3, top + height / 2), str(name)[:9], 8, "rm")
    draw.line([left, y0, left, bottom], fill=(0, 0, 0))
    draw.line([left, bottom, right, bottom], fill=(0, 0, 0))
    for t in (0.0, 0.5, 1.0):
        x = left + t * (right - left)
        draw.line([x, bottom, x, bottom + 3], fill=(0, 0, 0))
        _text(canvas, (x, bottom + 3), f"{t:g}", 8, "ma")
    if threshold is not None:
        x = left + threshold * (right - left)
        for y in range(y0, bottom, 6):
            draw.line([x, y, x, min(y + 3, bottom)], fill=RED)
    _title(canvas, layout, 0, col, str(series.name))


def query_panel(q: ImageQueries, query: int, row: Mapping | None = None,
                layout: PanelLayout | None = None) -> np.ndarray:
    """(H, W, 3) uint8: query `query`'s view (module docstring); `row` (its query_table row) adds the caption's
    class, ranking score and matched target with IoU."""
    layout = layout or PanelLayout.for_inspection(q)
    height, width = layout.size
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)

    # outlines are drawn at the cell's size: one visible pixel wide whatever the image's size
    mask = fit(q.masks[query], layout)
    image = fit(q.image, layout).astype(np.float32)
    image[~mask] *= 0.3
    image = image.clip(0, 255).astype(np.uint8)
    if q.gt is not None and q.matched_gt is not None and q.matched_gt[query] >= 0:
        image[outline(fit(np.asarray(q.gt["masks"][q.matched_gt[query]], dtype=bool), layout))] = (40, 220, 40)
    image[outline(mask)] = (255, 230, 0)
    canvas.paste(Image.fromarray(image), layout.origin(0, 0))
    title = f"query {query}"
    if row is not None:
        title += f"\n{row['class']} {row['combined']:.2f}"
        if row.get("matched_gt", -1) >= 0:
            title += f" GT{int(row['matched_gt'])} IoU {row['iou']:.2f}"
    _title(canvas, layout, 0, 0, title)
    for j, (name, series) in enumerate(distributions(q, query).items(), start=1):
        _bars(canvas, draw, layout, j, series, q.multi_label.get(name))

    probs = _sigmoid(fit(q.stage_logits(query), layout))  # layer_masks(q, query), at the cell's pixels only
    allowed = attention_masks(q, query)
    stages = q.num_stages
    for s in range(stages):
        canvas.paste(Image.fromarray(colour_lut("magma")[levels(probs[s])]), layout.origin(1, s))
        _title(canvas, layout, 1, s, "queries" if s == 0 else f"layer {s}" + (" (final)" if s == stages - 1 else ""))
        if allowed[s] is None:
            continue
        x, y = layout.origin(2, s)
        visible = fit(allowed[s], layout)  # (h_s, w_s) at the attention's own resolution, stretched to the cell
        canvas.paste(Image.fromarray(np.where(visible, 255, 0).astype(np.uint8)).convert("RGB"), (x, y))
        h, w = layout.image_size
        draw.rectangle([x - 1, y - 1, x + w, y + h], outline=(0, 0, 0))  # an all-visible mask still shows as a square
        frac = 100 * allowed[s].mean()
        _title(canvas, layout, 2, s, f"attn -> layer {s + 1}\n{frac:.0f}% visible" if s < stages - 1
               else f"attn (unused)\n{frac:.0f}% visible")
    return np.asarray(canvas)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(array: np.ndarray, level: int = 1) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 array: 8-bit RGB, no row filter, zlib `level`. On these flat panels this
    is ~2x faster than PIL's encoder at its fastest level (which tries a filter per row) and as small."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    h, w, c = array.shape
    if c != 3:
        raise ValueError(f"png_bytes needs (H, W, 3) uint8, got {array.shape}")
    rows = np.zeros((h, 1 + 3 * w), dtype=np.uint8)  # each row: filter byte 0, then its pixels
    rows[:, 1:] = array.reshape(h, -1)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits per channel, RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level))
            + _chunk(b"IEND", b""))
