"""Reading a published Mask2Former checkpoint into named tensors, whatever of the four forms it comes in.

    upstream .pkl        model zoo `model_final_*.pkl`: {"model": {name: numpy array}, ...}, read by a
                         restricted unpickler (safe_pickle.py), never plain `pickle.load`
    detectron2 .pth      what detectron2's checkpointer saves: {"model": state_dict, ...}, torch.load(weights_only)
    transformers folder  config.json + model.safetensors (or shards listed in model.safetensors.index.json)
    lone .safetensors    tensors only; the naming (upstream or transformers) is read from the keys

`naming` says whose parameter names the tensors use: "upstream" (detectron2 / facebookresearch/Mask2Former:
`backbone.res2.0.conv1.weight`, `sem_seg_head.predictor.class_embed.weight`) or "transformers"
(`model.pixel_level_module.encoder...`, `class_predictor.weight`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from workbench.errors import WorkbenchError

KINDS = ("upstream_pkl", "detectron2_pth", "transformers_dir", "safetensors")
UPSTREAM_PREFIXES = ("backbone.", "sem_seg_head.")
TRANSFORMERS_PREFIXES = ("model.pixel_level_module.", "model.transformer_module.")


class CheckpointFormatError(WorkbenchError, ValueError):
    """A published checkpoint this reader cannot use (damaged, another format, other names); names the file."""


@dataclass(frozen=True)
class Checkpoint:
    """tensors {name: Tensor} in the checkpoint's own naming; `config` is transformers' config.json (or None)."""

    path: str
    kind: str  # one of KINDS
    naming: str  # "upstream" | "transformers"
    tensors: Mapping[str, torch.Tensor]
    config: Mapping[str, Any] | None = field(default=None, repr=False)
    # our own export's attribute_heads.safetensors beside the weights: {"<group>.weight": Tensor, ...} and its
    # metadata {group: {"values": [...], "kind": ..., "threshold"?}}; None for any other checkpoint
    attribute_heads: Mapping[str, torch.Tensor] | None = field(default=None, repr=False)
    attribute_spec: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Names of the class head's rows (transformers' id2label; the COCO names for upstream), if known."""
        if self.config and self.config.get("id2label"):
            labels = self.config["id2label"]
            if not isinstance(labels, Mapping):
                raise CheckpointFormatError(f"{self.path}: config.json id2label is a {type(labels).__name__}, "
                                            "expected an object {\"0\": name, ...}")
            gaps = [i for i in range(len(labels)) if str(i) not in labels and i not in labels]
            if gaps:
                raise CheckpointFormatError(f"{self.path}: config.json id2label has no class {gaps[0]} (its "
                                            f"{len(labels)} keys must be the class ids 0..{len(labels) - 1})")
            return tuple(labels[str(i)] if str(i) in labels else labels[i] for i in range(len(labels)))
        return None


def naming_of(keys, path) -> str:
    """Whose naming a set of tensor names follows; an error naming the file when neither."""
    keys = list(keys)
    if any(k.startswith(TRANSFORMERS_PREFIXES) for k in keys):
        return "transformers"
    if any(k.startswith("sem_seg_head.") for k in keys):
        return "upstream"
    sample = ", ".join(keys[:5])
    raise CheckpointFormatError(f"{path}: tensor names follow neither upstream Mask2Former (sem_seg_head.*, "
                                f"backbone.*) nor transformers (model.pixel_level_module.*, "
                                f"model.transformer_module.*); first names: {sample}")


def _as_tensors(state: Mapping[str, Any], path) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not torch.is_tensor(value):
            raise CheckpointFormatError(f"{path}: model entry {name!r} is a {type(value).__name__}, not an array")
        out[name] = value
    return out


def _model_dict(obj: Any, path) -> Mapping[str, Any]:
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        return obj["model"]
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj) and \
            all(isinstance(v, (np.ndarray, torch.Tensor)) for v in obj.values()):
        return obj  # a bare state dict
    keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointFormatError(f"{path}: expected {{'model': {{name: array}}, ...}} (detectron2's format); "
                                f"found {keys}")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise CheckpointFormatError(f"{path}: not a readable .safetensors file ({err}); damaged, cut short or "
                                    f"another format") from err


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointFormatError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from err
    except UnicodeDecodeError as err:
        raise CheckpointFormatError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err


