"""Panoptic segments and semantic class votes of one inspected image, from its cached forward (no model run).

The inspector's query views answer "what does query i predict"; these answer the questions of the other two
tasks, with the model's own post-processing run on the logits `inspect_item` kept:

    panoptic_result(q, ...)    `panoptic_inference` on the final logits: segment ids (H, W) and segments_info
                               (things and stuff, each with its query, score and attribute predictions)
    segment_table(q, pan)      one row per segment: category, thing/stuff, score, query, area, attributes
    semantic_scores(q)         `semantic_inference`'s (C, H, W) class scores, and `semantic_labels` its argmax
    pixel_votes(q, y, x, c)    how each query adds to class c's score at pixel (y, x): softmax(class)[q, c] x
                               sigmoid(mask_q)(y, x), the terms semantic inference sums
    class_votes(q, c)          the same summed over the pixels labelled c: which queries make up that region

Everything is computed once per image and setting (cached on the `ImageQueries`), except `pixel_votes`, which
interpolates the Q mask logits at one pixel only (O(Q), no (Q, H, W) array), so a click answers at once.
"""
from __future__ import annotations

from typing import Collection, Mapping

import numpy as np
import pandas as pd
import torch

from workbench.drawing.overlay import value_set_text
from workbench.inspect.queries import ImageQueries
from workbench.model.panoptic_inference import panoptic_inference
from workbench.model.postprocess import _mask_chunks, resize_mask_logits
from workbench.model.semantic_inference import semantic_inference

__all__ = ["class_votes", "panoptic_result", "pixel_mask_logits", "pixel_votes", "region_mask_sums",
           "segment_table", "semantic_labels", "semantic_scores"]


def _class_logits(q: ImageQueries) -> torch.Tensor:
    """(Q, C+1) the final class logits (log-probabilities when the inspection kept none: same softmax)."""
    if q.class_logits is not None:
        return torch.from_numpy(np.ascontiguousarray(q.class_logits, dtype=np.float32))
    return torch.from_numpy(np.log(np.maximum(q.class_probs, 1e-300)).astype(np.float32))


def _attribute_logits(q: ImageQueries) -> dict[str, torch.Tensor]:
    if q.attribute_logits is not None:
        return {n: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for n, v in q.attribute_logits.items()}
    out = {}
    for name, probs in q.attribute_probs.items():  # sigmoid^-1 for multi-label groups, log for softmax heads
        p = np.clip(probs, 1e-12, 1 - 1e-12)
        out[name] = torch.from_numpy((np.log(p / (1 - p)) if name in q.multi_label else np.log(p)).astype(np.float32))
    return out


def _size(q: ImageQueries) -> tuple[int, int]:
    return tuple(int(s) for s in q.image.shape[:2])


def panoptic_result(q: ImageQueries, stuff_classes: Collection[int] = (), object_mask_threshold: float = 0.8,
                    overlap_threshold: float = 0.8) -> dict:
    """{"panoptic_seg": int32 (H, W) segment ids (0 = void), "segments_info": [...]} at the image's size, as
    `model.predict(..., tasks="panoptic")` gives them for this image; cached per setting."""
    stuff = tuple(sorted(int(c) for c in stuff_classes))
    key = f"panoptic_{stuff}_{object_mask_threshold}_{overlap_threshold}"

    def compute():
        size = _size(q)
        out = panoptic_inference(_class_logits(q), _attribute_logits(q),
                                 torch.from_numpy(q.stage_mask_logits_low[-1]), q.padded_size, size, size,
                                 stuff_classes=stuff, object_mask_threshold=object_mask_threshold,
                                 overlap_threshold=overlap_threshold, multi_label=q.multi_label)
        return {"panoptic_seg": out["panoptic_seg"].numpy(), "segments_info": out["segments_info"]}
    return q._cached(key, compute)


