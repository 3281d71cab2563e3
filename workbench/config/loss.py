"""Loss weights and point sampling: `LossConfig` (`ModelConfig.loss`), read by model/criterion.py."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MULTI_LABEL_LOSSES", "LossConfig"]

MULTI_LABEL_LOSSES = ("bce", "focal")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and point sampling, Mask2Former's defaults."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    boundary_weight: float = 0.0  # boundary-aware mask loss (model/boundary_loss.py); 0 = off, term not computed
    multi_label_loss: str = "bce"  # multi-label attribute groups: "bce" | "focal" (AttributeSpec.loss overrides)
    focal_alpha: float = 0.25  # sigmoid focal loss (Lin et al.) of multi groups: positive-class weight, -1 = none
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        if self.multi_label_loss not in MULTI_LABEL_LOSSES:
            raise ValueError(f"LossConfig.multi_label_loss must be one of {MULTI_LABEL_LOSSES}, "
                             f"got {self.multi_label_loss!r}")
        if not (self.focal_alpha == -1 or 0 <= self.focal_alpha <= 1) or self.focal_gamma < 0:
            raise ValueError("LossConfig.focal_alpha must be in [0, 1] (or -1 = off) and focal_gamma >= 0")
        if self.boundary_weight < 0:
            raise ValueError("LossConfig.boundary_weight must be >= 0 (0 = off)")
        if self.num_points <= 0:
            raise ValueError("LossConfig.num_points must be > 0 (0 points give NaN costs)")
        if self.oversample_ratio < 1:
            raise ValueError("LossConfig.oversample_ratio must be >= 1")
        if not 0 <= self.importance_sample_ratio <= 1:
            raise ValueError("LossConfig.importance_sample_ratio must be in [0, 1]")

