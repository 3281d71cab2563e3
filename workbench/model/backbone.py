"""Backbones returning res2..res5 feature maps at strides 4, 8, 16, 32.

    "resnet50"            torchvision ResNet-50, channels 256/512/1024/2048
    "resnet101"           torchvision ResNet-101, same stages and channels (23 blocks in res4 instead of 6)
    "swin_t" .. "swin_l"  Swin Transformer T/S/B/L (model/swin.py), channels C/2C/4C/8C with C = 96/96/128/192
    "mobilenet_v3_large"  torchvision MobileNetV3-Large, channels 24/40/112/960
    "tiny"                conv-GN-ReLU blocks for tests and the demo, channels 32/64/96/128

Weights are never downloaded at run time: `pretrained=True` loads torchvision's weights file from the local
torch hub cache (where `torchvision` itself would have saved it) and fails with the expected path otherwise.

Normalisation (`norm`, `ModelConfig.backbone_norm`): "bn" trains BatchNorm (statistics and affine), "frozen_bn"
uses torchvision's FrozenBatchNorm2d (statistics and affine are fixed buffers: no gradients, no updates in
train mode), "auto" = frozen when pretrained (as upstream fine-tunes ImageNet backbones), trainable otherwise.
Swin has no BatchNorm (LayerNorm, always trained, as upstream): only "auto" is accepted there, anything else is an
error naming `backbone_norm`. `window_size` and `drop_path_rate` (ModelConfig.backbone_window_size /
backbone_drop_path_rate) are Swin's; the other backbones refuse non-default values.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from functools import partial
from typing import Callable

import torch
from torch import nn

FEATURE_NAMES = ("res2", "res3", "res4", "res5")
FEATURE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
SWIN_NAMES = ("swin_t", "swin_s", "swin_b", "swin_l")
BACKBONE_NAMES = ("resnet50", "resnet101", "mobilenet_v3_large", "tiny", *SWIN_NAMES)
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


class StagedBackbone(Backbone):
    """A `stem` then `stages` (ModuleDict res2..res5 in order), each stage's output kept."""

    stem: nn.Module
    stages: nn.ModuleDict

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(images)
        feats = {}
        for name, stage in self.stages.items():
            x = stage(x)
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


class ResNetBackbone(StagedBackbone):
    """torchvision ResNet-50 or -101 (`depth`); BatchNorm per `norm` (default: frozen when pretrained, as upstream)."""

    def __init__(self, depth: int = 50, pretrained: bool = False, norm: str = "auto") -> None:
        super().__init__()
        from torchvision.models import ResNet50_Weights, ResNet101_Weights, resnet50, resnet101

        builders = {50: (resnet50, ResNet50_Weights.IMAGENET1K_V1), 101: (resnet101, ResNet101_Weights.IMAGENET1K_V1)}
        if depth not in builders:
            raise ValueError(f"ResNet depth must be 50 or 101, got {depth}")
        build, weights = builders[depth]
        net = build(weights=None, norm_layer=norm_layer(norm, pretrained))
        if pretrained:
            net.load_state_dict(load_cached_state_dict(weights))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleDict(
            OrderedDict(res2=net.layer1, res3=net.layer2, res4=net.layer3, res5=net.layer4)
        )
        self.out_channels = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}


