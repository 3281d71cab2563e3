"""Panoptic segments and semantic regions drawn as the instance overlays draw instances (overlay.py).

A panoptic segment becomes one tinted, captioned region ("sky dark .91 q3"); a semantic prediction one region
per class present in its argmax ("road"). Attributes the model gave no value (-1: its no-object slot won) show as
"-". The heads predict every group for every segment, but a category may carry only some of them (the synthetic
sky / ground bands carry `tone`, the shapes `color` and `size`): with `carried` (data/carried_attributes.py,
kept in the run's categories.json) a segment shows only the groups its category's annotations label.
"""
from __future__ import annotations

from typing import Collection, Mapping, Sequence

import numpy as np

from workbench.drawing.overlay import _numpy


def _value_text(value, vocab: Sequence[str]) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(vocab[int(v)] for v in value) or "-"
    return vocab[int(value)] if int(value) >= 0 else "-"


def panoptic_regions(pred: Mapping, categories: Sequence[str], attributes: Mapping[str, Sequence[str]],
                     carried: Mapping[int, Collection[str]] | None = None) -> tuple[dict, list[str]]:
    """`model.predict(..., tasks="panoptic")`'s dict -> ({"masks": (S, H, W) bool}, one caption per segment).

    carried: {category: the attribute groups it carries}; a segment of a category listed there shows only
    those groups (a category not listed, or carried None, shows every group)."""
    ids = _numpy(pred["panoptic_seg"])
    segments = list(pred["segments_info"])
    masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *ids.shape), bool)
    carried = carried or {}
    captions = []
    for s in segments:
        shown = carried.get(int(s["category_id"]))
        values = [_value_text(s["attributes"][name], vocab) for name, vocab in attributes.items()
                  if name in s.get("attributes", {}) and (shown is None or name in shown)]
        text = f"{categories[int(s['category_id'])]} {'/'.join(values)} {float(s['score']):.2f} q{s['query_index']}"
        captions.append(text.replace("  ", " "))
    return {"masks": masks}, captions


def semantic_regions(pred: Mapping, categories: Sequence[str]) -> tuple[dict, list[str]]:
    """`model.predict(..., tasks="semantic")`'s dict -> ({"masks": one (H, W) bool per class present}, names)."""
    labels = _numpy(pred["sem_seg"]).argmax(0)
    present = [int(c) for c in np.unique(labels)]
    masks = np.stack([labels == c for c in present]) if present else np.zeros((0, *labels.shape), bool)
    return {"masks": masks}, [categories[c] for c in present]
