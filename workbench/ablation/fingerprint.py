"""What a number was measured with: library versions, the deformable-attention backend, git commit, device.

Every ablation cell stores the fingerprint of the process that ran it (status.json); the table's metadata
lists the distinct ones, so a table mixing machines or commits says so.
"""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

__all__ = ["environment_fingerprint", "git_commit", "ops_backend_used", "short_fingerprint"]

REPO = Path(__file__).resolve().parents[2]


def git_commit(repo: str | Path = REPO) -> dict[str, Any]:
    """{"commit": sha or None, "dirty": tracked files modified?} of the repository holding the package."""
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha or None, "dirty": bool(status.strip())}


def environment_fingerprint(device: str | torch.device | None = None) -> dict[str, Any]:
    """JSON-serialisable description of this process's environment. `device`: the one the runs used."""
    import numpy
    import pandas

    import workbench
    from workbench.ops import backend_info

    dev = torch.device(device) if device is not None else None
    info = backend_info()
    device_name = None
    if dev is not None and dev.type == "cuda" and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(dev)
    elif dev is not None and dev.type == "cpu":
        device_name = platform.processor() or platform.machine()
    return {
        "workbench": getattr(workbench, "__version__", None),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "platform": platform.platform(),
        "ops_backend_used": ops_backend_used(info, dev),
        "ops_backend": info,
        **{f"git_{k}": v for k, v in git_commit().items()},
        "device": str(dev) if dev is not None else None,
        "device_name": device_name,
        "torch_threads": torch.get_num_threads(),
    }


def ops_backend_used(info: dict, device: torch.device | None) -> str:
    """The deformable-attention kernel `ms_deform_attn(backend="auto")` runs on `device` (float32): the compiled
    "cpu" / "cuda" kernel when built for it, else "reference"."""
    kind = device.type if device is not None and device.type in ("cpu", "cuda") else "cpu"
    if not isinstance(info, dict) or not info.get("compiled"):
        return "reference"
    return kind if kind in (info.get("backends") or []) else "reference"


def short_fingerprint(fp: dict[str, Any]) -> str:
    """One line for captions: torch, CUDA, ops backend, commit, device."""
    ops = fp.get("ops_backend_used") or "?"
    ops = f"{ops} (compiled)" if ops in ("cpu", "cuda") else ops
    commit = (fp.get("git_commit") or "unknown")[:10] + ("+dirty" if fp.get("git_dirty") else "")
    device = fp.get("device") or "?"
    if fp.get("device_name"):
        device += f" ({fp['device_name']})"
    return (f"torch {fp.get('torch')}, CUDA {fp.get('cuda') or 'none'}, ops backend {ops}, "
            f"commit {commit}, device {device}")