def _value_text(value, vocab) -> str:
    if isinstance(value, list):
        return value_set_text(vocab, np.isin(np.arange(len(vocab)), value))
    return vocab[value] if value >= 0 else "-"


def segment_table(q: ImageQueries, pan: dict, carried: Mapping[int, Collection[str]] | None = None
                  ) -> pd.DataFrame:
    """One row per panoptic segment (index "segment" = its id in panoptic_seg), in id order.

    Columns: category, kind ("thing" / "stuff"), score (the class probability of its query), query (the query
    it comes from; a stuff class's later queries join the first one's segment), area (pixels), then per
    attribute <name> (the value, "-" when the head's no-object won; a multi-label group: "stripes+dots") and
    p_<name> (that value's probability; a multi-label group: the mean probability of its chosen values, NaN for
    none). carried {category: groups}: a group its category does not carry is "n/a" (NaN probability); the
    query view still shows what the head predicts."""
    ids = pan["panoptic_seg"]
    areas = np.bincount(ids.ravel(), minlength=max([s["id"] for s in pan["segments_info"]], default=0) + 1)
    rows = []
    for s in pan["segments_info"]:
        row = {"segment": s["id"], "category": q.categories[s["category_id"]],
               "kind": "thing" if s["isthing"] else "stuff", "score": s["score"], "query": s["query_index"],
               "area": int(areas[s["id"]])}
        shown = (carried or {}).get(int(s["category_id"]))
        for name in q.attribute_names:
            if shown is not None and name not in shown:
                row[name], row[f"p_{name}"] = "n/a", np.nan
                continue
            value, score = s["attributes"][name], s["attribute_scores"][name]
            row[name] = _value_text(value, q.attribute_values[name])
            row[f"p_{name}"] = (float(np.mean(score)) if score else np.nan) if isinstance(score, list) else score
        rows.append(row)
    columns = ["category", "kind", "score", "query", "area"]
    for name in q.attribute_names:
        columns += [name, f"p_{name}"]
    frame = pd.DataFrame(rows, columns=["segment", *columns])
    return frame.set_index("segment")


def semantic_scores(q: ImageQueries) -> np.ndarray:
    """(C, H, W) float32 `semantic_inference`'s class scores at the image's size (computed once per image)."""
    def compute():
        size = _size(q)
        return semantic_inference(_class_logits(q), torch.from_numpy(q.stage_mask_logits_low[-1]), q.padded_size,
                                  size, size)["sem_seg"].numpy()
    return q._cached("sem_seg", compute)


def semantic_labels(q: ImageQueries) -> np.ndarray:
    """(H, W) int64 the semantic label map (argmax of `semantic_scores`)."""
    return q._cached("sem_labels", lambda: semantic_scores(q).argmax(0))


def _class_probs(q: ImageQueries) -> np.ndarray:
    """(Q, C) float32 softmax over C+1, no-object dropped: semantic inference's per-query class votes."""
    return q._cached("sem_class_probs", lambda: _class_logits(q).softmax(-1)[:, :-1].numpy())


