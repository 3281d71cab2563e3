"""Fashionpedia's annotation format -> COCO-with-attributes (`workbench data import-fashionpedia`).

Fashionpedia files are COCO instances files plus

    top level:       "attributes": [{"id": 115, "name": "above-the-hip (length)", "supercategory": "length",
                                     "level": 1, ...}, ...]
    per annotation:  "attribute_ids": [115, 136, ...]      # any number, of any supercategory

(see the `fashionpedia` package, fp.py). The import makes one attribute group per attribute supercategory, in
the order the supercategories first appear; a group is multi-label when some annotation holds more than one
of its values (or always, with `all_multi`). Group names are the supercategory as an identifier ("textile
pattern" -> `textile_pattern`), value names the attribute name as one word ("single breasted" ->
`single_breasted`); the original names and ids stay on the values (`source_name`, `source_id`) and on the
group (`source_name`), so results can be reported in Fashionpedia's ids. Categories, images and
segmentations are kept as they are.

Unlabeled: an annotation without any `attribute_ids` leaves every group unlabeled. One with attributes leaves
a single group it has no value of unlabeled, and gets an empty set (labeled: none applies) for a multi group
it has no value of -- Fashionpedia lists every attribute that applies.

Every problem is collected first and names the field; on any problem nothing is written.
"""
from __future__ import annotations

import os
import re
from typing import Any

from workbench.data.categories import is_int
from workbench.data.io import read_json
from workbench.data.problems import DataError, Problem
from workbench.data.schema import save_coco

__all__ = ["check_fashionpedia", "fashionpedia_to_coco", "import_fashionpedia"]


def _identifier(name: str) -> str:
    ident = re.sub(r"[^0-9a-zA-Z]+", "_", name.strip().lower()).strip("_")
    return f"_{ident}" if ident[:1].isdigit() else ident


def _value_name(name: str) -> str:
    return re.sub(r"[\s,=]+", "_", name.strip()).strip("_")


def check_fashionpedia(data: Any, where: str) -> list[Problem]:
    """Format problems of a Fashionpedia dict: the four lists, attribute entries, each annotation's ids."""
    if not isinstance(data, dict):
        return [Problem("bad_format", where, "top level must be a JSON object")]
    problems = []
    for key in ("images", "annotations", "categories", "attributes"):
        if not isinstance(data.get(key), list):
            problems.append(Problem("bad_format", f"{where}: {key}", "missing or not a list (a Fashionpedia file "
                                    "has images, annotations, categories and attributes)"))
    if problems:
        return problems
    attribute_ids = set()
    for i, a in enumerate(data["attributes"]):
        w = f"{where}: attributes[{i}]"
        if not isinstance(a, dict) or not is_int(a.get("id")):
            problems.append(Problem("bad_format", f"{w}.id", "needs an integer 'id'"))
            continue
        for key in ("name", "supercategory"):
            if not isinstance(a.get(key), str) or not a[key].strip():
                problems.append(Problem("bad_format", f"{w}.{key}", f"needs a non-empty string, got {a.get(key)!r}"))
        if a["id"] in attribute_ids:
            problems.append(Problem("duplicate_id", f"{w}.id", f"attribute id {a['id']} appears twice"))
        attribute_ids.add(a["id"])
    for i, ann in enumerate(data["annotations"]):
        w = f"{where}: annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            problems.append(Problem("bad_format", w, "must be an object"))
            continue
        ids = ann.get("attribute_ids", [])
        if not isinstance(ids, list) or not all(is_int(v) for v in ids):
            problems.append(Problem("bad_format", f"{w}.attribute_ids", f"must be a list of integers, got {ids!r}"))
            continue
        for k, v in enumerate(ids):
            if v not in attribute_ids:
                problems.append(Problem("unknown_attribute", f"{w}.attribute_ids[{k}]",
                                        f"attribute id {v} is not in the file's 'attributes'"))
        if len(set(ids)) != len(ids):
            problems.append(Problem("duplicate_id", f"{w}.attribute_ids", f"{ids} repeats an id"))
    return problems


