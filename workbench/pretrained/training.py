"""Starting a training run from `model.weights`: load, print the report, keep it in the run directory."""
from __future__ import annotations

from pathlib import Path

from workbench.pretrained.load import load_pretrained
from workbench.pretrained.report import LoadReport

REPORT_FILE = "pretrained_report.json"


def category_names(cfg) -> list[str] | None:
    """The training data's category names in class order (to carry class-head rows over by name)."""
    if cfg.data.train and Path(cfg.data.train).is_file():
        from workbench.data.schema import schema_of_coco

        return schema_of_coco(cfg.data.train).category_names
    return None


def start_from_weights(model, cfg, run_dir: str | Path | None = None) -> LoadReport:
    """Load `cfg.model.weights` into `model`, print the report, and (with `run_dir`) write it to
    RUN_DIR/pretrained_report.json."""
    report = load_pretrained(model, cfg.model.weights, categories=category_names(cfg))
    print(report, flush=True)
    if run_dir is not None:
        report.save(Path(run_dir) / REPORT_FILE)
    return report
