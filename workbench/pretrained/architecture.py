"""The architecture a checkpoint was trained with, read from transformers' config.json or, for upstream and
lone files, from tensor names and shapes (after renaming to ours).

From shapes: hidden size and queries (`decoder.query_feat.weight` (Q, D)), decoder layers (count of
`decoder.self_attention.*`), feedforward sizes (first FFN linear), encoder layers, mask size, classes (class
head rows - 1) and attention heads from the deformable attention's `attention_weights` rows (heads x 3 levels
x 4 points: upstream's fixed 3 levels and 4 points are assumed; the decoder uses the same head count, as
upstream's configs do).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from workbench.pretrained import transformers as hf
from workbench.pretrained import upstream
from workbench.pretrained.keymap import KeyMap, Slot
from workbench.pretrained.source import Checkpoint, CheckpointFormatError

KEYMAPS: dict[str, KeyMap] = {"upstream": upstream.UPSTREAM, "transformers": hf.TRANSFORMERS}
N_LEVELS, N_POINTS = 3, 4


def backbone_of(ckpt: Checkpoint) -> dict[str, Any]:
    """ModelConfig backbone fields (`backbone`, and for Swin its window and drop-path rate)."""
    if ckpt.naming == "transformers":
        return hf.backbone_fields(ckpt.tensors, ckpt.config)
    return upstream.backbone_fields(ckpt.tensors)


def head_shapes(ckpt: Checkpoint) -> dict[str, tuple[int, ...]]:
    """Our key -> shape for the checkpoint's non-backbone tensors (q/k/v chunks counted whole)."""
    keymap = KEYMAPS[ckpt.naming]
    shapes: dict[str, tuple[int, ...]] = {}
    for key, tensor in ckpt.tensors.items():
        if key.startswith(keymap.backbone_prefix):
            continue
        slot = keymap.slot(key, backbone="")
        if isinstance(slot, Slot):
            shape = tuple(tensor.shape)
            shapes[slot.key] = (shape[0] * slot.chunks, *shape[1:]) if shape else shape
    return shapes


def _count(shapes, pattern: str) -> int:
    return len({m.group(1) for k in shapes if (m := re.match(pattern, k))})


