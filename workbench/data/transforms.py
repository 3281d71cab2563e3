"""Augmentations applied identically to an image and its instance masks.

Each random augmentation draws its parameters from a `numpy.random.Generator` and returns a deterministic
transform; the same transform object then moves the image (H, W, 3) uint8 and the masks (T, H, W) bool, so
they cannot drift apart (the seed project's shifted predictions). Boxes are not transformed separately: the
dataset recomputes them from the transformed masks, as upstream's instance mappers do, so a crop gives a
tight box instead of a clipped loose one. Pixel convention everywhere: pixel centres at i + 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from workbench.config import AugmentConfig

__all__ = [
    "Augmentation",
    "ColorJitter",
    "Compose",
    "CropPad",
    "FixedSizeCrop",
    "HFlip",
    "RandomFlip",
    "Resize",
    "ResizeScale",
    "ResizeShortestEdge",
    "build_augmentation",
]


# --- deterministic transforms -----------------------------------------------------------------------------------
class Transform(Protocol):
    def apply_image(self, image: np.ndarray) -> np.ndarray: ...
    def apply_masks(self, masks: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class HFlip:
    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[:, ::-1])

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(masks[:, :, ::-1])


@dataclass(frozen=True)
class Resize:
    """To (height, width): bilinear (antialiased when shrinking) for the image, nearest for masks."""

    height: int
    width: int

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] == (self.height, self.width):
            return image
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        shrink = self.height < image.shape[0] or self.width < image.shape[1]
        y = F.interpolate(x, size=(self.height, self.width), mode="bilinear", align_corners=False, antialias=shrink)
        return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        if masks.shape[0] == 0:
            return np.zeros((0, self.height, self.width), dtype=bool)
        if masks.shape[1:] == (self.height, self.width):
            return masks
        x = torch.from_numpy(masks)[:, None].to(torch.uint8)
        # "nearest-exact" samples at pixel centres, the same grid as bilinear with align_corners=False
        y = F.interpolate(x, size=(self.height, self.width), mode="nearest-exact")
        return y[:, 0].bool().numpy()


@dataclass(frozen=True)
class CropPad:
    """Take the window [y0, y0+height) x [x0, x0+width); parts beyond the image are padding (image: `pad_value`,
    masks: False). Padding goes bottom/right, as upstream's FixedSizeCrop."""

    y0: int
    x0: int
    height: int
    width: int
    pad_value: int = 128

    def _window(self, arr: np.ndarray, h_axis: int, fill) -> np.ndarray:
        h, w = arr.shape[h_axis], arr.shape[h_axis + 1]
        shape = list(arr.shape)
        shape[h_axis], shape[h_axis + 1] = self.height, self.width
        out = np.full(shape, fill, dtype=arr.dtype)
        ch, cw = max(0, min(h - self.y0, self.height)), max(0, min(w - self.x0, self.width))
        src = [slice(None)] * arr.ndim
        src[h_axis], src[h_axis + 1] = slice(self.y0, self.y0 + ch), slice(self.x0, self.x0 + cw)
        dst = [slice(None)] * arr.ndim
        dst[h_axis], dst[h_axis + 1] = slice(0, ch), slice(0, cw)
        out[tuple(dst)] = arr[tuple(src)]
        return out

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        return self._window(image, 0, self.pad_value)

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        return self._window(masks, 1, False)


@dataclass(frozen=True)
class _Photometric:
    """Brightness, contrast and saturation factors (1 = unchanged); masks untouched."""

    brightness: float
    contrast: float
    saturation: float

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        x = image.astype(np.float32) * self.brightness
        x = (x - x.mean()) * self.contrast + x.mean()
        gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        x = (x - gray[..., None]) * self.saturation + gray[..., None]
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        return masks


# --- random augmentations ---------------------------------------------------------------------------------------
class Augmentation(Protocol):
    def get_transform(self, height: int, width: int, rng: np.random.Generator) -> Transform | None: ...


def _scaled(height: int, width: int, scale: float) -> Resize:
    return Resize(max(1, int(round(height * scale))), max(1, int(round(width * scale))))


@dataclass(frozen=True)
class RandomFlip:
    prob: float = 0.5

    def get_transform(self, height, width, rng):
        return HFlip() if rng.random() < self.prob else None


@dataclass(frozen=True)
class ResizeShortestEdge:
    """Shortest edge to a random choice of `sizes` (0 = keep), longest edge at most `max_size`."""

    sizes: tuple[int, ...]
    max_size: int

    def get_transform(self, height, width, rng):
        target = self.sizes[0] if len(self.sizes) == 1 else self.sizes[int(rng.integers(len(self.sizes)))]
        if target == 0:
            return None
        scale = target / min(height, width)
        if max(height, width) * scale > self.max_size:
            scale = self.max_size / max(height, width)
        return _scaled(height, width, scale)


@dataclass(frozen=True)
class ResizeScale:
    """Large-scale jitter's resize: fit the image in (size * s) squared, s ~ U[min_scale, max_scale]."""

    min_scale: float
    max_scale: float
    size: int

    def get_transform(self, height, width, rng):
        s = rng.uniform(self.min_scale, self.max_scale)
        scale = min(self.size * s / height, self.size * s / width)
        return _scaled(height, width, scale)


@dataclass(frozen=True)
class FixedSizeCrop:
    """Random `size` squared window (uniform offset), padded where the image is smaller."""

    size: int
    pad_value: int = 128

    def get_transform(self, height, width, rng):
        y0 = int(rng.integers(0, max(0, height - self.size) + 1))
        x0 = int(rng.integers(0, max(0, width - self.size) + 1))
        return CropPad(y0, x0, self.size, self.size, self.pad_value)


@dataclass(frozen=True)
class ColorJitter:
    brightness: float
    contrast: float
    saturation: float

    def get_transform(self, height, width, rng):
        b, c, s = (rng.uniform(1 - v, 1 + v) for v in (self.brightness, self.contrast, self.saturation))
        return _Photometric(b, c, s)


@dataclass(frozen=True)
class Compose:
    """Runs augmentations in order on (image (H, W, 3) uint8, masks (T, H, W) bool)."""

    augmentations: Sequence[Augmentation]

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator):
        for aug in self.augmentations:
            t = aug.get_transform(image.shape[0], image.shape[1], rng)
            if t is not None:
                image, masks = t.apply_image(image), t.apply_masks(masks)
        return image, masks


def build_augmentation(cfg: AugmentConfig, train: bool) -> Compose:
    """The training recipe of `cfg` or, with train=False, its test-time resize."""
    if not train:
        return Compose([ResizeShortestEdge((cfg.test_shortest_edge,), cfg.max_size)] if cfg.test_shortest_edge else [])
    augs: list[Augmentation] = [RandomFlip(cfg.flip_prob)]
    if cfg.recipe == "lsj":
        augs += [ResizeScale(cfg.min_scale, cfg.max_scale, cfg.image_size), FixedSizeCrop(cfg.image_size, cfg.pad_value)]
    else:
        augs += [ResizeShortestEdge(cfg.shortest_edge, cfg.max_size)]
    if cfg.color_jitter:
        augs.append(ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation))
    return Compose(augs)
