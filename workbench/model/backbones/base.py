"""What every backbone shares: the res2..res5 feature names and strides, the `Backbone` interface, the BatchNorm
choice (`norm`), and loading torchvision weights from the local cache (never downloading)."""
from __future__ import annotations

import os
from functools import partial
from typing import Callable

import torch
from torch import nn

FEATURE_NAMES = ("res2", "res3", "res4", "res5")
FEATURE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
NORMS = ("auto", "bn", "frozen_bn")


def cached_weights_path(weights) -> str:
    """Where torchvision keeps `weights` (a torchvision weights enum member) in the local hub cache."""
    filename = os.path.basename(weights.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def load_cached_state_dict(weights) -> dict[str, torch.Tensor]:
    """Load a torchvision weights enum's state dict from the local cache, tensors only (`weights_only=True`)."""
    path = cached_weights_path(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"pretrained weights {weights} are not in the local cache: expected {path}. This workbench never "
            f"downloads at run time; copy the file from {weights.url} there, or set pretrained_backbone=False."
        )
    return torch.load(path, map_location="cpu", weights_only=True)


class Backbone(nn.Module):
    """Interface: forward(images (B, 3, H, W)) -> {"res2": (B, C2, H/4, W/4), ..., "res5": (B, C5, H/32, W/32)}."""

    out_channels: dict[str, int]
    out_strides: dict[str, int] = FEATURE_STRIDES
    checkpoint_segments: bool = False  # recompute each stage's activations in the backward (activation_checkpoint.py)

    def run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """stage(x), checkpointed when `checkpoint_segments` is set."""
        from workbench.model.activation_checkpoint import run_segment

        return run_segment(self, stage, stage, x)


class StagedBackbone(Backbone):
    """A `stem` then `stages` (ModuleDict res2..res5 in order), each stage's output kept."""

    stem: nn.Module
    stages: nn.ModuleDict

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.run_stage(self.stem, images)
        feats = {}
        for name, stage in self.stages.items():
            x = self.run_stage(stage, x)
            feats[name] = x
        return feats


def _frozen(norm: str, pretrained: bool) -> bool:
    if norm not in NORMS:
        raise ValueError(f"backbone norm must be one of {NORMS}, got {norm!r}")
    return norm == "frozen_bn" or (norm == "auto" and pretrained)


def norm_layer(norm: str, pretrained: bool, eps: float = 1e-5, momentum: float = 0.1) -> Callable[[int], nn.Module]:
    """The BatchNorm factory for `norm` ("auto" | "bn" | "frozen_bn", see the module docstring)."""
    from torchvision.ops import FrozenBatchNorm2d

    if _frozen(norm, pretrained):
        return partial(FrozenBatchNorm2d, eps=eps)
    return partial(nn.BatchNorm2d, eps=eps, momentum=momentum)