class MobileNetV3LargeBackbone(Backbone):
    """torchvision MobileNetV3-Large `features`, cut into res2..res5 where the resolution halves.

    Stages are found as torchvision's DeepLabV3 finds them: the blocks flagged `_is_cn` are the first of each
    strided stage, so res2/res3/res4 end just before the 2nd/3rd/4th of them and res5 is the last layer (the
    960-channel 1x1 conv DeepLabV3's head reads). `IntermediateLayerGetter` returns them as an OrderedDict
    keyed by our names. Channels 24/40/112/960 at strides 4/8/16/32.

    Stride 32 for res5: DeepLabV3 builds MobileNetV3 with `dilated=True` (the last stage keeps stride 16 and
    dilates its depthwise convs by 2). We build `dilated=False`, so that stage strides by 2 as in the
    classification network. Dilation only changes how a kernel is applied, not its shape, so the segmentation
    weights load unchanged; the last stage then sees its input at half the resolution it was trained at, which
    fine-tuning absorbs, and it costs a quarter of the dilated stage's compute. (Keeping the dilation and
    pooling res5 would spend that compute and throw the resolution away.)

    pretrained: load, from the local cache, the backbone part of torchvision's DeepLabV3-MobileNetV3-Large
    segmentation weights (COCO subset with VOC labels) when that file is there, else the ImageNet
    classification weights; `loaded_weights` names what was loaded. The segmentation checkpoint is loaded
    into torchvision's own DeepLabV3 model first (strictly: the file must be that model), and its `backbone`
    (an IntermediateLayerGetter over the same `features` children) hands its state to ours, so no key is
    renamed or sliced by hand.
    """

    def __init__(self, pretrained: bool = False, norm: str = "auto") -> None:
        super().__init__()
        from torchvision.models import mobilenet_v3_large
        from torchvision.models._utils import IntermediateLayerGetter

        # torchvision's MobileNetV3 BatchNorm settings (eps 1e-3, momentum 0.01)
        features = mobilenet_v3_large(weights=None, dilated=False,
                                      norm_layer=norm_layer(norm, pretrained, eps=0.001, momentum=0.01)).features
        firsts = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
        if len(firsts) != 4:
            raise RuntimeError(f"expected 4 strided stages in torchvision's MobileNetV3-Large, found {firsts}")
        ends = [firsts[1] - 1, firsts[2] - 1, firsts[3] - 1, len(features) - 1]
        self.body = IntermediateLayerGetter(features, return_layers={str(i): n for i, n in zip(ends, FEATURE_NAMES)})
        self.out_channels = {n: features[i].out_channels for i, n in zip(ends, FEATURE_NAMES)}
        self.loaded_weights: str | None = None
        if pretrained:
            self.loaded_weights = self.load_pretrained()

    def load_pretrained(self) -> str:
        """Load the first cached weights file of (DeepLabV3 segmentation, ImageNet); returns its enum's name."""
        from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large
        from torchvision.models.segmentation import DeepLabV3_MobileNet_V3_Large_Weights, deeplabv3_mobilenet_v3_large

        segmentation = DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
        imagenet = MobileNet_V3_Large_Weights.IMAGENET1K_V1
        if os.path.isfile(cached_weights_path(segmentation)):
            state = load_cached_state_dict(segmentation)
            has_aux = any(k.startswith("aux_classifier.") for k in state)
            deeplab = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=has_aux,
                                                   num_classes=len(segmentation.meta["categories"]))
            deeplab.load_state_dict(state)
            self.body.load_state_dict(deeplab.backbone.state_dict())
            return str(segmentation)
        if os.path.isfile(cached_weights_path(imagenet)):
            net = mobilenet_v3_large(weights=None)
            net.load_state_dict(load_cached_state_dict(imagenet))
            self.body.load_state_dict(net.features.state_dict())
            return str(imagenet)
        raise FileNotFoundError(
            f"no MobileNetV3-Large weights in the local cache: expected {cached_weights_path(segmentation)} "
            f"(DeepLabV3 segmentation, preferred) or {cached_weights_path(imagenet)} (ImageNet). This workbench "
            f"never downloads at run time; copy one from {segmentation.url} or {imagenet.url}, or set "
            f"pretrained_backbone=False."
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.body(images))


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyBackbone(StagedBackbone):
    """A few conv-BN-ReLU blocks per stage: same interface as ResNet-50, runs in milliseconds on CPU.

    BatchNorm, not GroupNorm: trained from scratch on the synthetic shapes, a GroupNorm version of this net
    stayed near chance at telling circles, squares and triangles apart (40% after 300 steps of a linear probe
    on mask-pooled features) while BatchNorm reached 87%. Needs more than one value per channel in training
    (batch x H/32 x W/32 > 1).
    """

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 96, 128)) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(3, widths[0] // 2, 2), _conv_bn_relu(widths[0] // 2, widths[0], 2))
        stages, cin = OrderedDict(), widths[0]
        for i, (name, cout) in enumerate(zip(FEATURE_NAMES, widths)):
            stride = 1 if i == 0 else 2
            stages[name] = nn.Sequential(_conv_bn_relu(cin, cout, stride), _conv_bn_relu(cout, cout, 1))
            cin = cout
        self.stages = nn.ModuleDict(stages)
        self.out_channels = dict(zip(FEATURE_NAMES, widths))



def build_backbone(name: str, pretrained: bool = False, norm: str = "auto", window_size: int = 7,
                   drop_path_rate: float = 0.0) -> Backbone:
    """name in BACKBONE_NAMES; norm "auto" | "bn" | "frozen_bn" (BatchNorm backbones only; Swin takes "auto");
    window_size and drop_path_rate are Swin's (ModelConfig.backbone_window_size / backbone_drop_path_rate)."""
    if name in SWIN_NAMES:
        if norm != "auto":
            raise ValueError(f"backbone {name!r} uses LayerNorm, trained as upstream does; backbone_norm={norm!r} "
                             f"applies to BatchNorm backbones only: set backbone_norm: auto")
        from workbench.model.swin import build_swin_backbone

        return build_swin_backbone(name, window_size=window_size, drop_path_rate=drop_path_rate, pretrained=pretrained)
    if window_size != 7 or drop_path_rate != 0.0:
        raise ValueError(f"backbone_window_size={window_size} / backbone_drop_path_rate={drop_path_rate} apply to "
                         f"Swin backbones {SWIN_NAMES} only; backbone {name!r} takes the defaults (7, 0.0)")
    if name in ("resnet50", "resnet101"):
        return ResNetBackbone(int(name[len("resnet"):]), pretrained=pretrained, norm=norm)
    if name == "mobilenet_v3_large":
        return MobileNetV3LargeBackbone(pretrained=pretrained, norm=norm)
    if name == "tiny":
        if pretrained:
            raise ValueError("backbone 'tiny' has no pretrained weights; set pretrained_backbone=False")
        if norm not in ("auto", "bn"):
            raise ValueError(f"backbone 'tiny' trains its BatchNorm from scratch; backbone_norm must be 'auto' "
                             f"or 'bn', got {norm!r}")
        return TinyBackbone()
    raise ValueError(f"unknown backbone {name!r}; expected one of {BACKBONE_NAMES}")


def backbone_from_config(cfg) -> Backbone:
    """The backbone a `ModelConfig` asks for: `backbone`, `pretrained_backbone`, `backbone_norm`, and for Swin
    `backbone_window_size` and `backbone_drop_path_rate`."""
    return build_backbone(cfg.backbone, pretrained=cfg.pretrained_backbone, norm=cfg.backbone_norm,
                          window_size=cfg.backbone_window_size, drop_path_rate=cfg.backbone_drop_path_rate)
