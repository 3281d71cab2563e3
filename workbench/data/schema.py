"""COCO-with-attributes: the file format, its YAML schema, and load / save (format checks: coco_format.py).

A COCO-with-attributes file is a plain COCO instances JSON (pycocotools and detectron2 load it unchanged and
ignore the extras) plus

    top level:       "attributes": [{"name": "color", "values": [{"id": 0, "name": "red"}, ...]}, ...]
    per annotation:  "attributes": {"color": 0, "size": 2}      # a missing key (or -1) = unlabeled

Multi-label groups (any subset of the values, e.g. Fashionpedia's textile patterns) say so on the group and
list value ids per annotation:

    top level:       "attributes": [{"name": "pattern", "kind": "multi", "values": [...]}, ...]
    per annotation:  "attributes": {"pattern": [0, 2]}          # [] = labeled, none applies; missing / -1 = unlabeled

A value may also keep the id it had in a source dataset (`"source_id": 115`, written by the Fashionpedia
importer) so results can be reported in that dataset's ids.

Attribute value ids are 0..K-1 because they are the class indices of that attribute's K+1-way head (K = "no
object"); an id outside that range is what turned into a device-side assert in the seed project, so it is an
error here. Category ids are free (COCO style); the model's label is the category's position in the schema.

The YAML schema file (see data/schema.yaml) names the vocabularies and which labelme fields may carry
attributes:

    categories: [circle, square, triangle]        # ids 1..C in this order, or [{id: 7, name: circle}, ...]
                                                  # stuff: {name: sky, isthing: false} (id optional: its position)
    attributes: {color: [red, green, blue], size: [small, medium, large],
                 pattern: {values: [stripes, dots, outline], kind: multi}}
    attribute_sources: [flags, label, description]
    ignore_labels: [__ignore__]                   # labelme labels that mark ignore regions (the default)

Ignore regions (labelme's `__ignore__`, e.g. a crowd nobody outlined one by one) are stored as COCO
`iscrowd: 1` annotations, one per category with the same mask, so COCOeval ignores a detection of any
category there; they are neither instances nor false positives, and training samples no mask-loss point on
them. Stuff categories (`isthing: false`, COCO panoptic's flag; see categories.py) have one region per
image; `Schema.stuff_classes` gives their model labels (`ModelConfig.stuff_classes`). `load_labels_txt` reads
labelme's plain `labels.txt` (`__ignore__`, `_background_`, then categories).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from workbench.data.categories import (ATTRIBUTE_SOURCES, UNLABELED, AttributeVocab, Category, attribute_header,
                                       category_header, category_of, check_vocabularies, is_int, vocab_of)
from workbench.data.coco_format import check_coco, check_coco_header
from workbench.data.io import read_json, write_json_atomic
from workbench.data.problems import DataError, Problem

__all__ = [
    "ATTRIBUTE_SOURCES",
    "AttributeVocab",
    "Category",
    "Schema",
    "check_coco",
    "check_coco_header",
    "load_coco",
    "load_schema",
    "save_coco",
]

IGNORE_LABELS = ("__ignore__",)
BACKGROUND_LABEL = "_background_"  # the second line of labelme's labels.txt: not a category


@dataclass(frozen=True)
class Schema:
    """Categories (in model-label order), attribute vocabularies (in model-head order), allowed labelme sources."""

    categories: tuple[Category, ...]
    attributes: tuple[AttributeVocab, ...]
    attribute_sources: tuple[str, ...] = ATTRIBUTE_SOURCES
    ignore_labels: tuple[str, ...] = IGNORE_LABELS

    def __post_init__(self) -> None:
        problems = check_vocabularies(self.categories, self.attributes, self.attribute_sources, "schema")
        problems += _check_ignore_labels(self.ignore_labels, self.categories, "schema")
        if problems:
            raise DataError(problems)

    # --- lookups --------------------------------------------------------------------------------------------
    @property
    def category_names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def attribute_names(self) -> list[str]:
        return [a.name for a in self.attributes]

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    def category_by_name(self, name: str) -> Category | None:
        return next((c for c in self.categories if c.name == name), None)

    def label_of(self) -> dict[int, int]:
        """category id -> model label (the category's position in the schema, 0..C-1)."""
        return {c.id: i for i, c in enumerate(self.categories)}

    def attribute(self, name: str) -> AttributeVocab | None:
        return next((a for a in self.attributes if a.name == name), None)

    def model_attributes(self) -> dict[str, Any]:
        """{name: [value names]} in head order: `ModelConfig.tiny(num_classes=s.num_classes, attributes=...)`;
        a multi-label group is {name: {"values": [...], "kind": "multi"}}."""
        return {a.name: {"values": list(a.values), "kind": "multi"} if a.multi else list(a.values)
                for a in self.attributes}

    @property
    def attribute_values(self) -> dict[str, list[str]]:
        """{name: [value names]} for every group, single or multi (what tables and drawings label with)."""
        return {a.name: list(a.values) for a in self.attributes}

    @property
    def multi_label_names(self) -> list[str]:
        return [a.name for a in self.attributes if a.multi]

    @property
    def single_label_names(self) -> list[str]:
        return [a.name for a in self.attributes if not a.multi]

    @property
    def stuff_classes(self) -> tuple[int, ...]:
        """Model labels (0..C-1) of the stuff categories: `ModelConfig.stuff_classes`."""
        return tuple(i for i, c in enumerate(self.categories) if not c.isthing)

    @property
    def has_stuff(self) -> bool:
        return any(not c.isthing for c in self.categories)

    def model_fields(self) -> dict[str, Any]:
        """The `ModelConfig` fields the data decides: {"num_classes": C, "attributes": {name: [values]}} and,
        when some category is stuff, "stuff_classes" (left out otherwise: an all-thing config stays as it was)."""
        fields: dict[str, Any] = {"num_classes": len(self.categories), "attributes": self.model_attributes()}
        if self.has_stuff:
            fields["stuff_classes"] = self.stuff_classes
        return fields

    # --- conversions ----------------------------------------------------------------------------------------
    def coco_header(self) -> dict[str, Any]:
        """The `categories` and `attributes` blocks of a COCO-with-attributes file."""
        return {
            "categories": [category_header(c, self.has_stuff) for c in self.categories],
            "attributes": [attribute_header(a) for a in self.attributes],
        }

    @classmethod
    def from_coco(cls, data: Mapping[str, Any], where: str = "coco") -> "Schema":
        """The vocabularies stored in a COCO-with-attributes dict (format-checked first)."""
        problems = check_coco_header(data, where)
        if problems:
            raise DataError(problems)
        categories = tuple(category_of(c) for c in data["categories"])
        attributes = tuple(vocab_of(a) for a in data.get("attributes", []))
        return cls(categories, attributes)

    def to_yaml(self) -> str:
        doc = {
            "categories": [{"id": c.id, "name": c.name, **({} if c.isthing else {"isthing": False})}
                           for c in self.categories],
            "attributes": self.model_attributes(),
            "attribute_sources": list(self.attribute_sources),
        }
        if self.ignore_labels != IGNORE_LABELS:
            doc["ignore_labels"] = list(self.ignore_labels)
        return yaml.safe_dump(doc, sort_keys=False)


# --- YAML schema file -----------------------------------------------------------------------------------------
def load_schema(path: str | os.PathLike) -> Schema:
    """Read a YAML schema file; every mistake is reported with the file and the field."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError([Problem("missing_file", str(path), "schema file not found")]) from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise DataError([Problem("unreadable_file", str(path), f"not a YAML text file ({e})")]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise DataError([Problem("yaml_syntax", where, f"invalid YAML: {getattr(e, 'problem', e)}")]) from None
    return schema_from_dict(doc, str(path))


def load_labels_txt(path: str | os.PathLike, schema: Schema | None = None) -> Schema:
    """labelme's `labels.txt` (one label a line) -> Schema; with `schema`, its attributes and sources are kept
    and its categories must be the same list.

    `__ignore__` (any `__name__` line) is an ignore label, `_background_` is skipped, the rest are categories
    with ids 1..C in file order (as labelme's labelme2coco numbers them).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError([Problem("missing_file", str(path), "labels file not found")]) from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise DataError([Problem("unreadable_file", str(path), f"not a text file of labels ({e})")]) from None
    labels = [line.strip() for line in lines if line.strip()]
    ignore = tuple(x for x in labels if len(x) > 4 and x.startswith("__") and x.endswith("__"))
    names = [x for x in labels if x not in ignore and x != BACKGROUND_LABEL]
    if not names:
        raise DataError([Problem("bad_schema", str(path), "no category names (only __ignore__/_background_ lines)")])
    categories = tuple(Category(i + 1, name) for i, name in enumerate(names))
    problems = check_vocabularies(categories, (), (), str(path))
    if schema is not None and schema.category_names != names:
        problems.append(Problem("schema_mismatch", str(path), f"categories {names} differ from the schema's "
                                f"{schema.category_names}; give one list (drop --labels or the schema's categories)"))
    if problems:
        raise DataError(problems)
    if schema is None:
        return Schema(categories, (), ATTRIBUTE_SOURCES, ignore or IGNORE_LABELS)
    return Schema(schema.categories, schema.attributes, schema.attribute_sources,
                  tuple(dict.fromkeys(schema.ignore_labels + ignore)))


def schema_from_dict(doc: Any, where: str = "schema") -> Schema:
    problems: list[Problem] = []
    if not isinstance(doc, dict):
        raise DataError([Problem("bad_schema", where, "expected a mapping with 'categories' and 'attributes'")])
    unknown = set(doc) - {"categories", "attributes", "attribute_sources", "ignore_labels"}
    if unknown:
        problems.append(Problem("bad_schema", where, f"unknown field(s) {sorted(unknown)}; expected "
                                "categories, attributes, attribute_sources, ignore_labels"))
    categories: list[Category] = []
    raw_cats = doc.get("categories")
    if not isinstance(raw_cats, list) or not raw_cats:
        problems.append(Problem("bad_schema", f"{where}: categories", "expected a non-empty list"))
        raw_cats = []
    for i, c in enumerate(raw_cats):
        if isinstance(c, str):
            categories.append(Category(i + 1, c))
        elif (isinstance(c, dict) and is_int(c.get("id", i + 1)) and isinstance(c.get("name"), str)
              and isinstance(c.get("isthing", True), bool) and not set(c) - {"id", "name", "isthing"}):
            categories.append(Category(c.get("id", i + 1), c["name"], c.get("isthing", True)))
        else:
            problems.append(Problem("bad_schema", f"{where}: categories[{i}]", "expected a name or {id: int, "
                                    f"name: str, isthing: true | false}} (id and isthing optional), got {c!r}"))
    attributes: list[AttributeVocab] = []
    raw_attrs = doc.get("attributes", {}) or {}
    if not isinstance(raw_attrs, dict):
        problems.append(Problem("bad_schema", f"{where}: attributes", "expected a mapping name -> list of values"))
        raw_attrs = {}
    for name, values in raw_attrs.items():
        kind = "single"
        if isinstance(values, dict):  # {values: [...], kind: single | multi}
            unknown_keys = set(values) - {"values", "kind"}
            kind = values.get("kind", "single")
            if unknown_keys or kind not in ("single", "multi"):
                problems.append(Problem("bad_schema", f"{where}: attributes.{name}",
                                        "expected {values: [names], kind: single | multi}, got " + repr(values)))
                continue
            values = values.get("values")
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            problems.append(Problem("bad_schema", f"{where}: attributes.{name}", "expected a list of value names"))
            continue
        attributes.append(AttributeVocab(str(name), tuple(values), kind))
    sources = doc.get("attribute_sources", list(ATTRIBUTE_SOURCES))
    if not isinstance(sources, list):
        problems.append(Problem("bad_schema", f"{where}: attribute_sources", f"expected a subset of {list(ATTRIBUTE_SOURCES)}"))
        sources = []
    problems += check_vocabularies(categories, attributes, sources, where)
    ignore = doc.get("ignore_labels", list(IGNORE_LABELS))
    if not isinstance(ignore, list) or not all(isinstance(x, str) and x for x in ignore):
        problems.append(Problem("bad_schema", f"{where}: ignore_labels", "expected a list of labels, e.g. [__ignore__]"))
        ignore = []
    problems += _check_ignore_labels(ignore, categories, where)
    if problems:
        raise DataError(problems)
    return Schema(tuple(categories), tuple(attributes), tuple(sources), tuple(ignore))


def _check_ignore_labels(ignore, categories, where: str) -> list[Problem]:
    both = sorted(set(ignore) & {c.name for c in categories})
    if both:
        return [Problem("bad_schema", f"{where}: ignore_labels", f"{both} are both categories and ignore labels")]
    return []


# --- COCO-with-attributes files (format checks: coco_format.py) -----------------------------------------------
def load_coco(path: str | os.PathLike) -> dict:
    """Read and format-check a COCO-with-attributes file; raises `DataError` listing every problem."""
    data = read_json(path)
    problems = check_coco(data, str(path))
    if problems:
        raise DataError(problems)
    return data


def schema_of_coco(path: str | os.PathLike) -> Schema:
    """The vocabularies stored in a COCO-with-attributes file."""
    return Schema.from_coco(load_coco(path), str(path))


def save_coco(data: Mapping[str, Any], path: str | os.PathLike, where: str | None = None) -> None:
    """Format-check, then write atomically: on any error the previous file (if any) stays as it was. `where`
    names the data in the problems (the input it came from; default: `path`)."""
    problems = check_coco(data, where or str(path))
    if problems:
        raise DataError(problems)
    write_json_atomic(path, data)


def check_schema_matches(data: dict, schema: Schema, where: str) -> None:
    """A given schema must describe the file's vocabularies, else labels/attribute ids would mean other things."""
    file_schema = Schema.from_coco(data, where)
    problems = []
    if file_schema.categories != schema.categories:  # ids, names and isthing
        problems.append(Problem("schema_mismatch", f"{where}: categories",
                                f"file has {_id_names(file_schema)}, schema has {_id_names(schema)}"))
    if file_schema.model_attributes() != schema.model_attributes():
        problems.append(Problem("schema_mismatch", f"{where}: attributes",
                                f"file has {file_schema.model_attributes()}, schema has {schema.model_attributes()}"))
    if problems:
        raise DataError(problems)


def _id_names(schema: Schema) -> list[tuple]:
    return [(c.id, c.name) if c.isthing else (c.id, c.name, "stuff") for c in schema.categories]
