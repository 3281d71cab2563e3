"""Our trained model -> a transformers `Mask2FormerForUniversalSegmentation` folder (config.json +
model.safetensors) that `from_pretrained` loads and runs with the same class and mask logits.

transformers' model has no attribute heads: they are written beside it, to attribute_heads.safetensors (the
attribute names and values in its metadata), so nothing trained is lost. The folder is written to a temporary
sibling and renamed into place: an error leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from workbench.pretrained.keymap import Drop
from workbench.pretrained.source import ATTRIBUTE_FILE, read_checkpoint
from workbench.pretrained.transformers import TRANSFORMERS, to_config_dict


def transformers_state(model, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' state dict (keys and shapes of `reference`, a fresh transformers model as saved) filled
    from our `model`. What the key map drops on load (loss weights, BatchNorm counters, recomputed buffers)
    keeps the reference's value; every one of our tensors but the attribute heads must be used (an error
    names the first that is not)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    backbone = model.cfg.backbone
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, value in reference.items():
        shape = tuple(value.shape)
        slot = TRANSFORMERS.slot(key, backbone)
        if TRANSFORMERS.drop_reason(key) is not None or isinstance(slot, Drop):
            out[key] = value.detach().clone()
            continue
        if slot is None or slot.key not in state:
            raise ValueError(f"export: transformers' {key!r} has no counterpart in our model "
                             f"(mapped to {None if slot is None else slot.key!r})")
        tensor = state[slot.key]
        if slot.chunks > 1:
            tensor = tensor.chunk(slot.chunks, 0)[slot.chunk]
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"export: our {slot.key!r} {tuple(tensor.shape)} does not fit transformers' {key!r} "
                             f"{tuple(shape)}")
        out[key] = tensor.contiguous().clone()
        used.add(slot.key)
    left = [k for k in state if k not in used and not k.startswith("decoder.attribute_heads.")
            and not k.endswith("num_batches_tracked")]
    if left:
        raise ValueError(f"export: our {left[0]!r} has no place in transformers' model ({len(left)} such tensors)")
    return out


def export_transformers(model, out_dir: str | os.PathLike, class_names: Sequence[str]) -> Path:
    """Write `model` as a transformers Mask2Former folder at `out_dir` (must not exist or be empty)."""
    from safetensors.torch import save_file
    try:
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
    except ImportError as err:
        raise ImportError("export to the transformers format needs the `transformers` package (a dev "
                          "dependency: pip install -e '.[dev]')") from err

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new folder")
    cfg = model.cfg
    if len(class_names) != cfg.num_classes:
        raise ValueError(f"export: {len(class_names)} class names for a model with {cfg.num_classes} classes")
    hf_config = Mask2FormerConfig(**to_config_dict(cfg, class_names))
    heads = {k[len("decoder.attribute_heads."):]: v.detach().cpu().contiguous()
             for k, v in model.state_dict().items() if k.startswith("decoder.attribute_heads.")}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        # transformers' own save gives config.json and the names it writes on disk (for Swin they differ from
        # its in-memory ones); the same names are then filled with our weights.
        Mask2FormerForUniversalSegmentation(hf_config).save_pretrained(tmp)
        reference = read_checkpoint(tmp).tensors
        for written in list(tmp.glob("model*.safetensors")) + list(tmp.glob("model.safetensors.index.json")):
            written.unlink()
        save_file(transformers_state(model, reference), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if heads:
            spec = {a.name: {"values": list(a.values), "kind": a.kind,
                             **({"threshold": a.threshold} if a.multi else {})} for a in cfg.attributes}
            save_file(heads, str(tmp / ATTRIBUTE_FILE), metadata={
                "attributes": json.dumps(spec),
                "about": "workbench attribute heads on the decoder's normalised query output (the input of "
                         "transformers' class_predictor): a single-label group (kind single) is Linear(hidden, "
                         "K+1) with softmax, row K = no object; a multi-label group (kind multi) is "
                         "Linear(hidden, K), one sigmoid per value, a value predicted where its sigmoid > threshold "
                         "(strictly, as workbench inference does)"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700: the export is meant to be shared
        for written in tmp.iterdir():  # and its files the mode open() gives (safetensors writes some 0600)
            if written.is_file():
                os.chmod(written, 0o666 & ~umask)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
