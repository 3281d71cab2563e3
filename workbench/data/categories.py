"""The records a schema is made of: categories (thing or stuff) and attribute vocabularies, and their checks.

`isthing` follows the COCO panoptic convention: a thing category (car, person) has countable instances, a stuff
category (sky, road) is amorphous and has at most one region per image. Files written before the flag existed
have things only, so it defaults to True and is written only where a schema has stuff.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from workbench.data.problems import Problem

__all__ = ["ATTRIBUTE_SOURCES", "AttributeVocab", "Category", "UNLABELED", "attribute_header",
           "attribute_value_problems", "category_header", "category_of", "check_isthing", "check_vocabularies",
           "is_int", "vocab_of"]


ATTRIBUTE_SOURCES = ("flags", "label", "description")
UNLABELED = -1  # an attribute value nobody gave


@dataclass(frozen=True)
class Category:
    """One category; `isthing=False` = stuff (one region per image; instance AP does not score it)."""

    id: int
    name: str
    isthing: bool = True


@dataclass(frozen=True)
class AttributeVocab:
    """One attribute group and its values; the value with id k is `values[k]`.

    kind: "single" (one value per instance) or "multi" (any subset); source_ids: the values' ids in the dataset
    they were imported from (empty = none).
    """

    name: str
    values: tuple[str, ...]
    kind: str = "single"
    source_ids: tuple[int, ...] = ()

    @property
    def multi(self) -> bool:
        return self.kind == "multi"

    def value_id(self, value: str) -> int:
        return self.values.index(value)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def category_header(c: Category, with_isthing: bool) -> dict[str, Any]:
    """A COCO `categories` entry; `isthing` (1/0, as COCO panoptic writes it) only when asked."""
    header: dict[str, Any] = {"id": c.id, "name": c.name, "supercategory": ""}
    if with_isthing:
        header["isthing"] = int(c.isthing)
    return header


def category_of(c: Mapping[str, Any]) -> Category:
    """A format-checked COCO `categories` entry -> Category (`isthing` missing = thing)."""
    return Category(int(c["id"]), c["name"], bool(c.get("isthing", 1)))


def attribute_header(a: AttributeVocab) -> dict[str, Any]:
    """One entry of a COCO-with-attributes file's top-level `attributes`."""
    values = [{"id": k, "name": v} for k, v in enumerate(a.values)]
    if a.source_ids:
        values = [dict(v, source_id=s) for v, s in zip(values, a.source_ids)]
    header = {"name": a.name, "values": values}
    if a.multi:  # single groups are written exactly as before the kind existed
        header = {"name": a.name, "kind": "multi", "values": values}
    return header


def vocab_of(a: Mapping[str, Any]) -> AttributeVocab:
    values = sorted(a["values"], key=lambda v: v["id"])
    source_ids = tuple(v["source_id"] for v in values) if values and all("source_id" in v for v in values) else ()
    return AttributeVocab(a["name"], tuple(v["name"] for v in values), a.get("kind", "single"), source_ids)


def check_isthing(categories: list, where: str) -> list[Problem]:
    """COCO `categories` entries: `isthing`, when present, is 0/1 (or a bool)."""
    return [Problem("bad_format", f"{where}: categories[{i}].isthing", f"must be 0 or 1, got {c['isthing']!r}")
            for i, c in enumerate(categories)
            if isinstance(c, dict) and "isthing" in c and c["isthing"] not in (0, 1, True, False)]


def check_vocabularies(categories, attributes, sources, where: str) -> list[Problem]:
    problems = []
    ids = [c.id for c in categories]
    names = [c.name for c in categories]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(Problem("duplicate_id", f"{where}: categories", f"category id {dup} appears twice"))
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem("duplicate_name", f"{where}: categories", f"category name {dup!r} appears twice"))
    for c in categories:
        if not c.name or c.name != c.name.strip() or "=" in c.name:
            problems.append(Problem("bad_name", f"{where}: categories",
                                    f"category name {c.name!r} must be non-empty, without '=' or edge spaces"))
    anames = [a.name for a in attributes]
    for dup in sorted({n for n in anames if anames.count(n) > 1}):
        problems.append(Problem("duplicate_name", f"{where}: attributes", f"attribute {dup!r} appears twice"))
    for a in attributes:
        if not a.name.isidentifier():
            problems.append(Problem("bad_name", f"{where}: attributes.{a.name}",
                                    "attribute names must be identifiers (they become head names)"))
        if not a.values:
            problems.append(Problem("bad_schema", f"{where}: attributes.{a.name}", "needs at least one value"))
        for dup in sorted({v for v in a.values if a.values.count(v) > 1}):
            problems.append(Problem("duplicate_name", f"{where}: attributes.{a.name}", f"value {dup!r} appears twice"))
        for v in a.values:
            if not v or any(ch.isspace() for ch in v) or "=" in v or "," in v:
                problems.append(Problem("bad_name", f"{where}: attributes.{a.name}",
                                        f"value {v!r} must be a non-empty word without spaces, '=' or ','"))
    for s in sources:
        if s not in ATTRIBUTE_SOURCES:
            problems.append(Problem("bad_schema", f"{where}: attribute_sources",
                                    f"unknown source {s!r}; allowed: {list(ATTRIBUTE_SOURCES)}"))
    return problems


def attribute_value_problems(value: Any, k: int, multi: bool, where: str) -> list[Problem]:
    """One annotation's value for one group: an id (single) or a list of distinct ids (multi); -1 = unlabeled."""
    if multi:
        if is_int(value) and value == UNLABELED:
            return []
        if not isinstance(value, list) or not all(is_int(v) for v in value):
            return [Problem("bad_format", where, f"multi-label group: expected a list of value ids (or -1 = "
                            f"unlabeled), got {value!r}")]
        bad = [v for v in value if not 0 <= v < k]
        if bad:
            return [Problem("id_out_of_range", where, f"value ids {bad} outside 0..{k - 1}")]
        if len(set(value)) != len(value):
            return [Problem("duplicate_id", where, f"value ids {value} repeat an id")]
        return []
    if isinstance(value, list):
        return [Problem("bad_format", where, f"got the list {value!r} but this group is single-label; give one "
                        "value id, or mark the group '\"kind\": \"multi\"' in the file's 'attributes'")]
    if not is_int(value):
        return [Problem("bad_format", where, f"value id must be an integer, got {value!r}")]
    if not (value == UNLABELED or 0 <= value < k):
        return [Problem("id_out_of_range", where, f"value id {value} outside 0..{k - 1} (or -1 = unlabeled)")]
    return []
