"""Backbones returning res2..res5 feature maps at strides 4, 8, 16, 32.

Weights are never downloaded at run time: `pretrained=True` loads torchvision's weights file from the local
torch hub cache (where `torchvision` itself would have saved it) and fails with the expected path otherwise.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn

FEATURE_NAMES = ("res2", "res3", "res4", "res5")
FEATURE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


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


class ResNet50Backbone(Backbone):
    """torchvision ResNet-50; frozen BatchNorm when pretrained (as upstream), trainable BatchNorm from scratch."""

    def __init__(self, pretrained: bool = False) -> None:
        super().__init__()
        from torchvision.models import ResNet50_Weights, resnet50
        from torchvision.ops import FrozenBatchNorm2d

        norm = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
        net = resnet50(weights=None, norm_layer=norm)
        if pretrained:
            net.load_state_dict(load_cached_state_dict(ResNet50_Weights.IMAGENET1K_V1))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleDict(
            OrderedDict(res2=net.layer1, res3=net.layer2, res4=net.layer3, res5=net.layer4)
        )
        self.out_channels = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        feats = {}
        for name, stage in self.stages.items():
            x = stage(x)
            feats[name] = x
        return feats


def _conv_gn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, cout), cout),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(Backbone):
    """A few conv-GN-ReLU blocks per stage: same interface as ResNet-50, runs in milliseconds on CPU."""

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 96, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_gn_relu(3, widths[0] // 2, 2), _conv_gn_relu(widths[0] // 2, widths[0], 2))
        stages, cin = OrderedDict(), widths[0]
        for i, (name, cout) in enumerate(zip(FEATURE_NAMES, widths)):
            stride = 1 if i == 0 else 2
            stages[name] = nn.Sequential(_conv_gn_relu(cin, cout, stride), _conv_gn_relu(cout, cout, 1))
            cin = cout
        self.stages = nn.ModuleDict(stages)
        self.out_channels = dict(zip(FEATURE_NAMES, widths))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        feats = {}
        for name, stage in self.stages.items():
            x = stage(x)
            feats[name] = x
        return feats


def build_backbone(name: str, pretrained: bool = False) -> Backbone:
    if name == "resnet50":
        return ResNet50Backbone(pretrained=pretrained)
    if name == "tiny":
        if pretrained:
            raise ValueError("backbone 'tiny' has no pretrained weights; set pretrained_backbone=False")
        return TinyBackbone()
    raise ValueError(f"unknown backbone {name!r}; expected 'resnet50' or 'tiny'")
