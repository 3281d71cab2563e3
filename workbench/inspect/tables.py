"""pandas views of annotations: what a labelme file says shape by shape, and what a dataset item holds."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from workbench.drawing.overlay import value_set_text

__all__ = ["instances_table", "labelme_shapes_table"]


def labelme_shapes_table(path: str | os.PathLike) -> pd.DataFrame:
    """One row per shape of a labelme JSON: label, shape_type, group_id, points, flags set, description --
    the three places attributes may hide (flags, "label" suffixes, description)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    rows = []
    for i, shape in enumerate(doc.get("shapes", [])):
        flags = shape.get("flags") or {}
        rows.append({
            "shape": i,
            "label": shape.get("label"),
            "shape_type": shape.get("shape_type", "polygon"),
            "group_id": shape.get("group_id"),
            "points": len(shape.get("points") or []),
            "flags": ", ".join(k for k, v in flags.items() if v),
            "description": shape.get("description") or "",
        })
    return pd.DataFrame(rows).set_index("shape") if rows else pd.DataFrame(
        columns=["label", "shape_type", "group_id", "points", "flags", "description"])


def instances_table(item: Mapping[str, Any], categories: Sequence[str],
                    attribute_values: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """One row per instance of a dataset item: category, each attribute's value ("unlabeled" for -1; a
    multi-label group's set as "stripes+dots", "-" when empty), area in pixels and box."""
    inst = item["instances"]
    labels = np.asarray(inst["labels"])
    masks = np.asarray(inst["masks"], dtype=bool)
    rows = []
    for t in range(len(labels)):
        row = {"instance": t, "category": categories[int(labels[t])]}
        for name, values in attribute_values.items():
            values = values["values"] if isinstance(values, Mapping) else values  # Schema.model_attributes() form
            v = np.asarray(inst["attributes"][name])[t]
            if np.ndim(v) == 1:  # multi-label group: the set, "-" when empty
                labeled = inst.get("attribute_labeled", {}).get(name)
                unlabeled = labeled is not None and not bool(np.asarray(labeled)[t])
                row[name] = "unlabeled" if unlabeled else value_set_text(values, v)
                continue
            row[name] = values[int(v)] if int(v) >= 0 else "unlabeled"
        ys, xs = np.nonzero(masks[t])
        row["area"] = int(masks[t].sum())
        row["box (x0, y0, x1, y1)"] = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())) if len(xs) else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("instance") if rows else pd.DataFrame()
