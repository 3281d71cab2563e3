"""A run's category names, kept in its folder (`categories.json`), so that exporting the weights or drawing
predictions does not depend on the training data still being where it was when the run trained; with them, the
attribute groups each category's annotations label (`carried_attributes`: overlays caption only those)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from workbench.data.io import read_json, write_json_atomic

CATEGORIES_FILE = "categories.json"


def save_category_names(run_dir: str | os.PathLike, names: list[str], source: str,
                        carried: dict[int, tuple[str, ...]] | None = None) -> None:
    """RUN_DIR/categories.json: the class head's rows in order, and the data file they came from; with
    `carried` (data/carried_attributes.py), per category the attribute groups its annotations label (null for a
    category the data never shows), so overlays can leave out the others."""
    doc: dict = {"categories": list(names), "source": source}
    if carried is not None:
        doc["carried_attributes"] = [list(carried[i]) if i in carried else None for i in range(len(names))]
    write_json_atomic(Path(run_dir) / CATEGORIES_FILE, doc, indent=2)


def run_carried_attributes(run_dir: str | os.PathLike, cfg) -> dict[int, tuple[str, ...]] | None:
    """{class: attribute groups its training annotations label} from the run's categories.json, else from its
    `data.train` if that is still there, else None (unknown: overlays show every group)."""
    path = Path(run_dir) / CATEGORIES_FILE
    if path.is_file():
        doc = read_json(path)
        rows = doc.get("carried_attributes") if isinstance(doc, dict) else None
        if isinstance(rows, list) and len(rows) == cfg.model.num_classes:
            return {i: tuple(str(n) for n in row) for i, row in enumerate(rows) if isinstance(row, list)}
    if cfg.data.train and Path(cfg.data.train).exists():
        return _carried_from_data(str(cfg.data.train), Path(cfg.data.train).stat().st_mtime, cfg.model.task,
                                  cfg.data.image_root or None, tuple(a.name for a in cfg.model.attributes))
    return None


@lru_cache(maxsize=8)
def _carried_from_data(train: str, mtime: float, task: str, image_root: str | None,
                       names: tuple[str, ...]) -> dict[int, tuple[str, ...]]:
    """Read once per file version: overlays ask for every image they draw."""
    from workbench.data.carried_attributes import carried_attributes
    from workbench.data.segmentation import open_dataset

    return carried_attributes(getattr(open_dataset(train, task, image_root), "records", ()), names)


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
