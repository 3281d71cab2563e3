"""torchvision ResNet-50/101 as res2..res5 (channels 256/512/1024/2048)."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from workbench.model.backbones.base import StagedBackbone, load_cached_state_dict, norm_layer


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
