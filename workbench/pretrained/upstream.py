"""Upstream names (facebookresearch/Mask2Former on detectron2) -> ours.

Backbone (detectron2's ResNet; Swin: swin_keys.py): `backbone.stem.conv1.weight`, `backbone.stem.conv1.norm.{weight,bias,
running_mean,running_var}` (FrozenBN), `backbone.res{2..5}.{block}.conv{1,2,3}[.norm].*`, `...shortcut[.norm].*`.
Pixel decoder: `sem_seg_head.pixel_decoder.{input_proj, transformer.level_embed, transformer.encoder.layers.*,
adapter_1, layer_1, mask_features}`. Decoder: `sem_seg_head.predictor.{transformer_cross_attention_layers,
transformer_self_attention_layers, transformer_ffn_layers, decoder_norm, query_feat, query_embed, level_embed,
input_proj, class_embed, mask_embed}`. Self- and cross-attention are nn.MultiheadAttention on both sides.
"""
from __future__ import annotations

from workbench.model.backbones import SWIN_NAMES
from workbench.pretrained.keymap import KeyMap, sub_rules
from workbench.pretrained.source import CheckpointFormatError
from workbench.pretrained.swin_keys import UPSTREAM_DROP_PATH, swin_fields_from_shapes, swin_keys

_BN = r"(weight|bias|running_mean|running_var)"

RESNET_RULES = (
    (r"stem\.conv1\.weight", r"stem.0.weight"),
    (rf"stem\.conv1\.norm\.{_BN}", r"stem.1.\1"),
    (r"(res[2-5])\.(\d+)\.conv([123])\.weight", r"stages.\1.\2.conv\3.weight"),
    (rf"(res[2-5])\.(\d+)\.conv([123])\.norm\.{_BN}", r"stages.\1.\2.bn\3.\4"),
    (r"(res[2-5])\.(\d+)\.shortcut\.weight", r"stages.\1.\2.downsample.0.weight"),
    (rf"(res[2-5])\.(\d+)\.shortcut\.norm\.{_BN}", r"stages.\1.\2.downsample.1.\3"),
)


def resnet_key(key: str) -> str | None:
    """detectron2 ResNet (after `backbone.`) -> ours (after `backbone.`, torchvision's ResNet in stages)."""
    return sub_rules(RESNET_RULES, key)


def backbone_fields(tensors) -> dict:
    """ModelConfig backbone fields for upstream backbone tensors: a ResNet's depth from its number of res4
    blocks; a Swin's sizes from shapes (swin_keys.py; drop path: upstream's COCO value)."""
    keys = list(tensors)
    if any(k.startswith("backbone.res4.") for k in keys):
        blocks = {k.split(".")[2] for k in keys if k.startswith("backbone.res4.")}
        depth = {6: "resnet50", 23: "resnet101"}.get(len(blocks))
        if depth is None:
            raise CheckpointFormatError(f"upstream ResNet with {len(blocks)} res4 blocks: only ResNet-50 (6) and "
                                        f"ResNet-101 (23) are supported")
        return {"backbone": depth}
    if "backbone.patch_embed.proj.weight" in tensors:
        shapes = {k: tuple(v.shape) for k, v in tensors.items() if k.startswith("backbone.")}
        return swin_fields_from_shapes(shapes, "backbone.patch_embed.proj.weight", "backbone.layers.{i}.blocks.{j}.",
                                       "backbone.layers.{i}.blocks.0.attn.relative_position_bias_table",
                                       UPSTREAM_DROP_PATH)
    raise CheckpointFormatError("upstream checkpoint: backbone not recognised (expected backbone.res2..res5 for "
                                "ResNet or backbone.patch_embed / backbone.layers for Swin)")


