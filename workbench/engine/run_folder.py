"""The run folder's bookkeeping: refusing to reuse a run silently, deleting a run's own files on
`--overwrite`, removing temp files a killed write left, and the append-only `metrics.jsonl` (cut back to a
checkpoint's step on resume)."""
from __future__ import annotations

import json
from pathlib import Path

from workbench.config_file import ConfigError
from workbench.data.io import remove_stale_temps
from workbench.errors import WorkbenchError


class RunDirectoryError(WorkbenchError, FileExistsError):
    pass


RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "last_step*.pt", "model_final.pt", "metrics.json",
             "metrics_*.json", "loss_curve.png", "nan_batch_step*.pt", "train.json", "pretrained_report.json",
             "events.out.tfevents.*", "categories.json")


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to reuse a run directory silently; with `overwrite` delete its run files (only those: the folder
    may hold the user's other files); always remove temp files a killed write left behind."""
    existing = sorted({p.name for pattern in RUN_FILES[:5] for p in run_dir.glob(pattern)})
    if existing and not resume and not overwrite:
        raise RunDirectoryError(f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue "
                                "it or --overwrite to start again there (or choose another --out)")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run or start it again")
    if overwrite:
        for pattern in RUN_FILES:
            for p in run_dir.glob(pattern):
                p.unlink()
    if run_dir.is_dir():
        for p in remove_stale_temps(run_dir):
            print(f"[workbench] removed {p.name}, left by a write that was killed", flush=True)


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep the lines of metrics.jsonl up to `step` (a resumed run rewrites the steps after its checkpoint). A
    last line cut short (the run was killed while appending it) is dropped with a note; an unreadable line before
    it is an error naming file and line."""
    from workbench.data.problems import DataError, Problem

    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not line.endswith("\n"):
                print(f"[workbench] {path}:{number}: dropped a line cut short by the killed run", flush=True)
                continue
            raise DataError([Problem("bad_log_line", f"{path}:{number}", f"not a JSON record ({err.msg}); the run's "
                                     "log is damaged: fix or delete that line to resume")]) from err
        if record.get("step", 0) <= step:
            kept.append(line)
    if len(kept) != len(lines):
        from workbench.data.io import write_bytes_atomic

        write_bytes_atomic(path, "".join(kept).encode())


def write_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
