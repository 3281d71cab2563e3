"""transformers' names (`Mask2FormerForUniversalSegmentation`) -> ours, and its config.json <-> ModelConfig.

Backbone (transformers' ResNetBackbone under `model.pixel_level_module.encoder.`; Swin: swin_keys.py): `embedder.embedder.
{convolution, normalization}`, `encoder.stages.{s}.layers.{b}.{shortcut, layer.{j}}.{convolution,
normalization}`; stage s is our res{s+2}, layer j our conv{j+1}/bn{j+1}. The decoder's self-attention is
transformers' own module with separate q/k/v projections (`self_attn.{q,k,v}_proj`): they are the three
chunks, in that order, of our nn.MultiheadAttention's `in_proj_weight`/`in_proj_bias` (the same in_proj
layout upstream and transformers' cross-attention use). transformers counts the learnable-query prediction
as a decoder layer: its `decoder_layers` is our `dec_layers + 1`.

This module does not import transformers: reading a checkpoint needs only safetensors and json.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from workbench.errors import UsageError
from workbench.model.backbones import SWIN_NAMES
from workbench.pretrained.keymap import KeyMap, Slot, sub_rules
from workbench.pretrained.source import CheckpointFormatError
from workbench.pretrained.swin_keys import UPSTREAM_DROP_PATH, swin_fields, swin_fields_from_shapes, swin_keys

_BN = r"(weight|bias|running_mean|running_var)"

RESNET_RULES = (
    (r"embedder\.embedder\.convolution\.weight", r"stem.0.weight"),
    (rf"embedder\.embedder\.normalization\.{_BN}", r"stem.1.\1"),
)
RESNET_DEPTHS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101"}


def resnet_key(key: str) -> str | None:
    """transformers ResNetBackbone (after `model.pixel_level_module.encoder.`) -> ours (after `backbone.`)."""
    found = sub_rules(RESNET_RULES, key)
    if found:
        return found
    m = re.fullmatch(rf"encoder\.stages\.([0-3])\.layers\.(\d+)\.(shortcut|layer\.([012]))\."
                     rf"(convolution\.weight|normalization\.{_BN})", key)
    if not m:
        return None
    stage, block, part, j, leaf = m.group(1), m.group(2), m.group(3), m.group(4), m.group(5)
    is_conv = leaf == "convolution.weight"
    if part == "shortcut":
        module = "downsample.0" if is_conv else "downsample.1"
    else:
        module = f"conv{int(j) + 1}" if is_conv else f"bn{int(j) + 1}"
    leaf = "weight" if is_conv else leaf.split(".", 1)[1]
    return f"stages.res{int(stage) + 2}.{block}.{module}.{leaf}"


def _qkv(m: re.Match) -> Slot:
    return Slot(f"decoder.self_attention.{m.group(1)}.attn.in_proj_{m.group(3)}", "qkv".index(m.group(2)), 3)


PL, TM = r"model\.pixel_level_module\.decoder", r"model\.transformer_module"
TRANSFORMERS = KeyMap(
    naming="transformers",
    backbone_prefix="model.pixel_level_module.encoder.",
    backbone_keys={"resnet50": resnet_key, "resnet101": resnet_key,
                   **{name: swin_keys("transformers", name) for name in SWIN_NAMES}},
    rules=(
        (rf"{PL}\.input_projections\.(\d)\.([01])\.(weight|bias)", r"pixel_decoder.input_proj.\1.\2.\3"),
        (rf"{PL}\.level_embed", r"pixel_decoder.level_embed"),
        (rf"{PL}\.encoder\.layers\.(\d+)\.self_attn\.(sampling_offsets|attention_weights|value_proj|output_proj)"
         rf"\.(weight|bias)", r"pixel_decoder.encoder.\1.self_attn.\2.\3"),
        (rf"{PL}\.encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"pixel_decoder.encoder.\1.norm1.\2"),
        (rf"{PL}\.encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"pixel_decoder.encoder.\1.ffn.0.\2"),
        (rf"{PL}\.encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"pixel_decoder.encoder.\1.ffn.3.\2"),
        (rf"{PL}\.encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"pixel_decoder.encoder.\1.norm2.\2"),
        (rf"{PL}\.adapter_1\.([01])\.(weight|bias)", r"pixel_decoder.lateral_conv.\1.\2"),
        (rf"{PL}\.layer_1\.([01])\.(weight|bias)", r"pixel_decoder.output_conv.\1.\2"),
        (rf"{PL}\.mask_projection\.(weight|bias)", r"pixel_decoder.mask_features.\1"),
        (rf"{TM}\.decoder\.layers\.(\d+)\.cross_attn\.(in_proj_weight|in_proj_bias)", r"decoder.cross_attention.\1.attn.\2"),
        (rf"{TM}\.decoder\.layers\.(\d+)\.cross_attn\.out_proj\.(weight|bias)",
         r"decoder.cross_attention.\1.attn.out_proj.\2"),
        (rf"{TM}\.decoder\.layers\.(\d+)\.cross_attn_layer_norm\.(weight|bias)", r"decoder.cross_attention.\1.norm.\2"),
        (rf"{TM}\.decoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", _qkv),
        (rf"{TM}\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)",
         r"decoder.self_attention.\1.attn.out_proj.\2"),
        (rf"{TM}\.decoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"decoder.self_attention.\1.norm.\2"),
        (rf"{TM}\.decoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"decoder.ffn.\1.net.0.\2"),
        (rf"{TM}\.decoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"decoder.ffn.\1.net.3.\2"),
        (rf"{TM}\.decoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"decoder.ffn.\1.norm.\2"),
        (rf"{TM}\.decoder\.layernorm\.(weight|bias)", r"decoder.decoder_norm.\1"),
        (rf"{TM}\.queries_features\.weight", r"decoder.query_feat.weight"),
        (rf"{TM}\.queries_embedder\.weight", r"decoder.query_embed.weight"),
        (rf"{TM}\.level_embed\.weight", r"decoder.level_embed.weight"),
        (rf"{TM}\.input_projections\.(\d)\.(weight|bias)", r"decoder.input_proj.\1.\2"),
        (rf"{TM}\.decoder\.mask_predictor\.mask_embedder\.(\d)\.0\.(weight|bias)", r"decoder.mask_embed.layers.\1.\2"),
        (r"class_predictor\.(weight|bias)", r"decoder.class_head.\1"),
    ),
    dropped=(
        (r"criterion\.empty_weight", "loss weights of the checkpoint's classes; ours are built from the config"),
        (r".*\.num_batches_tracked", "BatchNorm step counter, not a weight"),
    ),
)


def backbone_fields(tensors, config: Mapping[str, Any] | None = None) -> dict:
    """ModelConfig backbone fields for a transformers checkpoint: from config.json's backbone_config when
    given, else from the backbone's tensor names and shapes (ResNet depth from its blocks per stage; Swin sizes
    from shapes, drop path then upstream's COCO value)."""
    keys = list(tensors)
    backbone = (config or {}).get("backbone_config") or {}
    kind = backbone.get("model_type") or ("resnet" if any(".embedder.embedder." in k for k in keys) else
                                          "swin" if any(".embeddings.patch_embeddings." in k for k in keys) else None)
    if kind == "resnet":
        if backbone:
            depths = tuple(backbone.get("depths", ()))
            if backbone.get("layer_type", "bottleneck") != "bottleneck":
                raise CheckpointFormatError("config.json backbone_config: only bottleneck ResNets (50/101) are "
                                            "supported")
        else:
            blocks: dict[int, set[str]] = {}
            for k in keys:
                m = re.match(r"model\.pixel_level_module\.encoder\.encoder\.stages\.(\d)\.layers\.(\d+)\.", k)
                if m:
                    blocks.setdefault(int(m.group(1)), set()).add(m.group(2))
            depths = tuple(len(blocks.get(s, ())) for s in range(4))
        if depths not in RESNET_DEPTHS:
            raise CheckpointFormatError(f"transformers ResNet backbone with depths {list(depths)}: supported "
                                        f"{[list(d) for d in RESNET_DEPTHS]} (ResNet-50/101)")
        return {"backbone": RESNET_DEPTHS[depths]}
    if kind == "swin":
        if backbone:
            if backbone.get("use_absolute_embeddings"):
                raise CheckpointFormatError("config.json backbone_config: Swin with absolute position embeddings "
                                            "is not supported")
            return swin_fields(backbone.get("embed_dim", 96), backbone.get("depths", [2, 2, 6, 2]),
                               backbone.get("num_heads", [3, 6, 12, 24]), backbone.get("window_size", 7),
                               float(backbone.get("drop_path_rate", 0.1)))
        shapes = {k: tuple(v.shape) for k, v in tensors.items() if k.startswith(TRANSFORMERS.backbone_prefix)}
        p = TRANSFORMERS.backbone_prefix
        return swin_fields_from_shapes(shapes, p + "embeddings.patch_embeddings.projection.weight",
                                       p + "encoder.layers.{i}.blocks.{j}.",
                                       p + "encoder.layers.{i}.blocks.0.attention.self.relative_position_bias_table",
                                       UPSTREAM_DROP_PATH)
    raise CheckpointFormatError(f"transformers checkpoint: backbone {kind!r} not supported (ResNet-50/101, "
                                "Swin-T/S/B/L are)")


