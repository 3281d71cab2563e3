"""Panoptic segments and semantic regions drawn as the instance overlays draw instances (overlay.py).

A panoptic segment becomes one tinted, captioned region ("sky tone=dark .91 q3"); a semantic prediction one
region per class present in its argmax ("road"). Attributes the model gave no value (-1: its no-object slot won)
show as "-".
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from workbench.drawing.overlay import _numpy


def _value_text(value, vocab: Sequence[str]) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(vocab[int(v)] for v in value) or "-"
    return vocab[int(value)] if int(value) >= 0 else "-"


def panoptic_regions(pred: Mapping, categories: Sequence[str], attributes: Mapping[str, Sequence[str]]
                     ) -> tuple[dict, list[str]]:
    """`model.predict(..., tasks="panoptic")`'s dict -> ({"masks": (S, H, W) bool}, one caption per segment)."""
    ids = _numpy(pred["panoptic_seg"])
    segments = list(pred["segments_info"])
    masks = np.stack([ids == s["id"] for s in segments]) if segments else np.zeros((0, *ids.shape), bool)
    captions = []
    for s in segments:
        values = [_value_text(s["attributes"][name], vocab) for name, vocab in attributes.items()
                  if name in s.get("attributes", {})]
        text = f"{categories[int(s['category_id'])]} {'/'.join(values)} {float(s['score']):.2f} q{s['query_index']}"
        captions.append(text.replace("  ", " "))
    return {"masks": masks}, captions


def semantic_regions(pred: Mapping, categories: Sequence[str]) -> tuple[dict, list[str]]:
    """`model.predict(..., tasks="semantic")`'s dict -> ({"masks": one (H, W) bool per class present}, names)."""
    labels = _numpy(pred["sem_seg"]).argmax(0)
    present = [int(c) for c in np.unique(labels)]
    masks = np.stack([labels == c for c in present]) if present else np.zeros((0, *labels.shape), bool)
    return {"masks": masks}, [categories[c] for c in present]
