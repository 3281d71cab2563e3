"""The small values CI runs the notebooks with, injected after each notebook's `parameters` cell (as papermill
does): the notebooks themselves ship values worth looking at (the demo's scale), which would take minutes here.
Paths point into the test's temporary folder, so nothing is written into the repository and no existing run
(`runs/demo`) is picked up."""
from __future__ import annotations

import pathlib


def small_parameters(notebook: str, tmp: pathlib.Path, task: str | None = None) -> dict:
    """{name: value} for notebook `notebook` (file stem); only names its parameters cell defines are injected.
    `task`: a run with `TASK = task`, smaller still (the default run already covers the notebook's other cells)."""
    common = {"WORK_DIR": str(tmp / "work")}
    if task is not None:
        common.update({"TASK": task, "NUM_IMAGES": 4, "SHOW": 4})
    return {**common, **{
        "03_train": {"RUN_DIR": str(tmp / "work" / "run"), "DATA_DIR": str(tmp / "work" / "data"),
                     "TRAIN_IMAGES": 8, "VAL_IMAGES": 2, "MAX_ITER": 2 if task else 4,
                     "CHUNKS": 1 if task else 2, "DEVICE": "cpu"},
        "04_inspect_queries": {"RUN_DIR": str(tmp / "no-run"), "TRAIN_IMAGES": 8, "VAL_IMAGES": 2, "MAX_ITER": 2},
        "05_ablations": {"TRAIN_IMAGES": 8, "VAL_IMAGES": 4, "IMAGE_SIZE": 64, "MAX_ITER": 4, "BATCH_SIZE": 2,
                         "SEEDS": 2, "DEVICE": "cpu", "TORCH_THREADS": 1},
    }.get(notebook, {})}