def model_fields(config: Mapping[str, Any], path: str) -> dict[str, Any]:
    """ModelConfig architecture fields from a transformers Mask2Former config.json."""
    def need(name, expected):
        if config.get(name, expected) != expected:
            raise CheckpointFormatError(f"{path}: config.json {name} = {config.get(name)!r}; only {expected!r} is "
                                        "supported")

    need("pre_norm", False)
    need("activation_function", "relu")
    need("common_stride", 4)
    need("enforce_input_projection", False)
    if config.get("feature_size", 256) != config.get("hidden_dim", 256):
        raise CheckpointFormatError(f"{path}: config.json feature_size {config.get('feature_size')} != hidden_dim "
                                    f"{config.get('hidden_dim')}: our pixel decoder works at the decoder's hidden size")
    return dict(
        hidden_dim=config.get("hidden_dim", 256),
        num_queries=config.get("num_queries", 100),
        nheads=config.get("num_attention_heads", 8),
        dim_feedforward=config.get("dim_feedforward", 2048),
        dec_layers=config.get("decoder_layers", 10) - 1,
        enc_layers=config.get("encoder_layers", 6),
        enc_dim_feedforward=config.get("encoder_feedforward_dim", 1024),
        mask_dim=config.get("mask_feature_size", 256),
        dropout=float(config.get("dropout", 0.0)),
    )


