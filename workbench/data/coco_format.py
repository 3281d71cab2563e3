"""Format and reference checks of a COCO-with-attributes dict (the format schema.py describes): the header
(top level, categories, attribute vocabularies) and every image and annotation, without geometry or image files
(validate.py adds those). Each returns the list of `Problem`s, empty when the data is well formed."""
from __future__ import annotations

from typing import Any

from workbench.data.categories import (ATTRIBUTE_SOURCES, AttributeVocab, Category, attribute_value_problems,
                                       check_isthing, check_vocabularies, is_int)
from workbench.data.problems import Problem

__all__ = ["check_coco", "check_coco_header"]


def check_coco_header(data: Any, where: str = "coco") -> list[Problem]:
    """Top-level structure, categories and attribute vocabularies (the part everything else depends on)."""
    if not isinstance(data, dict):
        return [Problem("bad_format", where, "top level must be a JSON object")]
    problems = []
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problems.append(Problem("bad_format", f"{where}: {key}", "missing or not a list"))
    if "attributes" in data and not isinstance(data["attributes"], list):
        problems.append(Problem("bad_format", f"{where}: attributes", "must be a list of {name, values}"))
    if problems:
        return problems
    for i, c in enumerate(data["categories"]):
        if not (isinstance(c, dict) and is_int(c.get("id")) and isinstance(c.get("name"), str)):
            problems.append(Problem("bad_format", f"{where}: categories[{i}]", "needs integer 'id' and string 'name'"))
    problems += check_isthing(data["categories"], where)
    for i, a in enumerate(data.get("attributes", [])):
        w = f"{where}: attributes[{i}]"
        if not (isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("values"), list)):
            problems.append(Problem("bad_format", w, "needs string 'name' and list 'values'"))
            continue
        w = f"{where}: attributes[{i}] ({a['name']})"
        if not all(isinstance(v, dict) and is_int(v.get("id")) and isinstance(v.get("name"), str) for v in a["values"]):
            problems.append(Problem("bad_format", w, "every value needs integer 'id' and string 'name'"))
            continue
        if a.get("kind", "single") not in ("single", "multi"):
            problems.append(Problem("bad_format", f"{w}.kind", f"must be 'single' or 'multi', got {a['kind']!r}"))
        vids = [v["id"] for v in a["values"]]
        for dup in sorted({v for v in vids if vids.count(v) > 1}):
            problems.append(Problem("duplicate_id", w, f"value id {dup} appears twice"))
        if sorted(set(vids)) != list(range(len(set(vids)))):
            problems.append(Problem("id_out_of_range", w, f"value ids must be 0..{len(vids) - 1} (head class "
                                    f"indices), got {sorted(vids)}"))
    if problems:
        return problems
    cats = [Category(c["id"], c["name"]) for c in data["categories"]]
    attrs = [AttributeVocab(a["name"], tuple(v["name"] for v in a["values"])) for a in data.get("attributes", [])]
    return check_vocabularies(cats, attrs, ATTRIBUTE_SOURCES, where)


def check_coco(data: Any, where: str = "coco") -> list[Problem]:
    """Format and reference checks of a COCO-with-attributes dict (no geometry, no image files).

    Duplicate ids, annotations pointing at unknown images/categories, unknown attribute names, attribute ids
    outside 0..K-1 (-1 = unlabeled is allowed). `validate.py` adds geometry and image-file checks on top.
    """
    problems = check_coco_header(data, where)
    if problems:
        return problems
    image_ids: set[int] = set()
    for i, im in enumerate(data["images"]):
        w = f"{where}: images[{i}]"
        if not isinstance(im, dict) or not is_int(im.get("id")):
            problems.append(Problem("bad_format", w, "needs an integer 'id'"))
            continue
        w = f"{where}: images[{i}] (id {im['id']})"
        if im["id"] in image_ids:
            problems.append(Problem("duplicate_id", w, f"image id {im['id']} appears twice"))
        image_ids.add(im["id"])
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            problems.append(Problem("bad_format", w, "needs a string 'file_name'"))
        for key in ("height", "width"):
            if not is_int(im.get(key)) or im[key] <= 0:
                problems.append(Problem("bad_format", f"{w}.{key}", f"must be a positive integer, got {im.get(key)!r}"))
    category_ids = {c["id"] for c in data["categories"]}
    vocab = {a["name"]: len(a["values"]) for a in data.get("attributes", [])}
    multi = {a["name"] for a in data.get("attributes", []) if a.get("kind") == "multi"}
    ann_ids: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        w = f"{where}: annotations[{i}]"
        if not isinstance(ann, dict) or not is_int(ann.get("id")):
            problems.append(Problem("bad_format", w, "needs an integer 'id'"))
            continue
        w = f"{where}: annotations[{i}] (id {ann['id']})"
        if ann["id"] in ann_ids:
            problems.append(Problem("duplicate_id", w, f"annotation id {ann['id']} appears twice"))
        ann_ids.add(ann["id"])
        if not is_int(ann.get("image_id")) or ann["image_id"] not in image_ids:
            problems.append(Problem("unknown_image", f"{w}.image_id", f"no image with id {ann.get('image_id')!r}"))
        if not is_int(ann.get("category_id")) or ann["category_id"] not in category_ids:
            problems.append(Problem("unknown_category", f"{w}.category_id",
                                    f"no category with id {ann.get('category_id')!r}; known: {sorted(category_ids)}"))
        if "segmentation" not in ann:
            problems.append(Problem("bad_format", w, "missing 'segmentation'"))
        attrs = ann.get("attributes", {})
        if not isinstance(attrs, dict):
            problems.append(Problem("bad_format", f"{w}.attributes", "must be an object {name: value id}"))
            continue
        for name, value in attrs.items():
            if name not in vocab:
                problems.append(Problem("unknown_attribute", f"{w}.attributes.{name}",
                                        f"attribute {name!r} is not in the file's 'attributes'; known: {list(vocab)}"))
            else:
                problems += attribute_value_problems(value, vocab[name], name in multi, f"{w}.attributes.{name}")
    return problems