def _read_transformers_dir(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{path}: a transformers checkpoint folder needs config.json (not found)")
    config = _read_json(config_path)
    if not isinstance(config, Mapping):
        raise CheckpointFormatError(f"{config_path}: expected a JSON object (transformers' config), got "
                                    f"{type(config).__name__}")
    if config.get("model_type") != "mask2former":
        raise CheckpointFormatError(f"{config_path}: model_type is {config.get('model_type')!r}, expected "
                                    f"'mask2former'")
    single, index = path / "model.safetensors", path / "model.safetensors.index.json"
    if single.is_file():
        return _read_safetensors(single), config
    if index.is_file():
        index_doc = _read_json(index)
        weight_map = index_doc.get("weight_map") if isinstance(index_doc, Mapping) else None
        if not isinstance(weight_map, Mapping):
            raise CheckpointFormatError(f"{index}: no 'weight_map' {{tensor name: shard file}}")
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(map(str, weight_map.values()))):
            shard_path = path / shard
            if Path(shard).name != shard or shard in ("", ".", ".."):  # `../x`, `/abs/x`, `sub/x`: not a shard
                raise CheckpointFormatError(f"{index}: weight_map names {shard!r}, which is not a file name in "
                                            f"{path}; a checkpoint's shards must sit beside its index")
            if not shard_path.is_file():
                raise FileNotFoundError(f"{index}: lists shard {shard}, which is not in {path}")
            tensors.update(_read_safetensors(shard_path))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise CheckpointFormatError(f"{index}: tensors listed but absent from their shards: {missing[:5]}")
        return tensors, config
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json (pytorch_model.bin is "
                            f"not read: convert it with transformers' save_pretrained(safe_serialization=True))")


ATTRIBUTE_FILE = "attribute_heads.safetensors"  # written by pretrained/export.py beside model.safetensors


def _read_attribute_heads(folder: Path) -> tuple[dict[str, torch.Tensor] | None, dict | None]:
    """Our export's attribute heads and their groups (values, kind, threshold), when the folder has them."""
    path = folder / ATTRIBUTE_FILE
    if not path.is_file():
        return None, None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            spec = json.loads((f.metadata() or {}).get("attributes", "null"))
    except (SafetensorError, json.JSONDecodeError) as err:
        raise CheckpointFormatError(f"{path}: not a readable attribute-heads file ({err})") from err
    if not isinstance(spec, Mapping) or not all(isinstance(g, Mapping) and isinstance(g.get("values"), list)
                                                 for g in spec.values()):
        raise CheckpointFormatError(f"{path}: its metadata 'attributes' must map each group to "
                                    "{values, kind}; written by `workbench export-weights`?")
    return _read_safetensors(path), dict(spec)


def read_checkpoint(source: str | os.PathLike) -> Checkpoint:
    """Read `source` (see the module docstring for the four forms) into a `Checkpoint`."""
    path = Path(source)
    if path.is_dir():
        tensors, config = _read_transformers_dir(path)
        heads, spec = _read_attribute_heads(path)
        return Checkpoint(str(path), "transformers_dir", naming_of(tensors, path), tensors, config, heads, spec)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (expected a .pkl, .pth, .safetensors file or a "
                                f"transformers folder with config.json)")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        from workbench.pretrained.safe_pickle import load_numpy_pickle

        tensors = _as_tensors(_model_dict(load_numpy_pickle(path), path), path)
        return Checkpoint(str(path), "upstream_pkl", naming_of(tensors, path), tensors)
    if suffix in (".pth", ".pt"):
        from workbench.engine.checkpoint import load_checkpoint

        tensors = _as_tensors(_model_dict(load_checkpoint(path), path), path)
        return Checkpoint(str(path), "detectron2_pth", naming_of(tensors, path), tensors)
    if suffix == ".safetensors":
        tensors = _read_safetensors(path)
        config_path = path.parent / "config.json"
        config = _read_json(config_path) if config_path.is_file() else None
        if not isinstance(config, Mapping) or config.get("model_type") != "mask2former":
            config = None
        heads, spec = _read_attribute_heads(path.parent) if path.name != ATTRIBUTE_FILE else (None, None)
        return Checkpoint(str(path), "safetensors", naming_of(tensors, path), tensors, config, heads, spec)
    raise CheckpointFormatError(f"{path}: unknown checkpoint kind {suffix!r}; expected .pkl (upstream model zoo), "
                                f".pth (detectron2), .safetensors, or a transformers folder")
