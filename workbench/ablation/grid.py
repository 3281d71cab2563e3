"""Ablation grids: a base run config, axes over config fields by dotted path, and seeds.

A grid file (YAML):

    base: configs/small.yaml          # a `workbench train --config` file (relative to this file), or a mapping
    axes:                             # any RunConfig field by dotted path -> the values to try
      model.num_queries: [10, 50, 100]
      model.loss.boundary_weight: [0, 1]
    seeds: 3                          # a count (seeds 0..n-1) or a list; default 3
    synthetic:                        # optional: synthetic shapes as data (fills data.train / data.val)
      train_images: 40
      val_images: 20
      image_size: 96
      patterns: false                 # true: add the multi-label group `pattern` (stripes / dots / outline)
      dir: runs/ablation/data         # default: <out>/data

The task is `model.task` (instance | semantic | panoptic), in the base or as an axis (`model.task: [panoptic,
semantic]`). With `synthetic:`, instance cells use the shapes as COCO-with-attributes (<dir>/{train,val}/coco.json)
and panoptic / semantic cells the same shapes in front of sky / ground stuff (attribute `tone`) as COCO panoptic
(<dir>/stuff/{train,val}/panoptic/panoptic.json; semantic targets are one per class present), so the two segment
tasks are scored on the same images; num_classes, attributes and stuff_classes follow each cell's data. The
tables' metric columns follow the tasks (tables.py): segm AP for instance, PQ / joint PQ / mIoU for panoptic,
mIoU for semantic.

Attribute groups are reached by name: `model.attributes.<group>.<AttributeSpec field>`, e.g.
`model.attributes.pattern.kind: [single, multi]` or `model.attributes.pattern.weight: [1, 2]`; the multi-label
loss is `model.loss.multi_label_loss: [bce, focal]` and the matcher weight of every multi-label group
`model.multi_label_cost_weight: [0, 1]`. (A multi-label file trains a "single" group only where each
instance holds at most one value; `kind` is for comparing the two on such data.)

Cells are the cartesian product of the axes times the seeds; `Grid.cells()` builds and validates every cell's
RunConfig up front, so a bad value fails before anything trains, with the cell and key named.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from workbench import config as C
from workbench.config_file import ConfigError, read_yaml, run_config_from_dict, to_dict
from workbench.errors import WorkbenchError

__all__ = ["Axis", "Cell", "Grid", "GridError", "OutputStateError", "SyntheticData", "load_grid"]

DEFAULT_SEEDS = 3
GRID_KEYS = ("base", "axes", "seeds", "synthetic")
RAW_ONLY_KEYS = {"model.preset"}  # YAML keys that are not dataclass fields but `workbench train` accepts


class GridError(WorkbenchError, ValueError):
    """A grid file that cannot be ablated as given: the CLI prints it and exits 2 (1 for an output folder that
    holds other runs or data: `OutputStateError`)."""

    exit_code = 2


class OutputStateError(GridError):
    """An output or data folder that already holds other runs or data: exit code 1 (run state)."""

    exit_code = 1


@dataclass(frozen=True)
class Axis:
    """One ablated field: `path` into RunConfig (e.g. "model.loss.boundary_weight") and its values."""

    path: str
    values: tuple
    label: str = ""  # short column name: the last path component unless two axes share it

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        object.__setattr__(self, "label", self.label or self.path)


@dataclass(frozen=True)
class SyntheticData:
    """Synthetic shapes (data/synthetic.py) generated once into `dir` and used as data.train / data.val."""

    train_images: int = 40
    val_images: int = 20
    image_size: int = 96
    dir: str = ""  # empty = <out>/data
    patterns: bool = False  # add the multi-label group `pattern` (data/synthetic.py)

    def __post_init__(self) -> None:
        counts = (self.train_images, self.val_images, self.image_size)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
            raise GridError(f"synthetic: train_images, val_images and image_size must be integers, got {counts}")
        if self.train_images < 1 or self.val_images < 1:
            raise GridError("synthetic.train_images and synthetic.val_images must be >= 1")
        if self.image_size < 32:
            raise GridError(f"synthetic.image_size must be >= 32, got {self.image_size}")

    def folder(self, out: str | Path, task: str = "instance") -> Path:
        """Where the data of `task` is made: the shapes for instance, the shapes with stuff (in `stuff/`) for
        panoptic and semantic."""
        root = Path(self.dir) if self.dir else Path(out) / "data"
        return root if task == "instance" else root / "stuff"

    def paths(self, out: str | Path, task: str = "instance") -> tuple[str, str]:
        """data.train and data.val of a `task` cell."""
        name = "coco.json" if task == "instance" else "panoptic/panoptic.json"
        folder = self.folder(out, task)
        return str(folder / "train" / name), str(folder / "val" / name)


@dataclass(frozen=True)
class Cell:
    """One run: the axes' values (a table row, `key`) and a seed. Its run directory is `<out>/<name>`."""

    key: str  # e.g. "num_queries=10__boundary_weight=1"; "base" when there are no axes
    values: dict  # {axis path: value}
    seed: int
    config: C.RunConfig

    @property
    def name(self) -> str:
        return f"{self.key}/seed{self.seed}"

    @property
    def train_key(self) -> str:
        """Equal for cells that train the same model (they differ only in `eval` settings or device)."""
        doc = to_dict(self.config)
        doc.pop("eval"), doc.pop("device")
        return json.dumps(doc, sort_keys=True)