def _bilinear_taps(out_index: int, out_size: int, in_size: int) -> tuple[int, int, float, float]:
    """The two source indices and weights of `F.interpolate(mode="bilinear", align_corners=False)` for one
    output row or column (source = (i + 0.5) * in / out - 0.5, clamped at 0)."""
    src = max((out_index + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = int(src)
    i1 = i0 + 1 if i0 < in_size - 1 else i0
    w1 = src - i0
    return i0, i1, 1.0 - w1, w1


def pixel_mask_logits(q: ImageQueries, y: int, x: int) -> np.ndarray:
    """(Q,) float32 every query's final mask logit at image pixel (y, x), interpolated as `resize_mask_logits`
    does (up to the padded input; the image is its top-left corner) but at that pixel only."""
    h, w = _size(q)
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"pixel (y={y}, x={x}) is outside the {h} x {w} image")
    low = q.stage_mask_logits_low[-1]
    r0, r1, a0, a1 = _bilinear_taps(y, q.padded_size[0], low.shape[-2])
    c0, c1, b0, b1 = _bilinear_taps(x, q.padded_size[1], low.shape[-1])
    return (a0 * (b0 * low[:, r0, c0] + b1 * low[:, r0, c1]) + a1 * (b0 * low[:, r1, c0] + b1 * low[:, r1, c1])
            ).astype(np.float32)


def _votes_frame(q: ImageQueries, category: int, p_class: np.ndarray, mask: np.ndarray, mask_name: str
                 ) -> pd.DataFrame:
    contribution = p_class * mask
    total = float(contribution.sum())
    real = q.class_probs[:, :-1]
    frame = pd.DataFrame({
        "class": [q.categories[i] for i in real.argmax(1)],  # the query's own top class
        f"p_{q.categories[category]}": p_class,
        mask_name: mask,
        "contribution": contribution,
        "share": contribution / total if total > 0 else np.zeros_like(contribution),
    }, index=pd.RangeIndex(q.num_queries, name="query"))
    frame = frame.sort_values("contribution", ascending=False, kind="mergesort")
    frame["cumulative"] = frame["share"].cumsum()
    frame.attrs.update(category=category, category_name=q.categories[category], total=total)
    return frame


def pixel_votes(q: ImageQueries, y: int, x: int, category: int | None = None) -> pd.DataFrame:
    """How the queries make up class `category` (default: the pixel's semantic label) at pixel (y, x).

    One row per query (index "query"), largest contribution first: class (the query's own top class),
    p_<category> (its softmax class probability), p_mask (its mask probability at the pixel), contribution
    (their product: the term semantic inference sums), share (of the pixel's class score), cumulative.
    attrs: category, category_name, total (= semantic_scores(q)[category, y, x] to float rounding), pixel."""
    category = int(semantic_labels(q)[y, x]) if category is None else int(category)
    p_mask = 1.0 / (1.0 + np.exp(-pixel_mask_logits(q, y, x).astype(np.float64)))
    frame = _votes_frame(q, category, _class_probs(q)[:, category].astype(np.float64), p_mask, "p_mask")
    frame.attrs["pixel"] = (int(y), int(x))
    return frame


def region_mask_sums(q: ImageQueries) -> np.ndarray:
    """(Q, C) float64: each query's mask probability summed over the pixels labelled with each class (the
    semantic label map), a chunk of queries at a time (no (Q, H, W) array kept); computed once per image."""
    def compute():
        size = _size(q)
        labels = torch.from_numpy(semantic_labels(q).reshape(-1))
        num_classes = q.class_probs.shape[1] - 1
        low = torch.from_numpy(q.stage_mask_logits_low[-1])
        out = torch.zeros((q.num_queries, num_classes), dtype=torch.float64)
        for chunk in _mask_chunks(q.num_queries, max(q.padded_size[0] * q.padded_size[1], size[0] * size[1]),
                                  low.device):
            probs = resize_mask_logits(low[chunk].float(), q.padded_size, size, size).sigmoid_().flatten(1)
            out[chunk].index_add_(1, labels, probs.double())
        return out.numpy()
    return q._cached("region_mask_sums", compute)


def class_votes(q: ImageQueries, category: int) -> pd.DataFrame:
    """How the queries make up the region labelled `category`: `pixel_votes`'s columns with p_mask replaced by
    mask_sum (the query's mask probability summed over the region), so contribution sums to the class's score
    summed over its region. attrs also hold area (its pixels); an empty region gives all-zero contributions."""
    category = int(category)
    area = int((semantic_labels(q) == category).sum())
    frame = _votes_frame(q, category, _class_probs(q)[:, category].astype(np.float64),
                         region_mask_sums(q)[:, category], "mask_sum")
    frame.attrs["area"] = area
    return frame
