"""Loading the compiled extension once, remembering why it is unavailable when it is."""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import ModuleType

import torch

from workbench.ops.build_info import REBUILD, extension_path, read_provenance, stale_build_problems


@dataclass(frozen=True)
class Extension:
    """`module` is workbench._C, or None with `reason` saying why and `fix` what to run."""

    module: ModuleType | None
    reason: str | None = None
    fix: str | None = None

    @property
    def with_cuda(self) -> bool:
        return bool(self.module is not None and self.module.with_cuda)


@functools.lru_cache(maxsize=1)
def load_extension() -> Extension:
    path = extension_path()
    if path is None:
        return Extension(None, "the compiled extension workbench._C is not built", "make setup "
                         "(or `pip install --no-build-isolation -e .`; check its output for build errors)")
    try:
        module = importlib.import_module("workbench._C")
    except ImportError as exc:  # undefined symbols, missing libraries: almost always a stale build
        problems = stale_build_problems(read_provenance(path), torch.__version__, torch.version.cuda)
        why = "; ".join(p.message for p in problems) or "built against a different torch or toolkit?"
        return Extension(None, f"workbench._C ({path}) failed to import: {exc} ({why})", REBUILD)
    return Extension(module)