@dataclass(frozen=True)
class Grid:
    base: dict  # the base config as a YAML mapping (as `workbench train --config` reads it)
    axes: tuple[Axis, ...] = ()
    seeds: tuple[int, ...] = tuple(range(DEFAULT_SEEDS))
    synthetic: SyntheticData | None = None
    source: str = "grid"  # where it came from, for messages

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], source: str = "grid", root: str | Path = ".") -> "Grid":
        """Parse a grid mapping (see the module docstring); `root` resolves a relative `base:` path."""
        if not isinstance(doc, Mapping):
            raise GridError(f"{source}: expected a mapping with keys {list(GRID_KEYS)}")
        unknown = [k for k in doc if k not in GRID_KEYS]
        if unknown:
            raise GridError(f"{source}: unknown key(s) {unknown}; known: {list(GRID_KEYS)}")
        if "base" not in doc:
            raise GridError(f"{source}: no 'base' (a run config mapping or the path of a config file)")
        base = doc["base"]
        if isinstance(base, (str, Path)):
            path = Path(base) if Path(base).is_absolute() else Path(root) / base
            if not path.is_file():
                raise GridError(f"{source}: base: config file {path} not found (relative paths are relative to "
                                f"the grid file's folder)")
            base = read_yaml(path)
        if not isinstance(base, Mapping):
            raise GridError(f"{source}: base must be a mapping or a file path, got {type(base).__name__}")
        axes = _parse_axes(doc.get("axes") or {}, source)
        seeds = _parse_seeds(doc.get("seeds", DEFAULT_SEEDS), source)
        synthetic = doc.get("synthetic")
        if synthetic is not None:
            if not isinstance(synthetic, Mapping):
                raise GridError(f"{source}: synthetic must be a mapping, e.g. {{train_images: 40, val_images: 20}}")
            names = {f.name for f in dataclasses.fields(SyntheticData)}
            bad = [k for k in synthetic if k not in names]
            if bad:
                raise GridError(f"{source}: unknown key(s) synthetic.{', synthetic.'.join(bad)}; known: {sorted(names)}")
            try:
                synthetic = SyntheticData(**synthetic)
            except TypeError as err:  # e.g. a string where a count belongs
                raise GridError(f"{source}: synthetic: {err}") from err
        return cls(base=copy.deepcopy(dict(base)), axes=axes, seeds=seeds, synthetic=synthetic, source=source)

    def to_dict(self) -> dict:
        """The resolved grid (base inlined) as a mapping `Grid.from_dict` reads back; written to <out>/grid.yaml."""
        doc: dict[str, Any] = {"base": copy.deepcopy(self.base),
                               "axes": {a.path: list(a.values) for a in self.axes},
                               "seeds": list(self.seeds)}
        if self.synthetic is not None:
            doc["synthetic"] = dataclasses.asdict(self.synthetic)
        return doc

    def with_seeds(self, seeds: int | Sequence[int]) -> "Grid":
        return dataclasses.replace(self, seeds=_parse_seeds(seeds, self.source))

    def keys(self) -> list[tuple[str, dict]]:
        """(row key, {path: value}) for each combination of axis values, in grid order."""
        combos = itertools.product(*(a.values for a in self.axes))
        rows = []
        for combo in combos:
            values = dict(zip((a.path for a in self.axes), combo))
            parts = [f"{a.label}={_slug(v)}" for a, v in zip(self.axes, combo)]
            rows.append(("__".join(parts) or "base", values))
        names = [k for k, _ in rows]
        dupes = sorted({k for k in names if names.count(k) > 1})
        if dupes:
            raise GridError(f"{self.source}: axis values that give the same folder name {dupes}; make them distinct")
        return rows

    def task_of(self, values: Mapping[str, Any]) -> str:
        """The `model.task` of the cell with axis `values` (an axis, else the base's, else "instance")."""
        model = self.base.get("model") if isinstance(self.base.get("model"), Mapping) else {}
        return str(values.get("model.task", model.get("task", "instance")))

    def tasks(self) -> list[str]:
        """The tasks the grid's cells train, in grid order."""
        return list(dict.fromkeys(self.task_of(values) for _, values in self.keys()))

    def cells(self, out: str | Path = ".") -> list[Cell]:
        """Every (axes combination, seed) with its validated RunConfig; `out` locates synthetic data."""
        by_task: dict[str, dict] = {}
        cells = []
        for key, values in self.keys():
            task = self.task_of(values)
            if task not in C.TASKS:
                raise GridError(f"{self.source}: cell {key}: model.task {task!r} is not one of {list(C.TASKS)}")
            defaults = by_task[task] if task in by_task else by_task.setdefault(task, self._model_defaults(task))
            for seed in self.seeds:
                doc = copy.deepcopy(self.base)
                groups = {}  # model.attributes.<group>.<field> overrides, applied to the resolved groups
                for path, value in values.items():
                    if path.startswith(ATTRIBUTE_PREFIX):
                        name, field = path[len(ATTRIBUTE_PREFIX):].split(".")
                        groups.setdefault(name, {})[field] = copy.deepcopy(value)
                    else:
                        _set_path(doc, path, copy.deepcopy(value))
                if groups:
                    _override_groups(doc, defaults, groups, f"{self.source}: cell {key}")
                doc["seed"] = seed
                if self.synthetic is not None:
                    train, val = self.synthetic.paths(out, task)
                    doc["data"] = {**(doc.get("data") or {}), "train": train, "val": val, "image_root": ""}
                try:
                    cfg = run_config_from_dict(doc, model_defaults=defaults)
                except (ConfigError, TypeError, ValueError) as err:
                    raise GridError(f"{self.source}: cell {key} (seed {seed}): {err}") from err
                if not cfg.data.val:
                    raise GridError(f"{self.source}: cell {key}: data.val is empty; an ablation needs an "
                                    "evaluation split (set data.val in the base config, or a synthetic: section)")
                cells.append(Cell(key, values, seed, cfg))
        return cells

    def _model_defaults(self, task: str = "instance") -> dict:
        """num_classes / attributes (/ stuff_classes) for a base that leaves them out: from the synthetic data of
        `task` or the training data's schema (any format workbench train reads)."""
        model = self.base.get("model") or {}
        if "num_classes" in model and "attributes" in model:
            return {}
        if self.synthetic is not None:
            from workbench.data.synthetic import synthetic_schema

            schema = synthetic_schema(self.synthetic.patterns, stuff=task != "instance")
        else:
            from workbench.data.segmentation import source_schema

            train = (self.base.get("data") or {}).get("train")
            if not train:
                return {}
            if not Path(train).exists():
                raise GridError(f"{self.source}: base data.train {train} not found (needed for num_classes and "
                                "attributes, which the base's model section leaves out)")
            schema = source_schema(train)
        return schema.model_fields()


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} not found")
    return Grid.from_dict(read_yaml(path), source=str(path), root=path.parent)


