"""YAML config files <-> the frozen dataclasses in config/ (one file per section).

Unknown keys are errors that name the full key path (`model.loss.num_pointz`), so a typo never silently
falls back to a default. `model.preset` (one of MODEL_PRESETS: tiny, coco_r50, coco_r101, coco_swin_t, coco_swin_s,
coco_swin_b, coco_swin_l) starts from that `ModelConfig` preset; keys given next to it override it.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from workbench import config as C
from workbench.errors import WorkbenchError


MODEL_PRESETS = ("tiny", "coco_r50", "coco_r101", "coco_swin_t", "coco_swin_s", "coco_swin_b", "coco_swin_l")


class ConfigError(WorkbenchError, ValueError):
    exit_code = 2


_YAML11_MISSED_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(tp, value, path: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):  # a section: `solver:` left empty is its defaults
        return from_dict(tp, {} if value is None else value, path)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return value if value is None else _convert(args[0], value, path)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_convert(inner, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_MISSED_FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML follows YAML 1.1, where `2e-3` (no dot) is a string; users write it
    if tp in (int, float) and isinstance(value, bool):  # YAML's true/false are ints to Python: not numbers here
        raise ConfigError(f"{path}: expected {tp.__name__}, got bool {value!r}")
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    if tp is float and not math.isfinite(value):  # YAML's .nan / .inf: no field means "not a number"
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    return value


def from_dict(cls, data: Mapping[str, Any], path: str = ""):
    """Build dataclass `cls` from a mapping; nested dataclasses recurse; unknown keys raise with their path."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, vars(C))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        where = ", ".join(f"{path}.{k}" if path else k for k in unknown)
        raise ConfigError(f"unknown config key(s): {where}; known under {path or 'top level'}: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and
                f.default_factory is dataclasses.MISSING and f.name not in kwargs]
    if required:
        where = ", ".join(f"{path}.{k}" if path else k for k in required)
        raise ConfigError(f"{where}: required (no default); set it in the config" +
                          (" or set data.train (it defaults to that file's)" if where == "model.num_classes" else ""))
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path or 'config'}: {err}") from err


def model_from_dict(data: Mapping[str, Any], path: str = "model", defaults: Mapping[str, Any] | None = None):
    require_mapping(data, path)
    data = dict(data)
    preset = data.pop("preset", None)
    for key, value in (defaults or {}).items():
        data.setdefault(key, value)
    if "attributes" in data and isinstance(data["attributes"], Mapping):
        # {name: [values]} or, for a multi-label group, {name: {values: [...], kind: multi, ...}}
        data["attributes"] = [{"name": k, **v} if isinstance(v, Mapping) else {"name": k, "values": list(v)}
                              for k, v in data["attributes"].items()]
    if preset is None:
        return from_dict(C.ModelConfig, data, path)
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"{path}.preset: expected one of {MODEL_PRESETS}, got {preset!r}")
    base = dataclasses.asdict(getattr(C.ModelConfig, preset)(num_classes=data.get("num_classes", 1)))
    loss = data.pop("loss", None)
    loss = {} if loss is None else loss
    require_mapping(loss, f"{path}.loss")
    loss = {**base.pop("loss"), **loss}
    return from_dict(C.ModelConfig, {**base, **data, "loss": loss}, path)


def require_mapping(value, path: str) -> None:
    """A config section must be a mapping: a ConfigError naming `path` otherwise."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a mapping (a section of `key: value` lines), got "
                          f"{type(value).__name__} {value!r}")


def run_config_from_dict(data: Mapping[str, Any], model_defaults: Mapping[str, Any] | None = None) -> C.RunConfig:
    """`model_defaults` (e.g. num_classes and attributes from the dataset schema) fill keys the file omits."""
    data = dict(data)
    if "model" not in data:
        raise ConfigError("config has no 'model' section")
    model = data.pop("model")
    model = model_from_dict({} if model is None else model, "model", model_defaults)
    hints = typing.get_type_hints(C.RunConfig, vars(C))
    unknown = [k for k in data if k not in hints]
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; known: {sorted(hints)}")
    kwargs = {k: _convert(hints[k], v, k) for k, v in data.items()}
    try:
        return C.RunConfig(model=model, **kwargs)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give the YAML config file")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a YAML text file ({err.reason} at byte {err.start})") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def to_dict(cfg) -> dict:
    """Dataclass -> plain dict (tuples as lists) for YAML/JSON."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def dump_yaml(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
