"""Panoptic quality (PQ = SQ x RQ), computed as panopticapi's `pq_compute` computes it, vectorised.

Per image, the (GT segment, predicted segment) intersections come from one `np.bincount` over combined ids. A
pair is a true positive when both have the same category, the GT is not crowd and IoU > 0.5, where the union
leaves out the predicted segment's VOID pixels (GT id 0): IoU = |g & p| / (|p| + |g| - |g & p| - |void & p|).
IoU > 0.5 makes the matching unique. A non-crowd GT left unmatched is a false negative. A predicted segment
left unmatched is a false positive unless more than half of it lies on VOID plus the crowd region of its own
category (panopticapi keeps one crowd segment per category and image: the last one listed). Crowd regions are
not subtracted from the union of a matched pair (panopticapi does not). GT areas are the segments' "area"
fields where given (panopticapi reads them from the JSON), else their pixel counts; predicted areas are always
pixel counts.

Per class: PQ = sum(IoU of TPs) / (TP + FP/2 + FN/2), SQ = sum(IoU) / TP (0 without TP), RQ = TP / (TP + FP/2 +
FN/2). All / things / stuff average the classes of that group that occur (TP + FP + FN > 0); a group with no
such class is None (panopticapi divides by zero there). Values are percentages, as detectron2 reports them.

Two input forms: in memory (`evaluate_panoptic`: {"panoptic_seg": (H, W) ids, "segments_info": [...]} per image,
category ids = contiguous class indices, the model's prediction form) and on disk (metrics/panoptic_files.py:
COCO panoptic JSON + RGB-encoded PNG folders, dataset category ids, as `pq_compute` reads them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from workbench.metrics.inputs import as_numpy, input_error, percent

__all__ = [
    "CategoryTable",
    "PQClass",
    "PQCounts",
    "PQGroup",
    "PanopticResult",
    "SegmentMatch",
    "categories_from_schema",
    "evaluate_images",
    "evaluate_panoptic",
    "match_segments",
    "panoptic_images",
    "pq_result",
]

VOID = 0
MATCH_IOU = 0.5


# --- categories --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CategoryTable:
    """The evaluated categories in order: `position[category_id]` indexes `names` / `isthing` and the counts."""

    ids: tuple[int, ...]
    names: tuple[str, ...]
    isthing: tuple[bool, ...]

    @property
    def position(self) -> dict[int, int]:
        return {c: i for i, c in enumerate(self.ids)}

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], where: str = "categories") -> "CategoryTable":
        """COCO panoptic category records {"id", "name", "isthing" (1 / 0; missing = thing)}."""
        records = list(records)
        ids = tuple(int(r["id"]) for r in records)
        names = tuple(str(r.get("name", r["id"])) for r in records)
        for label, values in (("id", ids), ("name", names)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise input_error("duplicate_category", where,
                                  f"category {label}s must be unique; repeated: {repeated}")
        return cls(ids, names, tuple(int(r.get("isthing", 1)) == 1 for r in records))


def categories_from_schema(schema: Any) -> list[dict[str, Any]]:
    """Records for the in-memory form: id = contiguous class index (the model's labels), isthing from the
    schema's categories (True where a category has no `isthing`)."""
    return [{"id": i, "name": c.name, "isthing": int(bool(getattr(c, "isthing", True)))}
            for i, c in enumerate(schema.categories)]


# --- one image ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentMatch:
    """One image's GT (G segments) and predicted (P segments) overlap, in `segments_info` order.

    gt_category (G,) / pred_category (P,): category positions; gt_crowd (G,) bool; iou (G, P) float64 (0 where
    they do not overlap); pairs (M, 2) int: (gt index, pred index) of the matches (same category, GT not crowd,
    IoU > 0.5); ignorable (P,) bool: more than half of the predicted segment is VOID or its category's crowd
    region, so it is no false positive when left unmatched.
    """

    gt_category: np.ndarray
    gt_crowd: np.ndarray
    pred_category: np.ndarray
    iou: np.ndarray
    pairs: np.ndarray
    ignorable: np.ndarray


def _segment_ids(segments: Sequence[Mapping[str, Any]], where: str) -> np.ndarray:
    ids = np.array([int(s["id"]) for s in segments], dtype=np.int64)
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise input_error("duplicate_segment_id", where,
                          f"segment ids must be unique; repeated: {unique[counts > 1].tolist()}")
    return ids


def _category_positions(segments, position: Mapping[int, int], where: str) -> np.ndarray:
    out = np.empty(len(segments), dtype=np.int64)
    for i, s in enumerate(segments):
        c = int(s["category_id"])
        if c not in position:
            raise input_error("unknown_category", f"{where}[{i}].category_id",
                              f"{c} is not an evaluated category id (known: {sorted(position)})")
        out[i] = position[c]
    return out


def _id_map(x: Any, where: str) -> np.ndarray:
    x = as_numpy(x)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise input_error("bad_panoptic_map", where,
                          f"expected an integer (H, W) segment-id map, got {x.dtype} {x.shape}")
    return x.astype(np.int64, copy=False)


def match_segments(gt_map: Any, gt_segments: Sequence[Mapping[str, Any]], pred_map: Any,
                   pred_segments: Sequence[Mapping[str, Any]], categories: CategoryTable,
                   where: str = "image") -> SegmentMatch:
    """Overlaps and matches of one image (module docstring). gt_map / pred_map: int (H, W) segment ids, 0 = VOID."""
    gt_map, pred_map = _id_map(gt_map, f"{where} ground truth"), _id_map(pred_map, f"{where} prediction")
    if gt_map.shape != pred_map.shape:
        raise input_error("size_mismatch", where, f"prediction {pred_map.shape} and ground truth {gt_map.shape} "
                          "differ in size; predict at the ground truth's size")
    position = categories.position
    gt_ids = _segment_ids(gt_segments, f"{where} ground truth segments_info")
    pred_ids = _segment_ids(pred_segments, f"{where} prediction segments_info")
    if (pred_ids == VOID).any():
        raise input_error("void_segment_id", f"{where} prediction segments_info", "segment id 0 is VOID; use ids >= 1")
    gt_cat = _category_positions(gt_segments, position, f"{where} ground truth segments_info")
    pred_cat = _category_positions(pred_segments, position, f"{where} prediction segments_info")

    gt_u, gt_inv = np.unique(gt_map, return_inverse=True)
    pr_u, pr_inv = np.unique(pred_map, return_inverse=True)
    inter = np.bincount(gt_inv.ravel() * len(pr_u) + pr_inv.ravel(),
                        minlength=len(gt_u) * len(pr_u)).reshape(len(gt_u), len(pr_u))
    unlisted = np.setdiff1d(pr_u[pr_u != VOID], pred_ids)
    if unlisted.size:
        raise input_error("segment_not_listed", f"{where} prediction",
                          f"segment ids {unlisted.tolist()} are in the map and not in segments_info")
    absent = np.setdiff1d(pred_ids, pr_u)
    if absent.size:
        raise input_error("segment_not_in_map", f"{where} prediction",
                          f"segment ids {absent.tolist()} are in segments_info and have no pixel in the map")
    pred_col = np.searchsorted(pr_u, pred_ids)
    pred_area = inter.sum(0)[pred_col]
    gt_row = np.minimum(np.searchsorted(gt_u, gt_ids), len(gt_u) - 1)
    present = gt_u[gt_row] == gt_ids
    overlap = np.zeros((len(gt_ids), len(pred_ids)), dtype=np.int64)
    overlap[present] = inter[gt_row[present]][:, pred_col]
    void = inter[gt_u == VOID].sum(0)[pred_col]  # (P,): 0 when the GT has no VOID pixel
    pixels = np.where(present, inter.sum(1)[gt_row], 0)
    gt_area = np.array([s["area"] if s.get("area") is not None else pixels[i] for i, s in enumerate(gt_segments)],
                       dtype=np.float64)
    crowd = np.array([int(s.get("iscrowd", 0)) == 1 for s in gt_segments], dtype=bool)

    union = pred_area[None, :] + gt_area[:, None] - overlap - void[None, :]
    iou = np.divide(overlap, union, out=np.zeros(overlap.shape), where=overlap > 0)
    same = gt_cat[:, None] == pred_cat[None, :]
    pairs = np.argwhere(same & ~crowd[:, None] & (iou > MATCH_IOU))

    crowd_of = np.full(len(categories.ids), -1, dtype=np.int64)
    for g in np.flatnonzero(crowd):  # the last crowd segment of a category wins, as in panopticapi's dict
        crowd_of[gt_cat[g]] = g
    g = crowd_of[pred_cat]
    on_crowd = np.where(g >= 0, overlap[np.maximum(g, 0), np.arange(len(pred_ids))], 0) if len(gt_ids) else 0
    ignorable = (void + on_crowd) / pred_area > MATCH_IOU
    return SegmentMatch(gt_cat, crowd, pred_cat, iou, pairs.reshape(-1, 2), ignorable)


# --- counts and result -------------------------------------------------------------------------------------------
@dataclass
class PQCounts:
    """Per-category sums over images: tp, fp, fn (C,) int64 and iou (C,) float64 (sum of the TPs' IoU)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray

    @classmethod
    def zeros(cls, num_categories: int) -> "PQCounts":
        z = np.zeros(num_categories, dtype=np.int64)
        return cls(z.copy(), z.copy(), z.copy(), np.zeros(num_categories, dtype=np.float64))

    def add(self, match: SegmentMatch, keep: np.ndarray | None = None) -> None:
        """Count one image. keep (M,) bool: which of `match.pairs` may count as true positives (None = all); a
        pair left out counts as an unmatched GT and an unmatched prediction (joint PQ's attribute condition)."""
        pairs = match.pairs if keep is None else match.pairs[np.asarray(keep, dtype=bool)]
        c = len(self.tp)
        gt_matched = np.zeros(len(match.gt_category), dtype=bool)
        pred_matched = np.zeros(len(match.pred_category), dtype=bool)
        gt_matched[pairs[:, 0]] = True
        pred_matched[pairs[:, 1]] = True
        tp_cat = match.gt_category[pairs[:, 0]]
        self.tp += np.bincount(tp_cat, minlength=c)
        self.iou += np.bincount(tp_cat, weights=match.iou[pairs[:, 0], pairs[:, 1]], minlength=c)
        self.fn += np.bincount(match.gt_category[~gt_matched & ~match.gt_crowd], minlength=c)
        self.fp += np.bincount(match.pred_category[~pred_matched & ~match.ignorable], minlength=c)


@dataclass(frozen=True)
class PQGroup:
    """PQ / SQ / RQ (percent) averaged over the n classes of a group that occur; None when n is 0."""

    PQ: float | None
    SQ: float | None
    RQ: float | None
    n: int


@dataclass(frozen=True)
class PQClass:
    """One class: PQ / SQ / RQ in percent (None when it has no TP, FP or FN: panopticapi writes 0 there and
    leaves the class out of the averages) and its counts."""

    PQ: float | None
    SQ: float | None
    RQ: float | None
    tp: int
    fp: int
    fn: int
    isthing: bool


@dataclass(frozen=True)
class PanopticResult:
    """PQ over all classes, things and stuff, and per class (by name). `tag` prefixes the TensorBoard keys:
    "eval/panoptic", or "eval/joint_panoptic" for the attribute-aware PQ (metrics/panoptic_attributes.py)."""

    all: PQGroup
    things: PQGroup
    stuff: PQGroup
    per_class: dict[str, PQClass]
    images: int
    tag: str = "eval/panoptic"
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float | None]:
        """Flat {TensorBoard tag: value}: `<tag>/PQ`, `PQ_th`, `PQ_st` (and SQ, RQ), `<tag>_class/<name>/PQ` ..."""
        out: dict[str, float | None] = {}
        for suffix, group in (("", self.all), ("_th", self.things), ("_st", self.stuff)):
            for key in ("PQ", "SQ", "RQ"):
                out[f"{self.tag}/{key}{suffix}"] = getattr(group, key)
        for name, c in self.per_class.items():
            for key in ("PQ", "SQ", "RQ"):
                out[f"{self.tag}_class/{name}/{key}"] = getattr(c, key)
        return out


def pq_result(counts: PQCounts, categories: CategoryTable, images: int, tag: str = "eval/panoptic") -> PanopticResult:
    """Per-class and averaged PQ / SQ / RQ from summed counts, with panopticapi's `pq_average` formulas."""
    per_class, fractions = {}, []
    for k, name in enumerate(categories.names):
        tp, fp, fn, iou = int(counts.tp[k]), int(counts.fp[k]), int(counts.fn[k]), float(counts.iou[k])
        if tp + fp + fn == 0:
            per_class[name] = PQClass(None, None, None, 0, 0, 0, categories.isthing[k])
            continue
        denominator = tp + 0.5 * fp + 0.5 * fn
        pq, sq, rq = iou / denominator, (iou / tp if tp else 0.0), tp / denominator
        fractions.append((categories.isthing[k], pq, sq, rq))
        per_class[name] = PQClass(percent(pq), percent(sq), percent(rq), tp, fp, fn, categories.isthing[k])

    def group(isthing: bool | None) -> PQGroup:
        rows = [r for r in fractions if isthing is None or r[0] == isthing]
        if not rows:
            return PQGroup(None, None, None, 0)
        n = len(rows)
        # summed in category order as panopticapi does (the same float result, not just close)
        return PQGroup(*(percent(sum(r[i] for r in rows) / n) for i in (1, 2, 3)), n)

    totals = {"tp": int(counts.tp.sum()), "fp": int(counts.fp.sum()), "fn": int(counts.fn.sum())}
    return PanopticResult(group(None), group(True), group(False), per_class, images, tag, totals)


# --- the two input forms -----------------------------------------------------------------------------------------
def _image(item: Mapping[str, Any], where: str) -> tuple[Any, list]:
    if not isinstance(item, Mapping) or "panoptic_seg" not in item or "segments_info" not in item:
        keys = sorted(item) if isinstance(item, Mapping) else type(item).__name__
        raise input_error("bad_panoptic_item", where, f"needs 'panoptic_seg' and 'segments_info' (has {keys})")
    return item["panoptic_seg"], list(item["segments_info"])


def panoptic_images(predictions: Mapping[Any, Mapping[str, Any]], ground_truth: Mapping[Any, Mapping[str, Any]]
                    ) -> Iterator[tuple[str, Any, list, Any, list]]:
    """(where, gt_map, gt_segments, pred_map, pred_segments) per predicted image of the in-memory form."""
    if not predictions:
        raise input_error("no_predictions", "predictions", "is empty: nothing to evaluate")
    for image_id, pred in predictions.items():
        if image_id not in ground_truth:
            raise input_error("unknown_image", f"predictions[{image_id!r}]", "no ground truth for this image id")
        gt_map, gt_segments = _image(ground_truth[image_id], f"ground_truth[{image_id!r}]")
        pred_map, pred_segments = _image(pred, f"predictions[{image_id!r}]")
        yield f"image {image_id!r}", gt_map, gt_segments, pred_map, pred_segments


def evaluate_panoptic(predictions: Mapping[Any, Mapping[str, Any]], ground_truth: Mapping[Any, Mapping[str, Any]],
                      categories: Sequence[Mapping[str, Any]] | CategoryTable) -> PanopticResult:
    """PQ of in-memory predictions: {image_id: {"panoptic_seg": int (H, W), "segments_info": [{"id",
    "category_id", ...}]}} (the model's panoptic output; torch or numpy) against ground truth of the same form
    whose segments also carry "iscrowd" (default 0) and optionally "area". Every predicted image must be in
    `ground_truth`; only the predicted images are evaluated. categories: records {"id", "name", "isthing"}
    whose ids are the segments' category ids (`categories_from_schema`: contiguous class indices)."""
    table = categories if isinstance(categories, CategoryTable) else CategoryTable.from_records(categories)
    return evaluate_images(table, panoptic_images(predictions, ground_truth))


def evaluate_images(table: CategoryTable, images: Iterable[tuple[str, Any, list, Any, list]]) -> PanopticResult:
    """PQ over (where, gt_map, gt_segments, pred_map, pred_segments) per image (`panoptic_images`, or
    metrics/panoptic_files.py's `panoptic_files` for the on-disk form)."""
    counts, n = PQCounts.zeros(len(table.ids)), 0
    for where, gt_map, gt_segments, pred_map, pred_segments in images:
        counts.add(match_segments(gt_map, gt_segments, pred_map, pred_segments, table, where))
        n += 1
    return pq_result(counts, table, n)
