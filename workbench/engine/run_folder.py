"""The run folder's bookkeeping: refusing to reuse a run silently, one writer at a time (an exclusive lock),
deleting a run's own files on `--overwrite`, removing temp files a killed write left, and the append-only
`metrics.jsonl` (cut back to a checkpoint's step on resume).

The lock: `open_run_dir` takes an exclusive `flock` on RUN/.workbench.lock after every check has passed and
before anything in the folder is deleted or written, so a second `workbench train` into the same `--out`
stops with one message naming the folder (and the pid holding it) instead of interleaving checkpoints and
metrics. The OS drops it when the process ends, however it ends; in a process, it is released when the
outermost call marked `@releases_run_locks` (the trainer, the pipeline) returns or raises. The lock file
itself stays (removing it would let a third process lock a new file while the second holds the old one).
"""
from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path

from workbench.config_file import ConfigError
from workbench.data.io import remove_stale_temps
from workbench.errors import WorkbenchError


class RunDirectoryError(WorkbenchError, FileExistsError):
    pass


class RunLockedError(WorkbenchError):
    """Another process (or thread) is training into the same run folder: exit 1, nothing touched."""


LOCK_FILE = ".workbench.lock"
_scope = threading.local()  # .depth: nesting of @releases_run_locks calls; .locks: file objects they hold
_unscoped: list = []  # locks taken outside such a call: held until the process ends


def releases_run_locks(fn):
    """Run-folder locks taken during a call of `fn` are released when the outermost such call returns or
    raises (a failed run in a notebook does not keep its folder locked)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _scope.depth = getattr(_scope, "depth", 0) + 1
        _scope.locks = getattr(_scope, "locks", [])
        try:
            return fn(*args, **kwargs)
        finally:
            _scope.depth -= 1
            if _scope.depth == 0:
                while _scope.locks:
                    _scope.locks.pop().close()  # closing the file drops its flock
    return wrapper


def lock_run_dir(run_dir: Path):
    """Create `run_dir` if needed and hold an exclusive lock on it (see the module docstring); raise
    RunLockedError naming the folder and the holder's pid when another process or thread holds it. Returns the
    lock file's handle (closing it releases the lock), None where there is no fcntl (not POSIX: no lock)."""
    try:
        import fcntl
    except ImportError:
        run_dir.mkdir(parents=True, exist_ok=True)
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    handle = open(path, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise RunLockedError(f"{run_dir} is in use: another `workbench train` (pid {holder or 'unknown'}) is "
                             f"writing that run (lock {path}); wait for it to finish, or choose another --out") \
            from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    if getattr(_scope, "depth", 0):
        _scope.locks.append(handle)
    else:  # not inside a @releases_run_locks call: held until the caller closes it or the process ends
        _unscoped.append(handle)
    return handle


def open_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """After every other check: refuse a reuse that was not asked for (nothing created), then create the
    folder, lock it, and prepare it under the lock (prepare_run_dir)."""
    check_run_dir(run_dir, resume, overwrite)
    lock_run_dir(run_dir)
    prepare_run_dir(run_dir, resume, overwrite)


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to reuse a run directory silently; refuse --resume with --overwrite. Changes nothing."""
    existing = sorted({p.name for pattern in RUN_FILES[:5] for p in run_dir.glob(pattern)})
    if existing and not resume and not overwrite:
        raise RunDirectoryError(f"{run_dir} already holds a run ({', '.join(existing)}); pass --resume to continue "
                                "it or --overwrite to start again there (or choose another --out)")
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run or start it again")
    if resume and not run_dir.is_dir():  # nothing to continue: never create the folder
        raise RunDirectoryError(f"--resume: {run_dir} does not exist; give the folder of the run to continue")


RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "last_step*.pt", "model_final.pt", "metrics.json",
             "metrics_*.json", "loss_curve.png", "nan_batch_step*.pt", "train.json", "pretrained_report.json",
             "events.out.tfevents.*", "categories.json", "overlays/*.png", "best.pt")


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to reuse a run directory silently; with `overwrite` delete its run files (only those: the folder
    may hold the user's other files); always remove temp files a killed write left behind."""
    check_run_dir(run_dir, resume, overwrite)
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