# ---- helpers ----------------------------------------------------------------------------------------------------
ATTRIBUTE_PREFIX = "model.attributes."


def _override_groups(doc: dict, defaults: Mapping, groups: Mapping[str, Mapping], where: str) -> None:
    """Set AttributeSpec fields of named groups in `doc["model"]["attributes"]` (taken from the data's schema
    when the base leaves them out), as a list of {name, values, ...} mappings."""
    model = doc.setdefault("model", {})
    attributes = model.get("attributes", defaults.get("attributes", {}))
    if isinstance(attributes, Mapping):
        attributes = [{"name": k, **v} if isinstance(v, Mapping) else {"name": k, "values": list(v)}
                      for k, v in attributes.items()]
    attributes = [dict(a) for a in attributes]
    names = [a.get("name") for a in attributes]
    for name, fields in groups.items():
        if name not in names:
            raise GridError(f"{where}: axis {ATTRIBUTE_PREFIX}{name}.*: no attribute group {name!r}; the model "
                            f"has {names}")
        attributes[names.index(name)].update(fields)
    model["attributes"] = attributes


def check_path(path: str) -> None:
    """Raise GridError unless `path` names a RunConfig field (dotted, e.g. "model.loss.boundary_weight") or an
    attribute group's field (`model.attributes.<group>.<AttributeSpec field>`)."""
    if path in RAW_ONLY_KEYS:
        return
    if path.startswith(ATTRIBUTE_PREFIX):
        parts = path[len(ATTRIBUTE_PREFIX):].split(".")
        fields = {f.name for f in dataclasses.fields(C.AttributeSpec)} - {"name"}
        if len(parts) != 2 or parts[1] not in fields:
            raise GridError(f"axis {path!r}: expected model.attributes.<group>.<field>, field one of {sorted(fields)}")
        return
    if path == "seed":
        raise GridError("axis 'seed': list seeds under the grid's 'seeds:' key, not as an axis")
    cls: Any = C.RunConfig
    parts = path.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise GridError(f"axis {path!r}: {'.'.join(parts[:i])} is a value, not a section with field {part!r}")
        hints = typing.get_type_hints(cls, vars(C))
        if part not in hints:
            raise GridError(f"axis {path!r}: unknown config field {where!r}; known under "
                            f"{'.'.join(parts[:i]) or 'top level'}: {sorted(hints)}")
        cls = hints[part]
    if isinstance(cls, type) and dataclasses.is_dataclass(cls):
        raise GridError(f"axis {path!r} is a whole section; ablate its fields ({path}.<field>) instead")


