"""One place that turns a device string into a torch.device, honouring an explicit GPU index.

Our users' `CUDA_VISIBLE_DEVICES=2,3 python train.py` and `MODEL.DEVICE` did not pick the GPU they asked for. Here
"cuda:1" means the second *visible* GPU, always, and asking for one that does not exist is an error that says
what is visible -- never a silent fall back to another device.
"""
from __future__ import annotations

import os
import re

import torch

from workbench.config import DEVICE_SPEC
from workbench.errors import UsageError

EXPECTED = "expected 'auto', 'cpu', 'cuda' or 'cuda:N'"


class DeviceError(UsageError, RuntimeError):
    """A device that is not there (no GPU, an index past the visible ones): exit 2, the message says what is
    visible. A RuntimeError too, as torch's own device errors."""


def device_arg(text: str) -> str:
    """argparse `type=` for --device: a spelling resolve_device does not read is a usage error (exit 2) at
    parse time, before any file is read or written."""
    import argparse

    if DEVICE_SPEC.fullmatch(text.strip().lower()) is None:
        raise argparse.ArgumentTypeError(f"{text!r}: {EXPECTED}")
    return text


_VISIBLE = ("CUDA_VISIBLE_DEVICES renumbers GPUs and must be set before the process starts "
            "(`export CUDA_VISIBLE_DEVICES=2,3` in the shell or `CUDA_VISIBLE_DEVICES=2,3 workbench ...`); "
            "setting it from inside Python after torch has touched CUDA has no effect")


def _visible() -> str:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "unset (all GPUs visible)" if value is None else repr(value)


def resolve_device(spec: str | torch.device | None = None) -> torch.device:
    """None or "auto" -> the current CUDA device if one is visible, else CPU; "cpu"; "cuda" -> the current
    CUDA device; "cuda:N" -> visible GPU N. Raises UsageError (a ValueError) for an unknown spec and
    DeviceError (a RuntimeError) for a GPU that is not there, naming CUDA_VISIBLE_DEVICES."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = "auto" if spec is None else spec.strip().lower()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise UsageError(f"device {spec!r}: {EXPECTED}")
    if not torch.cuda.is_available():
        why = ("torch is a CPU-only build" if torch.version.cuda is None
               else f"torch {torch.__version__} sees no GPU (CUDA_VISIBLE_DEVICES={_visible()}; driver loaded?)")
        raise DeviceError(f"device {spec!r} requested but CUDA is unavailable: {why}. "
                           "Use --device cpu, or run `workbench doctor`.")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if match.group(1) is None else int(match.group(1))
    if index >= count:
        raise DeviceError(f"device {spec!r} requested but only {count} GPU(s) are visible (indices 0..{count - 1}; "
                           f"CUDA_VISIBLE_DEVICES={_visible()}). {_VISIBLE}.")
    return torch.device("cuda", index)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX): then `solver.amp: bf16`
    roughly halves the products' time; without them torch emulates bf16 and it is slower than float32. (Not
    oneDNN's `_is_mkldnn_bf16_supported`, which also says yes for any AVX-512 CPU, where bf16 is emulated.)
    The probes are private torch functions, so a torch without them counts as "no"."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False