def _need(shapes: Mapping[str, tuple[int, ...]], key: str, path: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointFormatError(f"{path}: no tensor for {key} (after renaming); is this a Mask2Former "
                                    "checkpoint?")
    return shapes[key]


def architecture(ckpt: Checkpoint) -> dict[str, Any]:
    """ModelConfig fields: backbone, num_classes and the architecture (see the module docstring). With a
    config.json its fields must agree with the tensors' shapes: a file whose config says one size and whose
    tensors have another is named as such here, not later as a model that does not fit."""
    shapes = head_shapes(ckpt)
    num_classes = _need(shapes, "decoder.class_head.weight", ckpt.path)[0] - 1
    try:
        backbone = backbone_of(ckpt)
    except CheckpointFormatError as err:
        raise CheckpointFormatError(str(err) if ckpt.path in str(err) else f"{ckpt.path}: {err}") from err
    fields = _fields_from_shapes(ckpt, shapes)
    if ckpt.config is not None and ckpt.naming == "transformers":
        stated = hf.model_fields(ckpt.config, ckpt.path)
        compared = [k for k in fields if k != "enc_dim_feedforward" or fields["enc_layers"]]
        wrong = [f"{k} {stated[k]} (config.json) but {fields[k]} (tensors)" for k in compared if stated[k] != fields[k]]
        try:
            tensors_backbone = hf.backbone_fields(ckpt.tensors)["backbone"]
        except CheckpointFormatError as err:
            tensors_backbone = f"unreadable ({err})"
        if tensors_backbone != backbone["backbone"]:
            wrong.insert(0, f"backbone {backbone['backbone']} (config.json) but {tensors_backbone} (tensors)")
        if wrong:
            raise CheckpointFormatError(f"{ckpt.path}: config.json disagrees with its own tensors: {'; '.join(wrong)}; "
                                        "the folder is damaged or one of its files was replaced (config.json and "
                                        "model.safetensors must come from one save_pretrained)")
        fields = stated
    return dict(**backbone, num_classes=num_classes, **fields)


def _fields_from_shapes(ckpt: Checkpoint, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    num_queries, hidden = _need(shapes, "decoder.query_feat.weight", ckpt.path)
    enc_layers = _count(shapes, r"pixel_decoder\.encoder\.(\d+)\.")
    nheads = 8
    if enc_layers:
        rows = _need(shapes, "pixel_decoder.encoder.0.self_attn.attention_weights.weight", ckpt.path)[0]
        nheads = rows // (N_LEVELS * N_POINTS)
    conv_dim = _need(shapes, "pixel_decoder.input_proj.0.0.weight", ckpt.path)[0]
    if conv_dim != hidden:
        raise CheckpointFormatError(f"{ckpt.path}: pixel decoder width {conv_dim} != decoder width {hidden}: our "
                                    "pixel decoder works at the decoder's hidden size")
    return dict(
        hidden_dim=hidden, num_queries=num_queries, nheads=nheads,
        dim_feedforward=_need(shapes, "decoder.ffn.0.net.0.weight", ckpt.path)[0],
        dec_layers=_count(shapes, r"decoder\.self_attention\.(\d+)\."),
        enc_layers=enc_layers,
        enc_dim_feedforward=shapes["pixel_decoder.encoder.0.ffn.0.weight"][0] if enc_layers else 1024,
        mask_dim=_need(shapes, "pixel_decoder.mask_features.weight", ckpt.path)[0],
    )


def upstream_class_names(num_classes: int) -> tuple[str, ...] | None:
    """The names of an upstream checkpoint's class rows, known by their count: COCO instance (80), COCO
    panoptic (133: the 80 things, then 53 stuff), ADE20K semantic (150)."""
    from workbench.pretrained.ade20k import ADE20K_CLASSES
    from workbench.pretrained.coco import COCO_INSTANCE_CLASSES, COCO_PANOPTIC_CLASSES

    return {80: COCO_INSTANCE_CLASSES, 133: COCO_PANOPTIC_CLASSES, 150: ADE20K_CLASSES}.get(num_classes)


def id2label_names(labels: Any, num_classes: int, path: str) -> tuple[str, ...]:
    """config.json's `id2label` -> one name per class-head row, in row order. It must name every row 0..C-1 once
    with distinct names: a short, gapped or repeated list would carry class rows to the wrong categories (or
    none) in silence."""
    where = f"{path}: config.json id2label"
    if not isinstance(labels, Mapping):
        raise CheckpointFormatError(f"{where}: expected an object {{\"0\": name, ...}}, got {type(labels).__name__}")
    try:
        by_row = {int(k): v for k, v in labels.items()}
    except (TypeError, ValueError):
        raise CheckpointFormatError(f"{where}: keys must be row numbers, got {sorted(map(str, labels))[:5]}") from None
    gaps = [i for i in range(len(by_row)) if i not in by_row]
    if gaps:
        raise CheckpointFormatError(f"{where} has no class {gaps[0]} (its {len(by_row)} keys must be the class ids "
                                    f"0..{len(by_row) - 1})")
    if len(by_row) != num_classes:
        raise CheckpointFormatError(f"{where} names {len(by_row)} classes but the class head has {num_classes} "
                                    "category rows (+ no-object): give every row its name")
    seen: dict[str, int] = {}
    for i in range(num_classes):
        name = by_row[i]
        if not isinstance(name, str) or not name:
            raise CheckpointFormatError(f"{where}[{i}]: expected a non-empty name, got {name!r}")
        if name in seen:
            raise CheckpointFormatError(f"{where}: {name!r} names rows {seen[name]} and {i}; names must be distinct "
                                        "(categories are matched by name)")
        seen[name] = i
    return tuple(by_row[i] for i in range(num_classes))


def class_names(ckpt: Checkpoint, num_classes: int) -> tuple[str, ...] | None:
    """The checkpoint's category names in class-head order: transformers' id2label; for an upstream checkpoint
    COCO's 80 or 133 (panoptic) or ADE20K's 150 by the class count; None when unknown."""
    labels = ckpt.config.get("id2label") if ckpt.config else None
    if labels:
        return id2label_names(labels, num_classes, ckpt.path)
    if ckpt.naming == "upstream":
        return upstream_class_names(num_classes)
    return None


def as_float(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() else t
