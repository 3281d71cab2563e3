"""torchvision MobileNetV3-Large as res2..res5 (channels 24/40/112/960)."""
from __future__ import annotations

import os

import torch

from workbench.model.backbones.base import (FEATURE_NAMES, Backbone, cached_weights_path, load_cached_state_dict,
                                            norm_layer)


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
        """IntermediateLayerGetter's walk over the blocks, each block a checkpoint segment when that is on."""
        feats, x = {}, images
        for name, block in self.body.items():
            x = self.run_stage(block, x)
            if name in self.body.return_layers:
                feats[self.body.return_layers[name]] = x
        return feats