def to_config_dict(cfg, class_names) -> dict[str, Any]:
    """The `Mask2FormerConfig` keyword arguments for our ModelConfig `cfg` (export)."""
    backbones = {v: k for k, v in RESNET_DEPTHS.items()}
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if cfg.backbone in backbones:
        backbone_config = dict(model_type="resnet", depths=list(backbones[cfg.backbone]), layer_type="bottleneck",
                               hidden_sizes=[256, 512, 1024, 2048], embedding_size=64, out_features=stages)
    elif cfg.backbone in SWIN_NAMES:
        from workbench.model.backbones.swin import SWIN_VARIANTS

        v = SWIN_VARIANTS[cfg.backbone]
        backbone_config = dict(model_type="swin", embed_dim=v.embed_dim, depths=list(v.depths),
                               num_heads=list(v.num_heads), window_size=cfg.backbone_window_size,
                               drop_path_rate=cfg.backbone_drop_path_rate, out_features=stages)
    else:
        raise UsageError(f"export to transformers: backbone {cfg.backbone!r} has no transformers equivalent here "
                         f"(supported: {sorted(backbones)} and {list(SWIN_NAMES)})")
    if cfg.enc_n_points != 4:
        raise UsageError("export to transformers: transformers' pixel decoder uses 4 sampling points "
                         f"(enc_n_points), this model has {cfg.enc_n_points}")
    if cfg.hidden_dim % 32:
        raise UsageError(f"export to transformers: its GroupNorm has 32 groups; hidden_dim {cfg.hidden_dim} "
                         f"is not a multiple of 32")
    id2label = {i: name for i, name in enumerate(class_names)}
    return dict(
        backbone_config=backbone_config,
        feature_size=cfg.hidden_dim, mask_feature_size=cfg.mask_dim, hidden_dim=cfg.hidden_dim,
        encoder_feedforward_dim=cfg.enc_dim_feedforward, encoder_layers=cfg.enc_layers,
        decoder_layers=cfg.dec_layers + 1, num_attention_heads=cfg.nheads, dim_feedforward=cfg.dim_feedforward,
        num_queries=cfg.num_queries, dropout=cfg.dropout, no_object_weight=cfg.loss.no_object_weight,
        class_weight=cfg.loss.class_weight, mask_weight=cfg.loss.mask_weight, dice_weight=cfg.loss.dice_weight,
        train_num_points=cfg.loss.num_points, oversample_ratio=cfg.loss.oversample_ratio,
        importance_sample_ratio=cfg.loss.importance_sample_ratio,
        id2label=id2label, label2id={name: i for i, name in id2label.items()},
    )
