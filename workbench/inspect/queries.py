"""Per-query inspection of one image: what every query predicts, at every decoder layer, and what it matched.

`inspect_item(model, item)` runs the model once (`forward_raw(return_aux=True, return_attention=True)`), runs
the Hungarian matcher against the item's ground truth when it has some, and keeps everything as numpy in an
`ImageQueries`. The plain functions below turn that into what the inspector widget shows:

    query_table(q, ...)      one row per query: main class and attribute top-1 with probabilities (including
                             each head's no-object), mask score, ranking scores, matched GT and IoU, duplicate
                             flags and whether the query survives the score threshold / duplicate suppression
    distributions(q, i)      the full main and attribute distributions of query i, no-object included
    layer_masks(q, i)        query i's mask probability after every decoder stage
    attention_masks(q, i)    which positions query i's next cross-attention may look at, per stage

The kept set comes from `engine.scoring.select_instances`, the same code evaluation uses, so what the
inspector keeps is what COCOeval would see.
"""
from __future__ import annotations

from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from workbench.config import EvalConfig
from workbench.drawing.overlay import value_set_text
from workbench.engine.scoring import (
    encode_masks,
    iou_from_intersections,
    pairwise_mask_intersections,
    ranking_scores,
    select_instances,
)
from workbench.model.meta_arch import pad_images
from workbench.model.postprocess import _masks_and_scores, resize_mask_logits

__all__ = [
    "NO_OBJECT",
    "ImageQueries",
    "attention_masks",
    "distributions",
    "duplicate_flags",
    "inspect_item",
    "layer_masks",
    "outline",
    "query_prediction",
    "query_table",
]

NO_OBJECT = "no object"


