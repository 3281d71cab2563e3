"""The attributes of one labelme shape, read from its label words, flags and description (the sources labelme.py's
docstring lists), checked against the schema's vocabularies and `attribute_sources`; the parts of one object
(shapes sharing a `group_id`) merge theirs."""
from __future__ import annotations

import re

from workbench.data.problems import Problem
from workbench.data.schema import Schema

__all__ = ["ShapeAttributes", "read_shape_attributes"]

_TOKEN_SPLIT = re.compile(r"[\s,;]+")


class ShapeAttributes:
    """Collects attribute values for one instance from several sources, reporting unknowns and conflicts."""

    def __init__(self, schema: Schema, where: str, problems: list[Problem]):
        self.schema, self.where, self.problems = schema, where, problems
        self.values: dict[str, str] = {}  # single groups
        self.multi: dict[str, set[str]] = {}  # multi-label groups: every value given

    def set(self, name: str, value: str, source: str) -> None:
        vocab = self.schema.attribute(name)
        if vocab is None:
            self.problems.append(Problem("unknown_attribute", self.where,
                                        f"unknown attribute {name!r} (from {source}); known: {self.schema.attribute_names}"))
            return
        if value not in vocab.values:
            self.problems.append(Problem("unknown_attribute_value", self.where,
                                        f"unknown value {value!r} for attribute {name!r} (from {source}); "
                                        f"known: {list(vocab.values)}"))
            return
        if source not in self.schema.attribute_sources:
            self.problems.append(Problem("source_not_allowed", self.where,
                                        f"{name}={value} is given in the shape's {source}, but the schema's "
                                        f"attribute_sources are {list(self.schema.attribute_sources)}"))
            return
        if vocab.multi:
            self.multi.setdefault(name, set()).add(value)
            return
        old = self.values.get(name)
        if old is not None and old != value:
            self.problems.append(Problem("conflicting_attribute", self.where,
                                        f"attribute {name!r} is both {old!r} and {value!r}; it is single-label in "
                                        f"the schema (give it `kind: multi` there if several values may apply)"))
            return
        self.values[name] = value

    def merge(self, other: "ShapeAttributes") -> None:
        for name, values in other.multi.items():  # parts of one object: the union of their values
            self.multi.setdefault(name, set()).update(values)
        for name, value in other.values.items():
            old = self.values.get(name)
            if old is not None and old != value:
                self.problems.append(Problem("conflicting_attribute", other.where,
                                            f"parts of one group disagree: {name!r} is {old!r} and {value!r}"))
            else:
                self.values[name] = value

    def ids(self) -> dict[str, int | list[int]]:
        out: dict[str, int | list[int]] = {}
        for a in self.schema.attributes:
            if a.multi and a.name in self.multi:
                out[a.name] = sorted(a.value_id(v) for v in self.multi[a.name])
            elif a.name in self.values:
                out[a.name] = a.value_id(self.values[a.name])
        return out


def _bare_value_owner(schema: Schema, value: str) -> list[str]:
    return [a.name for a in schema.attributes if value in a.values]


def read_shape_attributes(shape: dict, schema: Schema, where: str, problems: list[Problem]) -> tuple[str, ShapeAttributes]:
    """-> (category name, attributes) from label tokens, flags and description."""
    attrs = ShapeAttributes(schema, where, problems)
    label = shape.get("label")
    if not isinstance(label, str) or not label.strip():
        problems.append(Problem("bad_shape", where, f"'label' must be a non-empty string, got {label!r}"))
        return "", attrs
    words = []
    for token in label.split():
        if "=" in token:
            name, _, value = token.partition("=")
            attrs.set(name, value, "label")
        else:
            words.append(token)
    category = " ".join(words)
    flags = shape.get("flags") or {}
    if not isinstance(flags, dict):
        problems.append(Problem("bad_shape", where, f"'flags' must be an object, got {type(flags).__name__}"))
        flags = {}
    for flag, on in flags.items():
        if on is not True:
            continue
        if "=" in flag:
            name, _, value = flag.partition("=")
            attrs.set(name, value, "flags")
            continue
        owners = _bare_value_owner(schema, flag)
        if len(owners) == 1:
            attrs.set(owners[0], flag, "flags")
        elif len(owners) > 1:
            problems.append(Problem("ambiguous_flag", where, f"flag {flag!r} is a value of {owners}; write "
                                    f"'{owners[0]}={flag}' instead"))
        elif "flags" in schema.attribute_sources:
            problems.append(Problem("unknown_attribute_value", where,
                                    f"flag {flag!r} is not an attribute value; known: {schema.model_attributes()}"))
    description = shape.get("description")
    if isinstance(description, str):
        for token in _TOKEN_SPLIT.split(description):
            if "=" in token:
                name, _, value = token.partition("=")
                if "description" in schema.attribute_sources or schema.attribute(name) is not None:
                    attrs.set(name, value, "description")
    return category, attrs
