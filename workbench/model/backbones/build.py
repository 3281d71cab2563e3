"""The builder: a backbone name (ModelConfig.backbone) and its options -> a `Backbone`."""
from __future__ import annotations

from workbench.model.backbones.base import Backbone
from workbench.model.backbones.mobilenet import MobileNetV3LargeBackbone
from workbench.model.backbones.resnet import ResNetBackbone
from workbench.model.backbones.tiny import TinyBackbone

SWIN_NAMES = ("swin_t", "swin_s", "swin_b", "swin_l")
BACKBONE_NAMES = ("resnet50", "resnet101", "mobilenet_v3_large", "tiny", *SWIN_NAMES)


def build_backbone(name: str, pretrained: bool = False, norm: str = "auto", window_size: int = 7,
                   drop_path_rate: float = 0.0) -> Backbone:
    """name in BACKBONE_NAMES; norm "auto" | "bn" | "frozen_bn" (BatchNorm backbones only; Swin takes "auto");
    window_size and drop_path_rate are Swin's (ModelConfig.backbone_window_size / backbone_drop_path_rate)."""
    if name in SWIN_NAMES:
        if norm != "auto":
            raise ValueError(f"backbone {name!r} uses LayerNorm, trained as upstream does; backbone_norm={norm!r} "
                             f"applies to BatchNorm backbones only: set backbone_norm: auto")
        from workbench.model.backbones.swin import build_swin_backbone

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
