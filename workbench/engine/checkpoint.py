"""Checkpoints: written atomically, read with `torch.load(..., weights_only=True)`, the last N kept.

Everything saved is tensors or plain Python containers (RNG states included), so loading never runs
pickled code; a file holding anything else is refused with its path in the message. A truncated or
corrupt file (a copy cut short, a full disk) is reported as such, not as "unsafe".

Rotation (`save_rotating`): each save writes `last_step<N>.pt` and hard-links `last.pt` to it (no second copy
on disk); only the `keep` newest step files stay. `load_latest` reads `last.pt` and, when that is unreadable,
falls back to the newest readable step file, saying so on stderr.
"""
from __future__ import annotations

import errno
import os
import pickle
import random
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError

STEP_FILE = re.compile(r"last_step(\d+)\.pt")
BEST_FILE = "best.pt"  # the best evaluation's weights (solver.eval_period; engine/best.py)


class CheckpointError(WorkbenchError, ValueError):
    """A checkpoint that cannot be used: corrupt/truncated, or holding objects other than tensors."""


def rng_state() -> dict[str, Any]:
    """torch (CPU and every CUDA device), numpy's global and Python's RNG states as tensors/ints."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Tensors and plain containers only; anything else (pickled classes, functions) is refused.

    Raises `CheckpointError` naming the path: "corrupt or truncated" for a partial/damaged file, "refused"
    for a complete file that holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    size = path.stat().st_size
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise _corrupt(path, size, err) from err
        operand = re.search(r"Unsupported operand (\d+)", str(err))
        if operand:
            opcode = _pickle_opcode(int(operand.group(1)))
            if opcode is None:  # not an opcode at all: a damaged stream, not an object
                raise _corrupt(path, size, err) from err
            raise CheckpointError(f"{path}: written with a pickle protocol whose opcode {opcode} torch's weights-only "
                                  f"reader does not read (pickle_protocol 4 or 5); re-save it with "
                                  f"torch.save(obj, path, pickle_protocol=2) where you trust it") from err
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: refused to load: it holds objects other than tensors and plain containers"
                              f"{what} (weights_only=True). Only load checkpoints you trust with other tools.") from err
    except (EOFError, zipfile.BadZipFile, KeyError, ValueError) as err:
        raise _corrupt(path, size, err) from err
    except RuntimeError as err:
        if "zip archive" in str(err) or "PytorchStreamReader" in str(err):
            raise _corrupt(path, size, err) from err
        raise
    except OSError as err:  # torch's zip reader seeking before the start of a file cut short (5-69 KB of 200)
        if err.errno == errno.EINVAL and err.filename is None:
            raise _corrupt(path, size, err) from err
        raise  # a read error of the disk, a permission: not the file's content


def _pickle_opcode(byte: int) -> str | None:
    """The name of pickle opcode `byte`, or None when no protocol has it."""
    import pickletools

    return next((op.name for op in pickletools.opcodes if ord(op.code) == byte), None)


def _corrupt(path: Path, size: int, err: BaseException) -> CheckpointError:
    first = str(err).splitlines()[0] if str(err) else ""
    return CheckpointError(f"{path}: corrupt or truncated checkpoint ({size} bytes; {type(err).__name__}: {first}); "
                           "it was cut short or damaged after writing (the trainer writes atomically)")


def step_files(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of `last_step<N>.pt` files in `run_dir`, newest first."""
    found = []
    for p in Path(run_dir).glob("last_step*.pt"):
        m = STEP_FILE.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def save_rotating(run_dir: str | os.PathLike, payload: dict[str, Any], keep: int) -> Path:
    """Save `payload` (with an int "step") as `last_step<step>.pt` and `last.pt` (a hard link to it); remove
    all but the `keep` newest step files. Each file is written atomically, so a kill at any point leaves the
    previous checkpoints loadable."""
    run_dir = Path(run_dir)
    step_path = run_dir / f"last_step{int(payload['step'])}.pt"
    save_checkpoint(step_path, payload)
    _link_atomic(step_path, run_dir / "last.pt")
    for _, old in step_files(run_dir)[max(1, keep):]:
        old.unlink(missing_ok=True)
    return step_path


def _link_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError as err:  # a filesystem without hard links: a full copy, said out loud
        print(f"[workbench] hard links unsupported in {dst.parent} ({err}); copying {src.name} to {dst.name}",
              file=sys.stderr, flush=True)
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def load_latest(run_dir: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint of a run: `last.pt`, else the newest readable `last_step<N>.pt` (with a
    warning on stderr naming what was skipped and why). Raises if none is readable."""
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    candidates = ([last] if last.is_file() else []) + [p for _, p in step_files(run_dir)]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint in {run_dir} (last.pt or last_step<N>.pt): nothing to resume")
    failures = []
    for path in candidates:
        if failures and last.is_file() and path.is_file() and os.path.samefile(path, last):
            continue  # the same file as the unreadable last.pt
        try:
            ckpt = load_checkpoint(path, map_location)
        except CheckpointError as err:
            failures.append(str(err))
            continue
        if failures:
            print("[workbench] WARNING: falling back to an older checkpoint:\n  " + "\n  ".join(failures)
                  + f"\n  using {path} (step {ckpt.get('step')})", file=sys.stderr, flush=True)
        return ckpt, path
    raise CheckpointError("no readable checkpoint in " + str(run_dir) + ":\n  " + "\n  ".join(failures))