@dataclass
class ImageQueries:
    """One image as the model sees it, query by query. Q queries, L decoder layers, C classes, T targets.

    image            (H, W, 3) uint8, the image fed to the model
    categories       C names; attribute_values {name: K_name value names}
    class_probs      (Q, C+1) softmax, last column = no object
    attribute_probs  {name: (Q, K+1)} softmax, last column = that head's no object; a multi-label group
                     (named in `multi_label`, with its threshold) is {name: (Q, K)} sigmoid, no no-object column
    stage_mask_logits_low (L+1, Q, h, w) float32 as the model predicts them (stride 4 of the padded input of
                     size `padded_size`); stage 0 = the learnable queries before the first layer, stage L = the
                     final prediction. At image size: `mask_logits` (final, all queries), `stage_logits(i)` (one
                     query, all stages) or `stage_mask_logits` (everything: (L+1) x Q x H x W floats, ~1 GB
                     at 512^2 and 100 queries, which is why only the low-resolution stack is kept)
    stage_attention  L+1 arrays (Q, h_s, w_s) bool: True = position masked out for the cross-attention of the
                     layer after stage s (the last one would feed a layer the model does not have)
    gt               None or {"labels": (T,), "masks": (T, H, W) bool, "attributes": {name: (T,)}}
    matched_gt       (Q,) int64, the target each query was matched to by the model's matcher, -1 = unmatched
    """

    image: np.ndarray
    categories: list[str]
    attribute_values: dict[str, list[str]]
    class_probs: np.ndarray
    attribute_probs: dict[str, np.ndarray]
    stage_mask_logits_low: np.ndarray
    padded_size: tuple[int, int]
    stage_attention: list[np.ndarray]
    gt: dict[str, Any] | None = None
    matched_gt: np.ndarray | None = None
    image_id: Any = None
    multi_label: dict[str, float] = field(default_factory=dict)  # multi-label group -> its threshold
    # raw final logits (Q, C+1), {name: (Q, K+1) | (Q, K)} for inspect/segments.py (None: from the probabilities)
    class_logits: np.ndarray | None = None
    attribute_logits: dict[str, np.ndarray] | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_queries(self) -> int:
        return self.class_probs.shape[0]

    @property
    def num_stages(self) -> int:
        return self.stage_mask_logits_low.shape[0]

    def _cached(self, key: str, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _to_image_size(self, logits: np.ndarray) -> np.ndarray:
        """(K, h, w) low-resolution logits -> (K, H, W) at image size, as postprocessing resizes them."""
        size = tuple(self.image.shape[:2])
        return resize_mask_logits(torch.from_numpy(np.ascontiguousarray(logits)), self.padded_size, size,
                                  size).numpy()

    def stage_logits(self, query: int) -> np.ndarray:
        """(L+1, H, W) float32 mask logits of one query after every stage, at image size (resized alone: equal to
        `stage_mask_logits[:, query]` to float rounding, ~1e-7)."""
        return self._to_image_size(self.stage_mask_logits_low[:, query])

    @property
    def stage_mask_logits(self) -> np.ndarray:
        """(L+1, Q, H, W) float32 every stage's mask logits at image size (large: see the class docstring)."""
        return np.stack([self._to_image_size(s) for s in self.stage_mask_logits_low])

    @property
    def attribute_names(self) -> list[str]:
        return list(self.attribute_probs)

    @property
    def mask_logits(self) -> np.ndarray:
        """(Q, H, W) final-stage mask logits at image size (computed once, when asked: masks and scores do not
        need them)."""
        return self._cached("mask_logits", lambda: self._to_image_size(self.stage_mask_logits_low[-1]))

    def _final(self) -> tuple[np.ndarray, np.ndarray]:
        """(masks (Q, H, W) bool, mask scores (Q,)) by the postprocessing's own code: the same numbers as the
        model's predictions, a cache-sized chunk of queries at a time (no Q x H x W float temporaries)."""
        def compute():
            size = tuple(self.image.shape[:2])
            masks, scores = _masks_and_scores(torch.from_numpy(self.stage_mask_logits_low[-1]),
                                              torch.arange(self.num_queries), self.padded_size, size, size)
            return masks.numpy(), scores.numpy().astype(np.float64)
        return self._cached("final", compute)

    @property
    def masks(self) -> np.ndarray:
        """(Q, H, W) bool final masks (logit > 0, as postprocessing)."""
        return self._final()[0]

    @property
    def mask_scores(self) -> np.ndarray:
        """(Q,) mean foreground probability inside each mask (upstream's mask score; 0 for an empty mask)."""
        return self._final()[1]

    @property
    def mask_areas(self) -> np.ndarray:
        """(Q,) pixels in each final mask (the diagonal of the pairwise intersections, counted anyway)."""
        return self._cached("mask_areas", lambda: self._intersections().diagonal().copy())

    def _intersections(self) -> np.ndarray:
        """(Q, Q) int64 pixel counts of final mask pairs (`engine.scoring.pairwise_mask_intersections`)."""
        return self._cached("intersections", lambda: pairwise_mask_intersections(self.masks))

    @property
    def outlines(self) -> np.ndarray:
        """(Q, H, W) bool boundary pixels of each final mask (see `outline`)."""
        return self._cached("outlines", lambda: outline(self.masks))

    @property
    def rles(self) -> list:
        """Q COCO RLEs of the final masks (all of them: `query_table` encodes only those it needs)."""
        return self._cached("rles", lambda: list(self._lazy_rles()))

    def _lazy_rles(self) -> "_LazyRles":
        return self._cached("lazy_rles", lambda: _LazyRles(self.masks))

    @property
    def pairwise_iou(self) -> np.ndarray:
        """(Q, Q) mask IoU between the queries' final masks (= mask_iou(rles, rles), from pixel counts)."""
        return self._cached("pairwise_iou", lambda: iou_from_intersections(self._intersections()))

    @property
    def matched_iou(self) -> np.ndarray:
        """(Q,) mask IoU between each matched query's final mask and its target; NaN where unmatched."""
        return self._cached("matched_iou", self._matched_iou).copy()

    def _matched_iou(self) -> np.ndarray:
        out = np.full(self.num_queries, np.nan)
        if self.gt is None or self.matched_gt is None:
            return out
        gt = np.asarray(self.gt["masks"], dtype=bool)
        for q in np.flatnonzero(self.matched_gt >= 0):  # integer counts divided as pycocotools' mask IoU does
            a, b = self.masks[q], gt[self.matched_gt[q]]
            inter = int(np.count_nonzero(a & b))
            out[q] = inter / (int(np.count_nonzero(a)) + int(np.count_nonzero(b)) - inter) if inter else 0.0
        return out


class _LazyRles(SequenceABC):
    """The RLEs of (Q, H, W) masks, each encoded when first read and kept: `select_instances` reads only the
    candidates' (those above the score threshold), so an image switch encodes a few masks instead of Q."""

    def __init__(self, masks: np.ndarray) -> None:
        self._masks = masks
        self._rles: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self._masks)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = range(len(self))[index]  # an int or numpy integer, negative ones too; IndexError past the end
        if i not in self._rles:
            self._rles[i] = encode_masks(self._masks[i:i + 1])[0]
        return self._rles[i]


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask (..., H, W): inside pixels with an outside 4-neighbour."""
    pad = [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)]
    m = np.pad(mask, pad)
    inner = (m[..., 1:-1, 1:-1] & m[..., :-2, 1:-1] & m[..., 2:, 1:-1] & m[..., 1:-1, :-2] & m[..., 1:-1, 2:])
    return mask & ~inner


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _names(model, categories, attribute_values) -> tuple[list[str], dict[str, list[str]]]:
    cfg = model.cfg
    if categories is None:
        categories = [f"class{i}" for i in range(cfg.num_classes)]
    if attribute_values is None:
        attribute_values = {a.name: list(a.values) for a in cfg.attributes}
    if len(categories) != cfg.num_classes:
        raise ValueError(f"{len(categories)} category names for a model with num_classes={cfg.num_classes}")
    for a in cfg.attributes:
        if len(attribute_values.get(a.name, ())) != a.num_values:
            raise ValueError(f"attribute {a.name!r}: expected {a.num_values} value names, got "
                             f"{attribute_values.get(a.name)}")
    return list(categories), {k: list(v) for k, v in attribute_values.items()}


@torch.no_grad()
def inspect_item(model, item: Mapping[str, Any], categories: Sequence[str] | None = None,
                 attribute_values: Mapping[str, Sequence[str]] | None = None, match: bool = True,
                 seed: int = 0) -> ImageQueries:
    """Run `model` on one dataset item {"image": uint8 (3, H, W), "instances": ... (optional)}.

    Masks are brought to the item's image size, so they line up with the item's ground-truth masks. With
    `match` and instances present, the model's own matcher (its configured costs, point sampling seeded by
    `seed`) assigns queries to targets exactly as in training. The model's train/eval mode is restored.
    """
    categories, attribute_values = _names(model, categories, attribute_values)
    multi = {a.name: a.threshold for a in model.cfg.attributes if a.multi}
    image = torch.as_tensor(item["image"])
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"item['image'] must be (3, H, W), got {tuple(image.shape)}")
    was_training = model.training
    switch_mode = any(m.training for m in model.modules())  # eval() then train() walks every module: skip it
    if switch_mode:
        model.eval()
    try:
        padded = pad_images([image.to(model.device)], model.cfg.size_divisibility, model.cfg.pixel_mean)
        raw = model.forward_raw(padded, return_aux=True, return_attention=True)
        matched = None
        gt = None
        if item.get("instances") is not None:
            inst = item["instances"]
            gt = {"labels": np.asarray(torch.as_tensor(inst["labels"]).cpu()),
                  "masks": np.asarray(torch.as_tensor(inst["masks"]).bool().cpu()),
                  "attributes": {n: np.asarray(torch.as_tensor(v).cpu())
                                 for n, v in inst.get("attributes", {}).items()}}
            if match:
                targets = model.targets([item], tuple(padded.shape[-2:]))
                rows, cols = model.criterion.matcher(raw, targets, generator=torch.Generator(
                    device=model.device).manual_seed(seed))[0]
                matched = np.full(raw.num_queries, -1, dtype=np.int64)
                matched[rows.numpy()] = cols.numpy()
    finally:
        if switch_mode:
            model.train(was_training)
    stages = list(raw.aux) + [raw]
    padded_size = tuple(int(s) for s in padded.shape[-2:])
    logits = torch.stack([s.mask_logits[0].float().cpu() for s in stages]).numpy()  # resized on demand
    attention = [s.attention_mask[0].cpu().numpy() if s.attention_mask is not None else None for s in stages]
    return ImageQueries(
        image=image.permute(1, 2, 0).cpu().numpy().astype(np.uint8),
        categories=categories,
        attribute_values=attribute_values,
        class_probs=raw.class_logits[0].float().softmax(-1).cpu().numpy().astype(np.float64),
        attribute_probs={n: (v[0].float().sigmoid() if n in multi else v[0].float().softmax(-1)).cpu().numpy()
                         .astype(np.float64) for n, v in raw.attribute_logits.items()},
        stage_mask_logits_low=logits,
        padded_size=padded_size,
        stage_attention=attention,
        gt=gt,
        matched_gt=matched,
        image_id=item.get("image_id"),
        multi_label=multi,
        class_logits=raw.class_logits[0].float().cpu().numpy(),
        attribute_logits={n: v[0].float().cpu().numpy() for n, v in raw.attribute_logits.items()},
    )


def query_prediction(q: ImageQueries) -> dict[str, Any]:
    """All Q queries as one numpy prediction dict (the keys `instance_inference` returns), each query with
    its top real class: what `engine.scoring` ranks, thresholds and deduplicates. Computed once per image
    (no control of the inspector changes it); treat it as read-only."""
    return q._cached("prediction", lambda: _query_prediction(q))


def _query_prediction(q: ImageQueries) -> dict[str, Any]:
    real = q.class_probs[:, :-1]
    labels = real.argmax(1)
    class_scores = real.max(1)
    mask_scores = q.mask_scores
    attributes, attribute_scores, attribute_no_object = {}, {}, {}
    attribute_probs, attribute_sets = {}, {}
    for name, probs in q.attribute_probs.items():
        if name in q.multi_label:  # as model/postprocess.instance_inference
            chosen = probs > q.multi_label[name]
            attribute_probs[name], attribute_sets[name] = probs, chosen
            attribute_scores[name] = np.where(chosen, probs, 1 - probs).mean(1)
            continue
        attributes[name] = probs[:, :-1].argmax(1)
        attribute_scores[name] = probs[:, :-1].max(1)
        attribute_no_object[name] = probs[:, -1]
    out = {
        "masks": q.masks,
        "scores": class_scores * mask_scores,
        "labels": labels,
        "class_scores": class_scores,
        "mask_scores": mask_scores,
        "query_index": np.arange(q.num_queries),
        "attributes": attributes,
        "attribute_scores": attribute_scores,
        "attribute_no_object": attribute_no_object,
    }
    if q.multi_label:
        out["attribute_probs"], out["attribute_sets"] = attribute_probs, attribute_sets
    return out


def duplicate_flags(pairwise_iou: np.ndarray, scores: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the higher-ranked query its mask overlaps most, if that IoU >= iou_threshold.

    pairwise_iou (Q, Q), scores (Q,) ranking scores -> (duplicate_of (Q,) int64 with -1 = none,
    overlap (Q,) the max IoU with any higher-ranked query, 0 for the top one). Ties keep query order.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    duplicate_of = np.full(len(order), -1, dtype=np.int64)
    overlap = np.zeros(len(order))
    for rank, qi in enumerate(order):
        if rank == 0:
            continue
        above = order[:rank]
        best = above[np.argmax(pairwise_iou[qi, above])]
        overlap[qi] = pairwise_iou[qi, best]
        if overlap[qi] >= iou_threshold:
            duplicate_of[qi] = best
    return duplicate_of, overlap


def query_table(q: ImageQueries, scoring: str = "mean", score_threshold: float = 0.0,
                duplicate_iou: float | None = 0.8, drop_no_object: bool = False) -> pd.DataFrame:
    """One row per query (index "query"), ranked by `scoring` (see `EvalConfig`), best first.

    Columns: class, p_class (its probability), p_no_object (the class head's), then per attribute <name>,
    p_<name>, p_<name>_no_object (a multi-label group: <name> = the predicted set, "stripes+dots" or "-",
    and p_<name> = the mean probability of its per-value decisions); mask_score, mask_area (pixels), score (class x mask, upstream's),
    combined (the `scoring` ranking score), rank (1 = best), matched_gt (target index, -1 = unmatched or no
    GT), gt_class, iou (with the matched target), duplicate_of (-1 = none), overlap (max IoU with a
    higher-ranked query), duplicate (overlap >= duplicate_iou), kept (survives `select_instances` with this
    threshold, no-object filter and duplicate suppression).
    """
    pred = query_prediction(q)
    names = q.attribute_names
    single = [n for n in names if n not in q.multi_label]
    combined = ranking_scores(pred, scoring, names)
    frame = pd.DataFrame(index=pd.RangeIndex(q.num_queries, name="query"))
    frame["class"] = [q.categories[i] for i in pred["labels"]]
    frame["p_class"] = pred["class_scores"]
    frame["p_no_object"] = q.class_probs[:, -1]
    for name in names:
        values = q.attribute_values[name]
        if name in q.multi_label:
            frame[name] = [value_set_text(values, row) for row in pred["attribute_sets"][name]]
            frame[f"p_{name}"] = pred["attribute_scores"][name]
            continue
        frame[name] = [values[i] for i in pred["attributes"][name]]
        frame[f"p_{name}"] = pred["attribute_scores"][name]
        frame[f"p_{name}_no_object"] = pred["attribute_no_object"][name]
    frame["mask_score"] = pred["mask_scores"]
    frame["mask_area"] = q.mask_areas
    frame["score"] = pred["scores"]
    frame["combined"] = combined
    frame["rank"] = pd.Series(combined).rank(ascending=False, method="first").astype(int).to_numpy()
    matched = q.matched_gt if q.matched_gt is not None else np.full(q.num_queries, -1)
    frame["matched_gt"] = matched
    frame["gt_class"] = [q.categories[int(q.gt["labels"][t])] if t >= 0 and q.gt is not None else ""
                         for t in matched]
    frame["iou"] = q.matched_iou
    threshold = 1.0 if duplicate_iou is None else duplicate_iou
    duplicate_of, overlap = duplicate_flags(q.pairwise_iou, combined, threshold)
    frame["duplicate_of"] = duplicate_of if duplicate_iou is not None else -1
    frame["overlap"] = overlap
    frame["duplicate"] = frame["duplicate_of"] >= 0
    eval_cfg = EvalConfig(scoring=scoring, dedupe_iou=duplicate_iou, score_threshold=score_threshold,
                          drop_no_object=drop_no_object, max_dets=max(1, q.num_queries))
    kept = select_instances(pred, eval_cfg, single, [n for n in names if n in q.multi_label],
                            rles=q._lazy_rles(), pairwise_iou=q.pairwise_iou).index
    frame["kept"] = np.isin(np.arange(q.num_queries), kept)
    return frame.sort_values("rank")


def distributions(q: ImageQueries, query: int) -> dict[str, pd.Series]:
    """{"class": (C+1,), <attribute>: (K+1,)} probability Series of one query, labelled, no-object last; a
    multi-label group is (K,) independent probabilities (compare each with `q.multi_label[name]`)."""
    out = {"class": pd.Series(q.class_probs[query], index=[*q.categories, NO_OBJECT], name="class")}
    for name, probs in q.attribute_probs.items():
        if name in q.multi_label:
            out[name] = pd.Series(probs[query], index=list(q.attribute_values[name]), name=name)
            continue
        out[name] = pd.Series(probs[query], index=[*q.attribute_values[name], NO_OBJECT], name=name)
    return out


def layer_masks(q: ImageQueries, query: int) -> np.ndarray:
    """(L+1, H, W) mask probability of one query after each stage (0 = learnable queries, L = final)."""
    return _sigmoid(q.stage_logits(query))


def attention_masks(q: ImageQueries, query: int) -> list[np.ndarray | None]:
    """Per stage, (h_s, w_s) bool: True = the position the *next* layer's cross-attention may look at.

    This is the complement of the model's attention mask (True = masked out). A query whose mask blocks
    every position attends everywhere instead (the decoder's guard), which is shown as all True.
    """
    out = []
    for att in q.stage_attention:
        if att is None:
            out.append(None)
            continue
        allowed = ~att[query]
        out.append(np.ones_like(allowed) if not allowed.any() else allowed)
    return out