PD, PR = r"sem_seg_head\.pixel_decoder", r"sem_seg_head\.predictor"
UPSTREAM = KeyMap(
    naming="upstream",
    backbone_prefix="backbone.",
    backbone_keys={"resnet50": resnet_key, "resnet101": resnet_key,
                   **{name: swin_keys("upstream", name) for name in SWIN_NAMES}},
    rules=(
        (rf"{PD}\.input_proj\.(\d)\.([01])\.(weight|bias)", r"pixel_decoder.input_proj.\1.\2.\3"),
        (rf"{PD}\.transformer\.level_embed", r"pixel_decoder.level_embed"),
        (rf"{PD}\.transformer\.encoder\.layers\.(\d+)\.self_attn\.(\w+)\.(weight|bias)",
         r"pixel_decoder.encoder.\1.self_attn.\2.\3"),
        (rf"{PD}\.transformer\.encoder\.layers\.(\d+)\.(norm[12])\.(weight|bias)", r"pixel_decoder.encoder.\1.\2.\3"),
        (rf"{PD}\.transformer\.encoder\.layers\.(\d+)\.linear1\.(weight|bias)", r"pixel_decoder.encoder.\1.ffn.0.\2"),
        (rf"{PD}\.transformer\.encoder\.layers\.(\d+)\.linear2\.(weight|bias)", r"pixel_decoder.encoder.\1.ffn.3.\2"),
        (rf"{PD}\.adapter_1\.weight", r"pixel_decoder.lateral_conv.0.weight"),
        (rf"{PD}\.adapter_1\.norm\.(weight|bias)", r"pixel_decoder.lateral_conv.1.\1"),
        (rf"{PD}\.layer_1\.weight", r"pixel_decoder.output_conv.0.weight"),
        (rf"{PD}\.layer_1\.norm\.(weight|bias)", r"pixel_decoder.output_conv.1.\1"),
        (rf"{PD}\.mask_features\.(weight|bias)", r"pixel_decoder.mask_features.\1"),
        (rf"{PR}\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(\w+)",
         r"decoder.cross_attention.\1.attn.\2"),
        (rf"{PR}\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.out_proj\.(weight|bias)",
         r"decoder.cross_attention.\1.attn.out_proj.\2"),
        (rf"{PR}\.transformer_cross_attention_layers\.(\d+)\.norm\.(weight|bias)", r"decoder.cross_attention.\1.norm.\2"),
        (rf"{PR}\.transformer_self_attention_layers\.(\d+)\.self_attn\.(\w+)", r"decoder.self_attention.\1.attn.\2"),
        (rf"{PR}\.transformer_self_attention_layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
         r"decoder.self_attention.\1.attn.out_proj.\2"),
        (rf"{PR}\.transformer_self_attention_layers\.(\d+)\.norm\.(weight|bias)", r"decoder.self_attention.\1.norm.\2"),
        (rf"{PR}\.transformer_ffn_layers\.(\d+)\.linear1\.(weight|bias)", r"decoder.ffn.\1.net.0.\2"),
        (rf"{PR}\.transformer_ffn_layers\.(\d+)\.linear2\.(weight|bias)", r"decoder.ffn.\1.net.3.\2"),
        (rf"{PR}\.transformer_ffn_layers\.(\d+)\.norm\.(weight|bias)", r"decoder.ffn.\1.norm.\2"),
        (rf"{PR}\.(decoder_norm)\.(weight|bias)", r"decoder.\1.\2"),
        (rf"{PR}\.(query_feat|query_embed|level_embed)\.weight", r"decoder.\1.weight"),
        (rf"{PR}\.input_proj\.(\d)\.(weight|bias)", r"decoder.input_proj.\1.\2"),
        (rf"{PR}\.class_embed\.(weight|bias)", r"decoder.class_head.\1"),
        (rf"{PR}\.mask_embed\.layers\.(\d)\.(weight|bias)", r"decoder.mask_embed.layers.\1.\2"),
    ),
    dropped=(
        (r"criterion\.empty_weight", "loss weights of the checkpoint's classes; ours are built from the config"),
        (r"(pixel_mean|pixel_std)", "input normalisation is ModelConfig.pixel_mean/pixel_std"),
        (r".*\.num_batches_tracked", "BatchNorm step counter, not a weight"),
    ),
)
