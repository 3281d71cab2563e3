"""`pretrained_config` and `load_pretrained`: a published Mask2Former checkpoint into our model.

All or nothing: every trunk tensor of the checkpoint must land in the model with the shape it has there, and
every trunk tensor of the model must come from the checkpoint; otherwise the error names the key and nothing
is loaded. What may differ, and is reported: attribute heads (ours only: new), class-head rows (carried over
for categories whose names match the checkpoint's, new for the others; the no-object row always carried), and
tensors dropped on purpose (loss weights, BatchNorm counters: see each KeyMap's `dropped`).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch

from workbench.config import AttributeSpec, ModelConfig
from workbench.pretrained.architecture import KEYMAPS, architecture, as_float, class_names
from workbench.pretrained.keymap import Drop
from workbench.pretrained.report import ClassRows, LoadReport
from workbench.pretrained.source import ATTRIBUTE_FILE, Checkpoint, CheckpointFormatError, read_checkpoint

CLASS_HEAD = ("decoder.class_head.weight", "decoder.class_head.bias")
Source = str | os.PathLike | Checkpoint


def _checkpoint(source: Source) -> Checkpoint:
    return source if isinstance(source, Checkpoint) else read_checkpoint(source)


def pretrained_config(source: Source, num_classes: int | None = None,
                      attributes: Mapping[str, Sequence[str]] | Sequence[AttributeSpec] | None = None,
                      **overrides) -> ModelConfig:
    """The ModelConfig of the checkpoint's architecture (backbone, widths, layers, queries, heads) with your
    `num_classes` (default: the checkpoint's) and `attributes`; `overrides` replace any other field.

    A ResNet's BatchNorm is frozen (`backbone_norm="frozen_bn"`): the checkpoint's statistics are kept, as
    upstream fine-tunes. The other fields (loss weights, pixel mean/std, test_topk) are upstream's COCO values.
    """
    fields = checkpoint_fields(_checkpoint(source))
    fields["num_classes"] = fields["num_classes"] if num_classes is None else num_classes
    fields.update(attributes=attributes or ())
    fields.update(overrides)
    return ModelConfig.coco_r50(**fields)


def checkpoint_fields(ckpt: Checkpoint) -> dict:
    """ModelConfig fields the checkpoint implies: its architecture and classes, BatchNorm frozen (ResNets),
    no separate ImageNet backbone weights (the checkpoint holds the backbone)."""
    fields = architecture(ckpt)
    fields.update(pretrained_backbone=False,
                  backbone_norm="frozen_bn" if fields["backbone"].startswith("resnet") else "auto")
    return fields


# the fields checkpoint_fields may give: what a resumed run takes from its config.yaml instead of the weights
CHECKPOINT_FIELDS = ("backbone", "backbone_window_size", "backbone_drop_path_rate", "num_classes", "hidden_dim",
                     "num_queries", "nheads", "dim_feedforward", "dec_layers", "enc_layers", "enc_dim_feedforward",
                     "mask_dim", "dropout", "pretrained_backbone", "backbone_norm")
SHAPE_FIELDS = ("backbone", "hidden_dim", "num_queries", "nheads", "dim_feedforward", "dec_layers", "enc_layers",
                "enc_dim_feedforward", "mask_dim")  # the ones that decide tensor names and shapes (not the classes)


def _architecture_hint(ckpt: Checkpoint, cfg: ModelConfig) -> str:
    """Why a model does not take the checkpoint's tensors: the model's architecture fields differ from the
    checkpoint's (a config that set them), or they agree and the checkpoint disagrees with itself."""
    theirs = checkpoint_fields(ckpt)
    differ = [f"model.{k} is {getattr(cfg, k)!r}, the checkpoint's {theirs[k]!r}" for k in SHAPE_FIELDS
              if k in theirs and getattr(cfg, k) != theirs[k]]
    if differ:
        return ("the model's architecture differs from the checkpoint's (" + "; ".join(differ) + "): leave those "
                "fields out of the config, they default to the checkpoint's (in Python: "
                f"wb.pretrained_config({ckpt.path!r}))")
    return ("the model is built as the checkpoint describes itself, so the checkpoint's tensors disagree with its "
            "own config.json or other tensors: the file is damaged or was edited")


def _class_rows(ckpt: Checkpoint, theirs: int, ours: int, categories: Sequence[str] | None):
    """(our row -> checkpoint row) for real classes, and the ClassRows record."""
    names = class_names(ckpt, theirs)
    if categories is not None and len(categories) != ours:
        raise ValueError(f"categories has {len(categories)} names but the model has {ours} classes")
    if categories is None:
        if ours == theirs:
            labels = names or tuple(f"class{i}" for i in range(theirs))
            return ({i: i for i in range(ours)},
                    ClassRows({labels[i]: labels[i] for i in range(ours)}, (), (), "position"))
        mine = tuple(f"class{i}" for i in range(ours))
        return {}, ClassRows({}, mine, tuple(names or ()), "name (no category names given: none carried)")
    if names is None:
        return {}, ClassRows({}, tuple(categories), (), "name (the checkpoint has no category names)")
    index = {n: i for i, n in enumerate(names)}
    for i, n in enumerate(names):  # ADE20K's synonym lists ("road, route") also answer to their first name
        index.setdefault(n.split(",")[0].strip(), i)
    pairs = {o: index[n] for o, n in enumerate(categories) if n in index}
    used = set(pairs.values())
    return pairs, ClassRows({categories[o]: names[t] for o, t in pairs.items()},
                            tuple(n for n in categories if n not in index),
                            tuple(n for i, n in enumerate(names) if i not in used), "name")


def _attribute_heads(ckpt: Checkpoint, cfg, state) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """The trained attribute heads of our own export (`attribute_heads.safetensors` beside it), for each of our
    groups whose values and kind are the file's: {our key: tensor}; and the heads left fresh, with why."""
    if not ckpt.attribute_heads:
        return {}, []
    spec = ckpt.attribute_spec or {}
    prefix = "decoder.attribute_heads."
    found, fresh = {}, []
    for group in cfg.attributes:
        keys = [k for k in state if k.startswith(f"{prefix}{group.name}.")]
        theirs = spec.get(group.name)
        why = None
        if theirs is None:
            why = f"not in {ATTRIBUTE_FILE}, initialised fresh"
        elif list(theirs["values"]) != list(group.values) or theirs.get("kind", "single") != group.kind:
            why = (f"{ATTRIBUTE_FILE} has {group.name} {theirs.get('kind', 'single')} {list(theirs['values'])}, this "
                   f"model {group.kind} {list(group.values)}: initialised fresh")
        else:
            for key in keys:
                tensor = ckpt.attribute_heads.get(key[len(prefix):])
                if tensor is None or tuple(tensor.shape) != tuple(state[key].shape):
                    raise CheckpointFormatError(
                        f"{ckpt.path}: {ATTRIBUTE_FILE}: {key[len(prefix):]!r} is "
                        f"{None if tensor is None else tuple(tensor.shape)}, our {key!r} {tuple(state[key].shape)}: "
                        "the file does not fit its own metadata")
                found[key] = tensor
        if why is not None:
            fresh += [(key, f"attribute head: {why}") for key in keys]
    return found, fresh


def load_pretrained(model: torch.nn.Module, source: Source,
                    categories: Sequence[str] | None = None) -> LoadReport:
    """Load `source` (upstream .pkl/.pth, transformers folder, .safetensors) into `model` in place.

    categories: your category names in class-head order, to carry class rows over by name (upstream: COCO's
    80 names; transformers: id2label). None: rows are carried by position when the class counts agree.
    Raises ValueError naming the key when a trunk tensor does not map or does not fit; the model is unchanged.
    """
    ckpt = _checkpoint(source)
    keymap = KEYMAPS[ckpt.naming]
    backbone = model.cfg.backbone
    state = model.state_dict()
    pieces: dict[str, dict[int, torch.Tensor]] = {}
    origin: dict[str, str] = {}  # our key -> the checkpoint key(s) it comes from, for messages
    names: dict[str, dict[int, str]] = {}
    chunks: dict[str, int] = {}
    dropped: list[tuple[str, str]] = []
    for key, tensor in ckpt.tensors.items():
        why = keymap.drop_reason(key)
        if why is not None:
            dropped.append((key, why))
            continue
        slot = keymap.slot(key, backbone)
        if isinstance(slot, Drop):
            dropped.append((key, slot.why))
            continue
        if slot is None:
            raise CheckpointFormatError(f"{ckpt.path}: tensor {key!r} {tuple(tensor.shape)} has no place in our "
                                        f"model ({ckpt.naming} names, backbone {backbone!r}); refusing a partial load")
        if slot.key not in state:
            raise CheckpointFormatError(f"{ckpt.path}: tensor {key!r} maps to our {slot.key!r}, which this model "
                                        f"does not have: {_architecture_hint(ckpt, model.cfg)}")
        pieces.setdefault(slot.key, {})[slot.chunk] = tensor
        names.setdefault(slot.key, {})[slot.chunk] = key
        origin[slot.key] = " + ".join(names[slot.key][c] for c in sorted(names[slot.key]))
        chunks[slot.key] = slot.chunks
    incoming = {}
    for ours, parts in pieces.items():  # q, k, v -> one in_proj / qkv
        if sorted(parts) != list(range(chunks[ours])):
            raise CheckpointFormatError(f"{ckpt.path}: {origin[ours]}: only part(s) {sorted(parts)} of the "
                                        f"{chunks[ours]} that make our {ours!r} are in the checkpoint")
        incoming[ours] = parts[0] if chunks[ours] == 1 else torch.cat([parts[c] for c in range(chunks[ours])], 0)

    heads, new = _attribute_heads(ckpt, model.cfg, state)
    incoming.update(heads)
    origin.update({k: f"{ATTRIBUTE_FILE}: {k[len('decoder.attribute_heads.'):]}" for k in heads})
    for ours, tensor in incoming.items():  # a NaN weight would surface at step 0 as a loss blamed on the data
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointFormatError(f"{ckpt.path}: tensor {origin[ours]!r} {tuple(tensor.shape)} holds {bad} NaN "
                                        "or infinite value(s): the checkpoint is damaged (re-download or re-export "
                                        "it); nothing was loaded")
    missing = []
    for ours in state:
        if ours in incoming or any(ours == k for k, _ in new):
            continue
        if ours.startswith("decoder.attribute_heads."):
            new.append((ours, "attribute head: not in Mask2Former checkpoints, initialised fresh"))
        elif ours.endswith("num_batches_tracked"):
            continue
        else:
            missing.append(ours)
    if missing:
        more = f" and {len(missing) - 1} more ({', '.join(missing[1:6])}, ...)" if len(missing) > 1 else ""
        raise CheckpointFormatError(f"{ckpt.path}: no tensor for our {missing[0]!r}{more}: "
                                    f"{_architecture_hint(ckpt, model.cfg)}")

    new_state = dict(state)
    for ours, tensor in incoming.items():
        if ours in CLASS_HEAD:
            continue
        if tuple(tensor.shape) != tuple(state[ours].shape):
            raise CheckpointFormatError(f"{ckpt.path}: {origin[ours]!r} has shape {tuple(tensor.shape)}, our {ours!r} "
                                        f"has {tuple(state[ours].shape)}: {_architecture_hint(ckpt, model.cfg)}")
        new_state[ours] = as_float(tensor).to(state[ours].dtype)

    weight, bias = incoming[CLASS_HEAD[0]], incoming[CLASS_HEAD[1]]
    my_weight, my_bias = state[CLASS_HEAD[0]], state[CLASS_HEAD[1]]
    if weight.shape[1:] != my_weight.shape[1:]:
        raise CheckpointFormatError(f"{ckpt.path}: {origin[CLASS_HEAD[0]]!r} has shape {tuple(weight.shape)}, our "
                                    f"class head {tuple(my_weight.shape)}: the hidden sizes differ")
    pairs, rows = _class_rows(ckpt, weight.shape[0] - 1, my_weight.shape[0] - 1, categories)
    weight, bias = as_float(weight).to(my_weight.dtype), as_float(bias).to(my_bias.dtype)
    new_weight, new_bias = my_weight.clone(), my_bias.clone()
    for o, t in pairs.items():
        new_weight[o], new_bias[o] = weight[t], bias[t]
    new_weight[-1], new_bias[-1] = weight[-1], bias[-1]  # no-object
    new_state[CLASS_HEAD[0]], new_state[CLASS_HEAD[1]] = new_weight, new_bias
    if rows.new:
        new.append(("decoder.class_head rows " + ", ".join(rows.new),
                    "categories the checkpoint lacks: initialised fresh"))
    if rows.dropped:
        dropped.append((f"{origin[CLASS_HEAD[0]]} rows for {len(rows.dropped)} categories",
                        "categories not among yours"))

    model.load_state_dict(new_state, strict=True)
    loaded = tuple(k for k in incoming if k in state)
    return LoadReport(ckpt.path, ckpt.kind, ckpt.naming, loaded, tuple(new), tuple(dropped), rows)
