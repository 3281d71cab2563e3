"""Finding the CUDA toolkit the way our users have to: $CUDA_HOME, $CUDA_PATH, `nvcc` on PATH, /usr/local/cuda.

Standard library only: setup.py loads this file by path while building (torch may not even import then), and
`workbench doctor` uses it to say what a rebuild would find.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Toolkit:
    """A CUDA toolkit root (`home`), how it was found, and its nvcc; home is None when none was found."""

    home: str | None
    how: str
    nvcc: str | None = None
    version: str | None = None  # "13.0", from `nvcc --version`


def is_cuda_home(path: str | os.PathLike | None) -> bool:
    """A usable toolkit has bin/nvcc and the runtime headers (include/ or targets/<arch>/include/)."""
    if not path:
        return False
    p = Path(path)
    headers = (p / "include" / "cuda_runtime.h").exists() or any(p.glob("targets/*/include/cuda_runtime.h"))
    return (p / "bin" / "nvcc").exists() and headers


def toolkit_root_of(nvcc: str) -> Path:
    """The toolkit an `nvcc` belongs to. `nvcc -dryrun` prints TOP=<root>/bin/.., which also sees through the
    wrapper scripts some images put on PATH (there realpath(nvcc)/../.. is wrong, e.g. /usr/local)."""
    try:
        cmd = [nvcc, "-dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.M)
        if match:
            return Path(match.group(1).strip()).resolve()
    except (OSError, subprocess.SubprocessError):
        pass
    return Path(nvcc).resolve().parent.parent


def nvcc_version(nvcc: str) -> str | None:
    """"13.0" from `nvcc --version`, None when it does not run."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out.stdout)
    return match.group(1) if match else None


def find_toolkit(environ: dict[str, str] | None = None) -> tuple[Toolkit, list[str]]:
    """(the toolkit a build would use, notes about candidates that were skipped and why)."""
    env = os.environ if environ is None else environ
    notes: list[str] = []
    home, how = None, "no nvcc on PATH, $CUDA_HOME/$CUDA_PATH unset, nothing in /usr/local/cuda*"
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = env.get(var)
        if value and home is None:
            if is_cuda_home(value):
                home, how = value, f"${var}"
            else:
                notes.append(f"${var}={value} has no bin/nvcc and include/cuda_runtime.h; ignored")
    if home is None:
        nvcc = shutil.which("nvcc", path=env.get("PATH"))
        if nvcc:
            root = toolkit_root_of(nvcc)
            if is_cuda_home(root):
                home, how = str(root), f"derived from nvcc on PATH ({nvcc})"
            else:
                notes.append(f"nvcc on PATH ({nvcc}) is not inside a toolkit with headers ({root}); ignored")
    if home is None:
        candidates = ["/usr/local/cuda", *sorted(map(str, Path("/usr/local").glob("cuda-*")), reverse=True)]
        for candidate in candidates:
            if is_cuda_home(candidate):
                home, how = candidate, f"found at {candidate}"
                break
    if home is None:
        return Toolkit(None, how), notes
    nvcc = str(Path(home) / "bin" / "nvcc")
    return Toolkit(home, how, nvcc, nvcc_version(nvcc)), notes
