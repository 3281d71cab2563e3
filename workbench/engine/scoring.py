"""Which predicted instances are evaluated (or drawn), and in which order.

One image's prediction (the dict `model/postprocess.instance_inference` returns, torch or numpy) goes through:

    1. ranking score, by `EvalConfig.scoring` (see `ranking_scores`)
    2. score threshold on the ranking score (`score >= EvalConfig.score_threshold` is kept)
    3. `drop_no_object`: remove instances where some attribute's no-object prob > its best real value's prob
    4. duplicate suppression (`dedupe_iou`): greedy by ranking score, class-agnostic mask IoU
    5. the `max_dets` highest ranking scores are kept

Filters run before suppression so an instance that is removed anyway cannot suppress a valid one. Ties keep
the model's order (stable sort), as COCOeval's mergesort does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from workbench.config import EvalConfig

__all__ = [
    "SCORING_MODES",
    "Selection",
    "encode_masks",
    "iou_from_intersections",
    "mask_iou",
    "no_object_flags",
    "pairwise_mask_intersections",
    "pairwise_mask_iou",
    "predicted_attribute_values",
    "ranking_scores",
    "select_instances",
    "suppress_duplicates",
    "take",
    "to_numpy",
]

SCORING_MODES = ("main", "product", "mean")
_PER_INSTANCE = ("masks", "scores", "labels", "class_scores", "mask_scores", "query_index")
_PER_ATTRIBUTE = ("attributes", "attribute_scores", "attribute_no_object", "attribute_probs", "attribute_sets")


def to_numpy(prediction: Mapping[str, Any]) -> dict[str, Any]:
    """A prediction dict with every tensor (also inside the attribute dicts) as a CPU numpy array."""

    def conv(x):
        if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
            x = x.detach().cpu()
            if x.dtype.is_floating_point:
                x = x.float()
            return x.numpy()
        return np.asarray(x)

    out: dict[str, Any] = {}
    for key, value in prediction.items():
        if isinstance(value, Mapping):
            out[key] = {name: conv(v) for name, v in value.items()}
        else:
            out[key] = conv(value)
    return out


def take(prediction: Mapping[str, Any], index: np.ndarray) -> dict[str, Any]:
    """The instances `index` (int array, in that order) of a numpy prediction; other keys are copied as they are."""
    out: dict[str, Any] = {}
    for key, value in prediction.items():
        if key in _PER_ATTRIBUTE:
            out[key] = {name: np.asarray(v)[index] for name, v in value.items()}
        elif key in _PER_INSTANCE:
            out[key] = np.asarray(value)[index]
        else:
            out[key] = value
    return out


def _require(prediction: Mapping[str, Any], key: str, attribute: str | None = None) -> np.ndarray:
    if key not in prediction:
        raise KeyError(f"prediction has no {key!r} (has {sorted(prediction)})")
    if attribute is None:
        return np.asarray(prediction[key])
    if attribute not in prediction[key]:
        raise KeyError(f"prediction[{key!r}] has no attribute {attribute!r} (has {sorted(prediction[key])})")
    return np.asarray(prediction[key][attribute])


def ranking_scores(prediction: Mapping[str, Any], mode: str, attribute_names: Sequence[str]) -> np.ndarray:
    """(N,) float64 scores that rank a numpy prediction's instances.

    c = `class_scores`, m = `mask_scores`, a_i = `attribute_scores[name_i]` (prob of the predicted real value;
    for a multi-label group, the mean over its K values of the probability of the decision taken, p where the
    value is predicted and 1 - p where not -- see model/postprocess.py):
        "main"     `scores` (= c * m, upstream Mask2Former)
        "product"  `scores` * prod_i a_i
        "mean"     (c + sum_i a_i) / (1 + A) * m          (the mean of the A + 1 probabilities, times m)
    With no attributes every mode equals "main".
    """
    if mode not in SCORING_MODES:
        raise ValueError(f"scoring mode must be one of {SCORING_MODES}, got {mode!r}")
    main = _require(prediction, "scores").astype(np.float64)
    if mode == "main" or not attribute_names:
        return main
    attr = [_require(prediction, "attribute_scores", n).astype(np.float64) for n in attribute_names]
    if mode == "product":
        return main * np.prod(attr, axis=0)
    c = _require(prediction, "class_scores").astype(np.float64)
    m = _require(prediction, "mask_scores").astype(np.float64)
    return (c + np.sum(attr, axis=0)) / (1 + len(attr)) * m


def no_object_flags(prediction: Mapping[str, Any], attribute_names: Sequence[str]) -> dict[str, np.ndarray]:
    """{name: (N,) bool}: the attribute head's no-object prob strictly exceeds its best real value's prob.

    A prediction without `attribute_no_object` is an error: saying "never no-object" would hide the case.
    """
    return {
        n: _require(prediction, "attribute_no_object", n) > _require(prediction, "attribute_scores", n)
        for n in attribute_names
    }


def predicted_attribute_values(prediction: Mapping[str, Any], attribute_names: Sequence[str],
                               num_values: Mapping[str, int]) -> dict[str, np.ndarray]:
    """{name: (N,) int64}: the predicted value id, or K (= num_values[name], the head's no-object index) where
    the no-object prob wins (see `no_object_flags`). This is what accuracy and joint AP judge."""
    flags = no_object_flags(prediction, attribute_names)
    out = {}
    for n in attribute_names:
        values = _require(prediction, "attributes", n).astype(np.int64)
        out[n] = np.where(flags[n], num_values[n], values)
    return out


def encode_masks(masks: np.ndarray) -> list[dict]:
    """(N, H, W) bool -> N COCO compressed RLEs (counts as bytes, as pycocotools returns them)."""
    masks = np.asarray(masks)
    if masks.shape[0] == 0:
        return []
    masks = masks.view(np.uint8) if masks.dtype == bool else masks.astype(np.uint8)
    # pycocotools wants (H, W, N) in Fortran order: that is (N, W, H) in C order, one copy
    return mask_utils.encode(np.ascontiguousarray(masks.transpose(0, 2, 1)).transpose(2, 1, 0))


def mask_iou(rles_a: Sequence[dict], rles_b: Sequence[dict]) -> np.ndarray:
    """(N, M) float64 mask IoU between two lists of RLEs (no crowd semantics)."""
    if len(rles_a) == 0 or len(rles_b) == 0:
        return np.zeros((len(rles_a), len(rles_b)))
    return np.asarray(mask_utils.iou(list(rles_a), list(rles_b), [0] * len(rles_b)), dtype=np.float64)


def pairwise_mask_intersections(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, N) int64 pixel counts of mask_i & mask_j; the diagonal holds the areas.

    Why bits: the masks are packed 64 pixels to a word and each pair's count is the popcount of their AND, 8x
    less memory than bytes and no float copy; a float32 product (the previous way) did 32x the arithmetic and
    took ~4x longer for 100 queries at 512^2 (the inspector's image switch). Exact at any size.
    """
    masks = np.asarray(masks, dtype=bool)
    n = masks.shape[0]
    words = np.packbits(masks.reshape(n, int(np.prod(masks.shape[1:]))), axis=1)  # (N, ceil(P / 8)) bytes, zero bits past the end
    words = np.pad(words, ((0, 0), (0, -words.shape[1] % 8))).view(np.uint64)
    counts = np.zeros((n, n), dtype=np.int64)
    for i in range(n):  # row i against rows i.. (the matrix is symmetric)
        row = np.bitwise_count(words[i] & words[i:]).sum(1, dtype=np.int64)
        counts[i, i:] = row
        counts[i:, i] = row
    return counts


def iou_from_intersections(intersections: np.ndarray) -> np.ndarray:
    """(N, N) int pixel counts of mask pairs (diagonal = areas) -> (N, N) float64 IoU, 0 where they do not
    intersect (an empty mask included), the same integer division as pycocotools' `iou`."""
    inter = np.asarray(intersections)
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / np.where(union > 0, union, 1), 0.0)