def _parse_axes(axes: Any, source: str) -> tuple[Axis, ...]:
    if not isinstance(axes, Mapping):
        raise GridError(f"{source}: axes must map dotted config paths to lists of values")
    parsed = []
    for path, values in axes.items():
        check_path(str(path))
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise GridError(f"{source}: axes.{path} must be a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise GridError(f"{source}: axes.{path} lists a value twice: {list(values)}")
        parsed.append(str(path))
    tails = [p.split(".")[-1] for p in parsed]
    return tuple(Axis(p, tuple(axes[p]), label=t if tails.count(t) == 1 else p) for p, t in zip(parsed, tails))


def _parse_seeds(seeds: Any, source: str) -> tuple[int, ...]:
    if isinstance(seeds, bool):
        raise GridError(f"{source}: seeds must be a count or a list of integers, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise GridError(f"{source}: seeds must be >= 1, got {seeds}")
        return tuple(range(seeds))
    if (isinstance(seeds, (list, tuple)) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            and len(set(seeds)) == len(seeds)):
        return tuple(seeds)
    raise GridError(f"{source}: seeds must be a count or a list of distinct integers, got {seeds!r}")


def _set_path(doc: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise GridError(f"axis {path!r}: the base config's {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value


def _slug(value: Any) -> str:
    """A value as a folder-name-safe string: true/false, 0.5, none, [1, 2] -> 1-2."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "-".join(_slug(v) for v in value) or "empty"
    if isinstance(value, float):
        value = f"{value:g}"
    text = re.sub(r"[^A-Za-z0-9._+-]+", "-", str(value)).strip("-")
    return text or "value"
