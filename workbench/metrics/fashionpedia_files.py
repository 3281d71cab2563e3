"""Fashionpedia's AP(IoU+F1) of a results file on disk (`workbench eval --fashionpedia-results`): a results file
in Fashionpedia's format (a JSON list of {image_id, category_id, segmentation, score, attribute_ids}) against a GT
file in Fashionpedia's format or ours, checked entry by entry first; the metric itself is fashionpedia.py's."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from workbench.metrics.fashionpedia import (FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES, attribute_vocabulary,
                                            categories_with_attributes, iou_f1_ap)

__all__ = ["FashionpediaResult", "evaluate_fashionpedia_results", "fashionpedia_ground_truth"]


def _results_problems(results: Any, gt: Mapping[str, Any], vocabulary: set[int], where: str) -> list:
    from workbench.data.masks import compressed_rle_error
    from workbench.data.problems import Problem

    if not isinstance(results, list):
        return [Problem("bad_format", where, "a results file is a JSON list of {image_id, category_id, "
                        "segmentation, score, attribute_ids}")]
    images = {im["id"]: [im.get("height"), im.get("width")] for im in gt["images"]}
    categories = {c["id"] for c in gt["categories"]}
    problems = []
    for i, r in enumerate(results):
        w = f"{where}: [{i}]"
        if not isinstance(r, dict):
            problems.append(Problem("bad_format", w, "must be an object"))
            continue
        if r.get("image_id") not in images:
            problems.append(Problem("unknown_image", f"{w}.image_id", f"no image with id {r.get('image_id')!r} in the GT"))
        if r.get("category_id") not in categories:
            problems.append(Problem("unknown_category", f"{w}.category_id", f"no category with id {r.get('category_id')!r}"))
        seg = r.get("segmentation")
        if not (isinstance(seg, dict) and "counts" in seg and "size" in seg):
            problems.append(Problem("bad_format", f"{w}.segmentation", "must be a COCO RLE {size, counts}"))
        elif not isinstance(seg["counts"], str):
            problems.append(Problem("bad_format", f"{w}.segmentation.counts", "must be a compressed RLE string "
                                    f"(pycocotools' mask.encode, decoded to str), got {type(seg['counts']).__name__}"))
        elif not (isinstance(seg["size"], list) and len(seg["size"]) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in seg["size"])):
            problems.append(Problem("bad_format", f"{w}.segmentation.size", f"must be [height, width], got "
                                    f"{seg['size']!r}"))
        elif r.get("image_id") in images and None not in images[r["image_id"]] \
                and seg["size"] != images[r["image_id"]]:
            problems.append(Problem("bad_size", f"{w}.segmentation.size", f"{seg['size']} is not image "
                                    f"{r['image_id']}'s [height, width] {images[r['image_id']]}"))
        elif (why := compressed_rle_error(seg["counts"], *seg["size"])) is not None:
            problems.append(Problem("bad_rle", f"{w}.segmentation.counts", f"not a valid compressed RLE of a "
                                    f"{seg['size'][0]}x{seg['size'][1]} mask: {why}"))
        score = r.get("score")
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
            problems.append(Problem("bad_format", f"{w}.score", f"must be a finite number, got {score!r}"))
        ids = r.get("attribute_ids")
        if not isinstance(ids, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in ids):
            problems.append(Problem("bad_format", f"{w}.attribute_ids", f"must be a list of attribute ids, got {ids!r}"))
        elif set(ids) - vocabulary:
            problems.append(Problem("unknown_attribute", f"{w}.attribute_ids",
                                    f"ids {sorted(set(ids) - vocabulary)} are not attributes of the GT file"))
    return problems


def fashionpedia_ground_truth(gt_path) -> tuple[dict, list[int], bool]:
    """A GT file in Fashionpedia's format (annotations with `attribute_ids`) or ours (imported, with
    `source_id`s, or any COCO-with-attributes file) -> (COCO dict with `attribute_ids`, ids > 0, `area`;
    the attribute-id vocabulary; whether the file is Fashionpedia's format or imported from it)."""
    from workbench.data.io import read_json
    from workbench.data.masks import segmentation_to_mask
    from workbench.data.problems import DataError, Problem
    from workbench.data.schema import UNLABELED, Schema, check_coco

    data = read_json(gt_path)
    where = str(gt_path)
    if isinstance(data, dict) and any("attribute_ids" in a for a in data.get("annotations", []) if isinstance(a, dict)):
        from workbench.data.fashionpedia import check_fashionpedia

        problems = check_fashionpedia(data, where)
        if problems:
            raise DataError(problems)
        vocabulary = [a["id"] for a in data["attributes"]]
        annotations = [dict(a, attribute_ids=list(a.get("attribute_ids", []))) for a in data["annotations"]]
        from_fashionpedia = True
    else:
        problems = check_coco(data, where)
        if problems:
            raise DataError(problems)
        schema = Schema.from_coco(data, where)
        if not schema.attributes:
            raise DataError([Problem("bad_format", f"{where}: attributes", "the GT file has no attributes: "
                                     "AP(IoU+F1) needs an attribute vocabulary")])
        ids = attribute_vocabulary(schema)
        vocabulary = sorted(ids.values())
        from_fashionpedia = all(a.source_ids for a in schema.attributes)  # `data import-fashionpedia` keeps them
        annotations = []
        for a in data["annotations"]:
            out = []
            for g in schema.attributes:
                v = (a.get("attributes") or {}).get(g.name, UNLABELED)
                if v != UNLABELED:
                    out += [ids[g.name, k] for k in v] if g.multi else [ids[g.name, v]]
            annotations.append(dict(a, attribute_ids=sorted(out)))
    images = {im["id"]: im for im in data["images"]}
    for i, a in enumerate(annotations, start=1):  # COCOeval reads id 0 as "unmatched"
        a["id"] = i
        a.setdefault("iscrowd", 0)
        if "area" not in a:
            im = images[a["image_id"]]
            a["area"] = float(segmentation_to_mask(a["segmentation"], im["height"], im["width"]).sum())
    gt = {"images": list(data["images"]), "categories": list(data["categories"]), "annotations": annotations}
    return gt, vocabulary, from_fashionpedia


@dataclass(frozen=True)
class FashionpediaResult:
    """`workbench eval --fashionpedia-results`: the AP(IoU+F1) figures (see `iou_f1_ap`) and which categories
    were scored with attribute F1, by which rule ("fashionpedia": FPEval's hard-coded list; "data": the
    categories with an attribute in the GT)."""

    metrics: dict[str, float | None]
    category_rule: str
    categories_with_attributes: tuple[int, ...]

    @property
    def rule_text(self) -> str:
        if self.category_rule == "fashionpedia":
            return ("categories scored with attribute F1: FPEval's hard-coded Fashionpedia list (ids "
                    f"{', '.join(map(str, sorted(self.categories_with_attributes)))}), as the fashionpedia "
                    "package applies it to any file")
        return ("categories scored with attribute F1: those with an attribute in the GT (ids "
                f"{', '.join(map(str, sorted(self.categories_with_attributes)))}); the GT is not in "
                "Fashionpedia's format, so FPEval's own list does not apply")

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics, "category_rule": self.category_rule,
                "categories_with_attributes": sorted(self.categories_with_attributes)}


