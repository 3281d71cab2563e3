"""Where the data is and how training images are augmented: `DataConfig` and `AugmentConfig`."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AugmentConfig", "DataConfig"]


@dataclass(frozen=True)
class DataConfig:
    """Where the COCO-with-attributes files are. Image `file_name`s are relative to `image_root` for both
    splits; empty = each JSON's own folder (where `workbench data convert` puts them). `val` may be empty.

    keep_empty: train on images without instances too (every query learns "no object" there: negatives teach
    the model not to fire on background). Upstream filters them (`FILTER_EMPTY_ANNOTATIONS`); False does that.

    cache_images: decode every training image once, when the dataset is built, and keep the pixels in memory
    (H x W x 3 bytes each; data-loader workers share them). For small datasets, where decoding is a visible
    part of a step (the demo's 600 PNGs: ~40% of its data time); the size is printed."""

    train: str = ""
    val: str = ""
    image_root: str = ""
    keep_empty: bool = True
    cache_images: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (data/transforms.py). Defaults are upstream Mask2Former's COCO instance recipes.

    recipe "lsj" (large-scale jitter, upstream's COCO instance baseline): flip, resize so the image fits
    `image_size` times a random scale in [min_scale, max_scale], then crop / pad to `image_size` squared.
    recipe "shortest_edge" (upstream's older mapper): flip, shortest edge to a random choice of
    `shortest_edge`, longest edge capped at `max_size`. Test time resizes the shortest edge to
    `test_shortest_edge` (0 keeps the size). Colour jitter is off by default because colour is an attribute;
    for the same reason keep the scale range narrow when size is an attribute (see `synthetic()`).
    """

    recipe: str = "lsj"
    image_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    shortest_edge: tuple[int, ...] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    max_size: int = 1333
    test_shortest_edge: int = 800
    flip_prob: float = 0.5
    pad_value: int = 128
    color_jitter: bool = False
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "shortest_edge", tuple(self.shortest_edge))
        if self.recipe not in ("lsj", "shortest_edge"):
            raise ValueError(f"AugmentConfig.recipe must be 'lsj' or 'shortest_edge', got {self.recipe!r}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError("AugmentConfig needs 0 < min_scale <= max_scale")
        if self.image_size <= 0 or self.max_size <= 0 or self.test_shortest_edge < 0:
            raise ValueError("AugmentConfig sizes must be positive (test_shortest_edge may be 0 = keep)")
        if self.recipe == "shortest_edge" and (not self.shortest_edge or min(self.shortest_edge) <= 0):
            raise ValueError("AugmentConfig.shortest_edge must list positive sizes")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError("AugmentConfig.flip_prob must be in [0, 1]")
        if not 0 <= self.pad_value <= 255:
            raise ValueError("AugmentConfig.pad_value must be in [0, 255]")
        if min(self.brightness, self.contrast, self.saturation) < 0 or max(self.brightness, self.contrast, self.saturation) >= 1:
            raise ValueError("AugmentConfig jitter strengths must be in [0, 1)")

    @classmethod
    def synthetic(cls, image_size: int = 128, **overrides) -> "AugmentConfig":
        """LSJ for the synthetic shapes: size is an attribute, so scale stays within +-10% (bins are further apart)."""
        values = dict(image_size=image_size, min_scale=0.9, max_scale=1.1, test_shortest_edge=0)
        values.update(overrides)
        return cls(**values)
