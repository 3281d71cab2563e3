"""Backbones returning res2..res5 feature maps at strides 4, 8, 16, 32: one file per family, `build.py` picks one
by name.

    "resnet50"            torchvision ResNet-50, channels 256/512/1024/2048
    "resnet101"           torchvision ResNet-101, same stages and channels (23 blocks in res4 instead of 6)
    "swin_t" .. "swin_l"  Swin Transformer T/S/B/L (backbones/swin.py), channels C/2C/4C/8C with C = 96/96/128/192
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
from workbench.model.backbones.base import (FEATURE_NAMES, FEATURE_STRIDES, NORMS, Backbone, StagedBackbone,
                                            cached_weights_path, load_cached_state_dict, norm_layer)
from workbench.model.backbones.build import BACKBONE_NAMES, SWIN_NAMES, backbone_from_config, build_backbone

__all__ = ["BACKBONE_NAMES", "FEATURE_NAMES", "FEATURE_STRIDES", "NORMS", "SWIN_NAMES", "Backbone", "StagedBackbone",
           "backbone_from_config", "build_backbone", "cached_weights_path", "load_cached_state_dict", "norm_layer"]
