"""Per-instance overlays: each kept query's mask, category and attributes, drawn one by one (not detectron2's
Visualizer, which draws everything in one call and cannot show per-query attributes). PIL only: the pipeline
draws a run's overlays with it, the inspector's figures build on it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
], dtype=np.float32)


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def value_set_text(values: Sequence[str], chosen) -> str:
    """A multi-label group's set (a multi-hot row, K) as text: "stripes+dots", "-" when empty. The one spelling
    shared by captions, query tables, instance tables and figures."""
    return "+".join(values[k] for k in np.flatnonzero(np.asarray(chosen))) or "-"


def instance_caption(i: int, pred: Mapping, categories: Sequence[str],
                     attributes: Mapping[str, Sequence[str]]) -> str:
    """"circle red/small .93 q7": category, attribute values, score and the query that predicted it; a
    multi-label group shows its predicted set joined by "+" ("stripes+dots"), "-" when empty."""
    label = categories[int(_numpy(pred["labels"])[i])]
    values = []
    for name, vocab in attributes.items():
        if name in pred.get("attributes", {}):
            values.append(vocab[int(_numpy(pred["attributes"][name])[i])])
        elif name in pred.get("attribute_sets", {}):
            values.append(value_set_text(vocab, _numpy(pred["attribute_sets"][name])[i]))
    score = float(_numpy(pred["scores"])[i])
    query = int(_numpy(pred["query_index"])[i]) if "query_index" in pred else i
    return f"{label} {'/'.join(values)} {score:.2f} q{query}".replace("  ", " ")


def draw_instances(image: np.ndarray, pred: Mapping, categories: Sequence[str],
                   attributes: Mapping[str, Sequence[str]], index: Sequence[int] | None = None,
                   alpha: float = 0.45, captions: Sequence[str] | None = None) -> np.ndarray:
    """image (H, W, 3) uint8 -> (H, W, 3) uint8 with each selected instance's mask tinted and captioned.

    captions: one text per instance of `pred` (default `instance_caption`), e.g. for ground truth."""
    masks = _numpy(pred["masks"]).astype(bool)
    index = range(len(masks)) if index is None else index
    canvas = image.astype(np.float32).copy()
    for n, i in enumerate(index if alpha else ()):  # alpha 0 (outlines only) leaves every pixel as it is
        colour = PALETTE[n % len(PALETTE)]
        canvas[masks[i]] = (1 - alpha) * canvas[masks[i]] + alpha * colour
    out = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for n, i in enumerate(index):
        ys, xs = np.nonzero(masks[i])
        if len(xs) == 0:
            continue
        colour = tuple(int(c) for c in PALETTE[n % len(PALETTE)])
        draw.rectangle([xs.min(), ys.min(), xs.max(), ys.max()], outline=colour)
        text = captions[i] if captions is not None else instance_caption(i, pred, categories, attributes)
        x, y = int(xs.min()), max(0, int(ys.min()) - 11)
        draw.rectangle([x, y, x + 6 * len(text), y + 10], fill=(0, 0, 0))
        draw.text((x + 1, y), text, fill=colour)
    return np.asarray(out)


def save_png(array: np.ndarray, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
