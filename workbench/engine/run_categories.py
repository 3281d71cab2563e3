"""A run's category names, kept in its folder (`categories.json`), so that exporting the weights or drawing
predictions does not depend on the training data still being where it was when the run trained."""
from __future__ import annotations

import os
from pathlib import Path

from workbench.data.io import read_json, write_json_atomic

CATEGORIES_FILE = "categories.json"


def save_category_names(run_dir: str | os.PathLike, names: list[str], source: str) -> None:
    """RUN_DIR/categories.json: the class head's rows in order, and the data file they came from."""
    write_json_atomic(Path(run_dir) / CATEGORIES_FILE, {"categories": list(names), "source": source}, indent=2)


def run_category_names(run_dir: str | os.PathLike, cfg) -> tuple[list[str], str] | None:
    """(names in class order, where they came from): the run's categories.json, else the schema of its
    `data.train` if that file is still there, else None. Names whose count differs from the model's classes
    are not the run's and are skipped."""
    path = Path(run_dir) / CATEGORIES_FILE
    if path.is_file():
        doc = read_json(path)
        names = doc.get("categories") if isinstance(doc, dict) else None
        if isinstance(names, list) and len(names) == cfg.model.num_classes:
            return [str(n) for n in names], str(path)
    from workbench.pretrained.training import category_names

    names = category_names(cfg)
    if names is not None and len(names) == cfg.model.num_classes:
        return list(names), str(cfg.data.train)
    return None
