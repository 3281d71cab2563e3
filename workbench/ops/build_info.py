"""What the compiled extension was built against, and whether that still matches the running torch.

setup.py compiles a JSON record (torch, CUDA, nvcc, archs, ...) into `workbench._C` between markers, so it can
be read from the file's bytes even when the extension no longer imports -- the usual symptom of a build made
against another torch.
"""
from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

EXTENSION = "workbench._C"
REBUILD = "rm -rf build workbench/_C*.so .venv/.installed && make setup"
_MARKER = re.compile(rb"WORKBENCH_BUILD_INFO<<(\{.*?\})>>", re.S)


@dataclass(frozen=True)
class Problem:
    """Something wrong with the environment, and the command or setting that fixes it."""

    message: str
    fix: str


def extension_path() -> Path | None:
    """Where `workbench._C` would be imported from (without importing it), or None when it is not built."""
    try:
        spec = importlib.util.find_spec(EXTENSION)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def read_provenance(path: Path | None = None) -> dict | None:
    """The build record inside the extension file, or None (not built, or built before records existed)."""
    path = extension_path() if path is None else path
    if path is None or not path.exists():
        return None
    match = _MARKER.search(path.read_bytes())
    return json.loads(match.group(1)) if match else None


def _release(version: str | None) -> str | None:
    """"2.14.1+cu130" -> "2.14.1": the part that decides binary compatibility."""
    return None if version is None else version.split("+")[0]


def stale_build_problems(built: dict | None, torch_version: str, torch_cuda: str | None) -> list[Problem]:
    """Compare a build record with the running torch; one Problem per mismatch (empty when it matches)."""
    if built is None:
        return []
    problems = []
    if _release(built.get("torch")) != _release(torch_version):
        problems.append(Problem(
            f"workbench._C was built against torch {built.get('torch')} but torch {torch_version} is running "
            "(a stale build: it may fail to import or crash)", REBUILD))
    if built.get("with_cuda") and built.get("torch_cuda") != torch_cuda:
        problems.append(Problem(
            f"workbench._C was built for CUDA {built.get('torch_cuda')} but the running torch uses CUDA "
            f"{torch_cuda or 'none (CPU-only torch)'}", REBUILD))
    return problems
