"""How predictions are ranked and filtered before they are scored: `EvalConfig`."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EvalConfig"]


@dataclass(frozen=True)
class EvalConfig:
    """How predictions are ranked and filtered before evaluation (engine/evaluate.py, engine/scoring.py).

    scoring: the score instances are ranked by (COCOeval's "score"); with c = class prob, m = mask score and
    a_i = the probability of attribute i's predicted (top real) value, over all A schema attributes:
        "main"     c * m                       (upstream Mask2Former, the model's `scores`)
        "product"  c * m * prod_i a_i
        "mean"     (c + sum_i a_i) / (1 + A) * m
    A multi-label group's a_i is the mean over its K values of the probability of the decision taken (p where
    the value is predicted, i.e. p > its threshold, and 1 - p where not).
    dedupe_iou: None = off; else greedy mask-IoU duplicate suppression across queries, class-agnostic, by the
    ranking score: an instance whose mask IoU with a kept one is >= dedupe_iou is removed.
    score_threshold: instances whose ranking score is below it are removed (0 keeps all).
    drop_no_object: remove instances where any single-label attribute's no-object prob exceeds its best real
    value's prob (multi-label groups have no no-object slot).
    max_dets: at most this many instances per image (highest ranking scores) are evaluated; also COCOeval's
    maxDets.
    """

    scoring: str = "main"
    dedupe_iou: float | None = None
    score_threshold: float = 0.0
    drop_no_object: bool = False
    max_dets: int = 100

    def __post_init__(self) -> None:
        if self.scoring not in ("main", "product", "mean"):
            raise ValueError(f"EvalConfig.scoring must be 'main', 'product' or 'mean', got {self.scoring!r}")
        if self.dedupe_iou is not None and not 0 < self.dedupe_iou <= 1:
            raise ValueError(f"EvalConfig.dedupe_iou must be None (off) or in (0, 1], got {self.dedupe_iou!r}")
        if not 0 <= self.score_threshold <= 1:
            raise ValueError(f"EvalConfig.score_threshold must be in [0, 1], got {self.score_threshold!r}")
        if isinstance(self.max_dets, bool) or not isinstance(self.max_dets, int) or self.max_dets < 1:
            raise ValueError(f"EvalConfig.max_dets must be a positive integer, got {self.max_dets!r}")