def fashionpedia_to_coco(data: dict, where: str = "fashionpedia", all_multi: bool = False) -> dict:
    """A Fashionpedia dict -> a COCO-with-attributes dict (see the module docstring); raises `DataError`."""
    problems = check_fashionpedia(data, where)
    if problems:
        raise DataError(problems)
    groups: dict[str, dict[str, Any]] = {}  # group name -> {"source_name", "attributes": [attribute dicts]}
    for i, a in enumerate(data["attributes"]):
        name = _identifier(a["supercategory"])
        group = groups.setdefault(name, {"source_name": a["supercategory"], "attributes": []})
        if group["source_name"] != a["supercategory"]:
            problems.append(Problem("duplicate_name", f"{where}: attributes[{i}].supercategory",
                                    f"{a['supercategory']!r} and {group['source_name']!r} both become group {name!r}"))
        group["attributes"].append(a)
    where_of = {}  # attribute id -> (group, value index)
    for name, group in groups.items():
        group["attributes"].sort(key=lambda a: a["id"])
        value_names = [_value_name(a["name"]) for a in group["attributes"]]
        for k, (a, v) in enumerate(zip(group["attributes"], value_names)):
            if value_names.count(v) > 1:
                problems.append(Problem("duplicate_name", f"{where}: attributes (id {a['id']}).name",
                                        f"{a['name']!r} becomes value {v!r} of group {name!r} twice"))
            where_of[a["id"]] = (name, k)
        group["value_names"] = value_names
    if problems:
        raise DataError(problems)
    multi = {name: all_multi for name in groups}
    for ann in data["annotations"]:
        seen: dict[str, int] = {}
        for v in ann.get("attribute_ids", []):
            seen[where_of[v][0]] = seen.get(where_of[v][0], 0) + 1
        for name, n in seen.items():
            multi[name] = multi[name] or n > 1
    annotations = []
    for ann in data["annotations"]:
        ids = ann.get("attribute_ids", [])
        attrs: dict[str, Any] = {}
        if ids:
            for name in groups:
                if multi[name]:
                    attrs[name] = []
            for v in ids:
                name, k = where_of[v]
                if multi[name]:
                    attrs[name].append(k)
                else:
                    attrs[name] = k
            attrs = {n: sorted(v) if isinstance(v, list) else v for n, v in attrs.items()}
        out = {k: v for k, v in ann.items() if k != "attribute_ids"}
        out["attributes"] = attrs
        annotations.append(out)
    header = []
    for name, group in groups.items():
        values = [{"id": k, "name": v, "source_id": a["id"], "source_name": a["name"]}
                  for k, (a, v) in enumerate(zip(group["attributes"], group["value_names"]))]
        entry = {"name": name, "source_name": group["source_name"], "values": values}
        if multi[name]:
            entry = {"name": name, "kind": "multi", "source_name": group["source_name"], "values": values}
        header.append(entry)
    out = {k: v for k, v in data.items() if k not in ("annotations", "attributes")}
    return {**out, "annotations": annotations, "attributes": header}


def import_fashionpedia(src: str | os.PathLike, out: str | os.PathLike | None = None,
                        all_multi: bool = False) -> dict:
    """Read a Fashionpedia file, convert it, format-check and (if `out`) write it atomically; returns the dict.
    On any problem `DataError` lists them all (named by `src`: they are the input's) and nothing is written; an
    `out` that is `src` is a `UsageError`."""
    from workbench.data.io import refuse_output_alias

    if out is not None:
        refuse_output_alias(out, [src], "import-fashionpedia")
    data = fashionpedia_to_coco(read_json(src), str(src), all_multi=all_multi)
    if out is not None:
        save_coco(data, out, where=str(src))  # format-checked, then written atomically
    return data
