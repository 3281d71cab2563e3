"""The panoptic and semantic views drawn as arrays (numpy + PIL, as `panels.py` draws the query view).

    panoptic_panel   cell 0: every segment tinted in its colour (`segment_colour`) with its outline, void
                     pixels as the image; cell 1: the selected segment alone (outside darkened, outline yellow),
                     titled with its category, thing/stuff, score, query and attribute values
    semantic_panel   cell 0: the semantic label map tinted per class, the chosen class's region outlined yellow
                     and the pixel marked with a red cross; cell 1: that class's score (semantic inference's sum
                     over queries, magma, 0 to its maximum); then the queries that contribute most, each as its
                     vote softmax(class) x sigmoid(mask) on the same colour scale, so the cells add up to cell 1

Cells reuse `panels.PanelLayout` (one row) and its nearest-pixel `fit`; nothing here runs the model.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from workbench.drawing.overlay import PALETTE
from workbench.inspect.panels import PAD, TITLE_H, PanelLayout, _title, colour_lut, fit, levels
from workbench.inspect.queries import ImageQueries, _sigmoid, outline

__all__ = ["panoptic_panel", "segment_colour", "semantic_panel"]

YELLOW, RED = (255, 230, 0), (230, 30, 30)


def segment_colour(n: int) -> tuple[int, int, int]:
    """The colour of the n-th segment (or class) in the views and the tables' swatches."""
    return tuple(int(c) for c in PALETTE[n % len(PALETTE)])


def _layout(q: ImageQueries, cols: int, cell: int) -> PanelLayout:
    h, w = q.image.shape[:2]
    scale = cell / max(h, w)
    return PanelLayout(cols=cols, cell=cell, image_size=(max(1, round(h * scale)), max(1, round(w * scale))))


def _canvas(layout: PanelLayout) -> Image.Image:
    return Image.new("RGB", (layout.cols * (layout.cell + PAD) + PAD, TITLE_H + layout.cell + PAD), (255, 255, 255))


def _tint(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """image (h, w, 3) uint8, labels (h, w) int (-1 = leave as is), colours (N, 3) -> tinted uint8."""
    out = image.astype(np.float32)
    inside = labels >= 0
    out[inside] = (1 - alpha) * out[inside] + alpha * colours[labels[inside]]
    return out.clip(0, 255).astype(np.uint8)


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """(h, w) bool: pixels whose right or lower neighbour has another label."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    edge[:-1, :] |= labels[1:, :] != labels[:-1, :]
    return edge


def panoptic_panel(q: ImageQueries, pan: Mapping, table: pd.DataFrame, selected: int | None = None,
                   cell: int = 300) -> np.ndarray:
    """(H, W, 3) uint8: the panoptic view (module docstring). `table` is `segment_table(q, pan)`; `selected` a
    segment id (None: cell 1 shows the image)."""
    layout = _layout(q, 2, cell)
    canvas = _canvas(layout)
    ids = fit(pan["panoptic_seg"], layout)
    image = fit(q.image, layout)
    order = {s["id"]: n for n, s in enumerate(pan["segments_info"])}
    lookup = np.full(int(ids.max(initial=0)) + 1, -1, dtype=np.int64)  # segment id -> its colour index
    for sid, n in order.items():
        lookup[sid] = n
    colours = np.array([segment_colour(n) for n in range(max(1, len(order)))], dtype=np.float32)
    labels = lookup[ids]
    tinted = _tint(image, labels, colours)
    edge = _boundaries(ids)
    tinted[edge & (labels >= 0)] = colours[labels[edge & (labels >= 0)]].astype(np.uint8)
    canvas.paste(Image.fromarray(tinted), layout.origin(0, 0))
    things = int((table["kind"] == "thing").sum()) if len(table) else 0
    _title(canvas, layout, 0, 0, f"{len(table)} segments: {things} things, {len(table) - things} stuff\n"
                                 f"void {100 * float((ids == 0).mean()):.0f}%")
    spot = image.astype(np.float32)
    if selected is not None and selected in table.index:
        mask = ids == selected
        spot[~mask] *= 0.3
        spot = spot.clip(0, 255).astype(np.uint8)
        spot[outline(mask)] = YELLOW
        row = table.loc[selected]
        values = " ".join(f"{n}={row[n]}" for n in q.attribute_names if row[n] != "n/a")
        _title(canvas, layout, 0, 1, f"segment {selected}: {row['category']} ({row['kind']}) {row['score']:.2f} "
                                     f"q{int(row['query'])}\n{values}")
    else:
        _title(canvas, layout, 0, 1, "no segment selected")
    canvas.paste(Image.fromarray(spot.astype(np.uint8)), layout.origin(0, 1))
    return np.asarray(canvas)


def semantic_panel(q: ImageQueries, scores: np.ndarray, labels: np.ndarray, votes: pd.DataFrame,
                   pixel: tuple[int, int] | None = None, top: int = 4, cell: int = 150) -> np.ndarray:
    """(H, W, 3) uint8: the semantic view (module docstring). scores (C, H, W) and labels (H, W) are
    `semantic_scores` / `semantic_labels`; votes is `pixel_votes` or `class_votes` (its attrs name the class);
    the `top` queries with the largest contributions get a cell each (queries contributing nothing are left
    out)."""
    category = int(votes.attrs["category"])
    shown = [int(i) for i in votes.index[:top] if votes.loc[i, "contribution"] > 0]
    layout = _layout(q, 2 + top, cell)
    canvas = _canvas(layout)
    draw = ImageDraw.Draw(canvas)
    small = fit(labels, layout)
    colours = np.array([segment_colour(c) for c in range(scores.shape[0])], dtype=np.float32)
    image = _tint(fit(q.image, layout), small, colours, alpha=0.35)
    region = small == category
    image[outline(region)] = YELLOW
    canvas.paste(Image.fromarray(image), layout.origin(0, 0))
    name = votes.attrs["category_name"]
    if pixel is not None:
        (x0, y0), (h, w) = layout.origin(0, 0), q.image.shape[:2]
        py, px = layout.image_size
        cy, cx = y0 + (pixel[0] + 0.5) * py / h, x0 + (pixel[1] + 0.5) * px / w
        draw.line([cx - 5, cy, cx + 5, cy], fill=RED, width=2)
        draw.line([cx, cy - 5, cx, cy + 5], fill=RED, width=2)
    where = f"pixel ({pixel[0]}, {pixel[1]})" if pixel is not None else "region"
    _title(canvas, layout, 0, 0, f"{where}: {name}\n{100 * float((labels == category).mean()):.0f}% of the image")
    class_map = scores[category]
    vmax = max(float(class_map.max()), 1e-6)
    canvas.paste(Image.fromarray(colour_lut("magma")[levels(fit(class_map, layout) / vmax)]), layout.origin(0, 1))
    _title(canvas, layout, 0, 1, f"score of {name}\n(sum over queries, max {vmax:.2f})")
    if shown:
        logits = q._to_image_size(q.stage_mask_logits_low[-1][shown])
        p_class = votes.loc[shown, f"p_{name}"].to_numpy()
        for k, (query, vote) in enumerate(zip(shown, _sigmoid(fit(logits, layout)) * p_class[:, None, None])):
            canvas.paste(Image.fromarray(colour_lut("magma")[levels(vote / vmax)]), layout.origin(0, 2 + k))
            _title(canvas, layout, 0, 2 + k, f"q{query} ({votes.loc[query, 'class']})\n"
                                             f"{100 * votes.loc[query, 'share']:.0f}% of {name} "
                                             + ("here" if pixel is not None else "in its region"))
    return np.asarray(canvas)