def evaluate_fashionpedia_results(gt_path, results_path, max_dets: int = 100) -> FashionpediaResult:
    """AP(IoU+F1) of a results file in Fashionpedia's format against a GT file (see `fashionpedia_ground_truth`),
    as the `fashionpedia` package's FPEval gives it.

    Categories with attributes: FPEval's hard-coded list for a GT in Fashionpedia's format or imported from it
    (FPEval applies it to any file), else those with an attribute in the GT. Every GT image is evaluated, as
    FPEval does. A result entry that FPEval would score in silence (a NaN or infinite score, an RLE that is not
    a mask of its image, a non-integer attribute id) is a `DataError` naming it.
    """
    from workbench.data.io import read_json
    from workbench.data.problems import DataError

    gt, vocabulary, from_fashionpedia = fashionpedia_ground_truth(gt_path)
    results = read_json(results_path)
    problems = _results_problems(results, gt, set(vocabulary), str(results_path))
    if problems:
        raise DataError(problems)
    attributed = set(FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES if from_fashionpedia else categories_with_attributes(gt))
    metrics = iou_f1_ap(gt, results, vocabulary, attributed=attributed, max_dets=max_dets)
    return FashionpediaResult(metrics, "fashionpedia" if from_fashionpedia else "data", tuple(sorted(attributed)))