def pairwise_mask_iou(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, N) float64 mask IoU, equal to the last bit to `mask_iou` on their RLEs (both divide
    the same integer counts). From dense masks (`pairwise_mask_intersections`): pycocotools walks the runs of
    every pair, which on fragmented masks (an untrained model's) takes ~1 s for 100 queries at 512^2."""
    return iou_from_intersections(pairwise_mask_intersections(masks))


def suppress_duplicates(rles: Sequence[dict], scores: np.ndarray, iou_threshold: float,
                        iou: np.ndarray | None = None) -> np.ndarray:
    """Greedy class-agnostic mask-IoU suppression. Returns the kept indices, highest score first.

    Visit instances by descending score (stable); keep one unless its IoU with an already kept instance is
    >= iou_threshold. Class-agnostic on purpose: several queries (or one query under several labels from the
    top-k over queries x classes) on one object are duplicates of that object. iou: their (N, N) pairwise IoU
    when the caller has it already.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    if len(order) == 0:
        return order.astype(np.int64)
    iou = mask_iou(rles, rles) if iou is None else iou
    kept: list[int] = []
    for i in order:
        if not kept or iou[i, kept].max() < iou_threshold:
            kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)


@dataclass
class Selection:
    """The outcome of `select_instances` for one image.

    index: (K,) positions in the input prediction, highest ranking score first; scores: (K,) their ranking
    scores; rles: their masks as RLE (aligned with index); removed: how many instances each step removed.
    """

    index: np.ndarray
    scores: np.ndarray
    rles: list
    removed: dict[str, int] = field(default_factory=dict)


def select_instances(prediction: Mapping[str, Any], eval_cfg: EvalConfig,
                     attribute_names: Sequence[str], multi_label_names: Sequence[str] = (),
                     rles: Sequence | None = None, pairwise_iou: np.ndarray | None = None) -> Selection:
    """Apply ranking, threshold, `drop_no_object`, duplicate suppression and `max_dets` (module docstring).

    attribute_names: the single-label groups (ranking and `drop_no_object`); multi_label_names: the
    multi-label groups, which enter the ranking score only (they have no no-object slot). rles: the RLEs of
    all of prediction["masks"] and pairwise_iou (N, N) their IoU, when the caller has them already (the
    inspector, per threshold change).

    `prediction` is one image's prediction dict (torch or numpy); use `take(to_numpy(prediction), sel.index)`
    for the kept instances, e.g. to draw what was evaluated.
    """
    prediction = to_numpy(prediction)
    scores = ranking_scores(prediction, eval_cfg.scoring, [*attribute_names, *multi_label_names])
    n = len(scores)
    keep = scores >= eval_cfg.score_threshold
    removed = {"score_threshold": int(n - keep.sum()), "no_object": 0, "duplicate": 0, "max_dets": 0}
    if eval_cfg.drop_no_object and attribute_names:
        flags = np.any(np.stack(list(no_object_flags(prediction, attribute_names).values())), axis=0)
        removed["no_object"] = int((keep & flags).sum())
        keep &= ~flags
    index = np.flatnonzero(keep)
    index = index[np.argsort(-scores[index], kind="mergesort")]
    rles = encode_masks(_require(prediction, "masks")[index]) if rles is None else [rles[i] for i in index]
    if eval_cfg.dedupe_iou is not None:
        kept = suppress_duplicates(rles, scores[index], eval_cfg.dedupe_iou,
                                   None if pairwise_iou is None else pairwise_iou[np.ix_(index, index)])
        removed["duplicate"] = int(len(index) - len(kept))
        index, rles = index[kept], [rles[i] for i in kept]
    if len(index) > eval_cfg.max_dets:
        removed["max_dets"] = int(len(index) - eval_cfg.max_dets)
        index, rles = index[: eval_cfg.max_dets], rles[: eval_cfg.max_dets]
    return Selection(index=index, scores=scores[index], rles=list(rles), removed=removed)
