"""Backend selection for multi-scale deformable attention.

`"cpu"` and `"cuda"` are the compiled kernels (workbench._C), `"reference"` the pure-PyTorch version, `"auto"` the
compiled kernel for the tensors' device. When `"auto"` cannot use a compiled kernel it runs the reference and
says so once per reason with a RuntimeWarning -- never silently. Errors raised by a kernel are never caught.
"""
from __future__ import annotations

import warnings

import torch

from workbench.ops.autograd import MSDeformAttnFunction
from workbench.ops.build_info import read_provenance, stale_build_problems
from workbench.ops.extension import load_extension
from workbench.ops.reference import ms_deform_attn_reference

BACKENDS = ("auto", "cpu", "cuda", "reference")
CPU_DTYPES = (torch.float32, torch.float64)
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

_warned: set[str] = set()


def backend_info() -> dict:
    """What is built and usable in this process (also the `compiled_ops` part of `workbench doctor --json`)."""
    ext = load_extension()
    built = read_provenance()
    usable = ["reference"]
    if ext.module is not None:
        usable.insert(0, "cpu")
        if ext.with_cuda and torch.cuda.is_available():
            usable.insert(1, "cuda")
    return {
        "compiled": ext.module is not None,
        "backends": usable,
        "reason": ext.reason,
        "fix": ext.fix,
        "path": None if ext.module is None else ext.module.__file__,
        "with_cuda": ext.with_cuda,
        "cpu_openmp": None if ext.module is None else bool(ext.module.cpu_openmp),
        "build": built,
        "stale": [p.message for p in stale_build_problems(built, torch.__version__, torch.version.cuda)],
    }


def _warn_fallback(reason: str) -> None:
    if reason in _warned:
        return
    _warned.add(reason)
    warnings.warn(
        f"ms_deform_attn: running the slow PyTorch reference backend because {reason}. "
        "Run `workbench doctor` for details; pass backend='reference' to choose it explicitly.",
        RuntimeWarning, stacklevel=3)


def check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    """ValueError naming the argument and what was expected; shared by every backend."""
    def fail(message: str):
        raise ValueError(f"ms_deform_attn: {message}")

    named = {"value": value, "spatial_shapes": spatial_shapes, "level_start_index": level_start_index,
             "sampling_locations": sampling_locations, "attention_weights": attention_weights}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            fail(f"{name} must be a tensor, got {type(t).__name__}")
    if value.dim() != 4:
        fail(f"value must be (N, S, M, D), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        fail(f"sampling_locations must be (N, Lq, M, L, P, 2), got shape {tuple(sampling_locations.shape)}")
    if attention_weights.shape != sampling_locations.shape[:-1]:
        fail(f"attention_weights must be (N, Lq, M, L, P) = {tuple(sampling_locations.shape[:-1])}, "
             f"got {tuple(attention_weights.shape)}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        fail(f"spatial_shapes must be (L, 2) as (H, W), got shape {tuple(spatial_shapes.shape)}")
    n, s, m, _ = value.shape
    num_levels = spatial_shapes.shape[0]
    if level_start_index.shape != (num_levels,):
        fail(f"level_start_index must be ({num_levels},) to match spatial_shapes, got {tuple(level_start_index.shape)}")
    if sampling_locations.shape[0] != n or sampling_locations.shape[2] != m:
        fail(f"sampling_locations {tuple(sampling_locations.shape)} does not match value {tuple(value.shape)} "
             "in batch N or heads M")
    if sampling_locations.shape[3] != num_levels:
        fail(f"sampling_locations has {sampling_locations.shape[3]} levels, spatial_shapes has {num_levels}")
    if spatial_shapes.dtype != torch.long or level_start_index.dtype != torch.long:
        fail(f"spatial_shapes and level_start_index must be int64, got {spatial_shapes.dtype} and "
             f"{level_start_index.dtype}")
    if not value.is_floating_point():
        fail(f"value must be floating point, got {value.dtype}")
    for name in ("sampling_locations", "attention_weights"):
        if named[name].dtype != value.dtype:
            fail(f"{name} is {named[name].dtype} but value is {value.dtype}; they must share a dtype")
    for name, t in named.items():
        if t.device != value.device:
            fail(f"{name} is on {t.device} but value is on {value.device}")
        if not t.is_contiguous():
            fail(f"{name} must be contiguous (call .contiguous())")
    if spatial_shapes.device.type == "cpu":  # on a GPU this would synchronise every call
        areas = spatial_shapes.prod(1)
        if bool((spatial_shapes <= 0).any()):
            fail(f"spatial_shapes must be positive, got {spatial_shapes.tolist()}")
        starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
        if not torch.equal(starts, level_start_index):
            fail(f"level_start_index {level_start_index.tolist()} does not match spatial_shapes "
                 f"(expected {starts.tolist()})")
        if int(areas.sum()) != s:
            fail(f"value has {s} positions but spatial_shapes {spatial_shapes.tolist()} sum to {int(areas.sum())}")


def _compiled_or_reason(backend: str, value: torch.Tensor):
    """(extension, None) when `backend` can run on `value`, else (None, reason)."""
    ext = load_extension()
    if ext.module is None:
        return None, ext.reason
    if backend == "cpu":
        if value.device.type != "cpu":
            return None, f"the cpu backend got tensors on {value.device}"
        if value.dtype not in CPU_DTYPES:
            return None, f"the CPU kernel supports float32/float64, got {value.dtype}"
    else:
        if value.device.type != "cuda":
            return None, f"the cuda backend got tensors on {value.device}"
        if not ext.with_cuda:
            return None, "workbench._C was built without CUDA kernels (rebuild with nvcc available)"
        if value.dtype not in CUDA_DTYPES:
            return None, f"the CUDA kernel does not support {value.dtype}"
    return ext.module, None


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
    *,
    im2col_step: int = 64,
) -> torch.Tensor:
    """value (N, S, M, D), spatial_shapes (L, 2) int64 as (H, W), level_start_index (L,) int64,
    sampling_locations (N, Lq, M, L, P, 2) as (x, y) in [0, 1], attention_weights (N, Lq, M, L, P)
    -> (N, Lq, M * D). See `ms_deform_attn_reference` for the sampling convention.

    im2col_step: batch slice per CUDA launch (any batch size works; the CPU kernel ignores it).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if not isinstance(im2col_step, int) or im2col_step < 1:
        raise ValueError(f"im2col_step must be a positive int, got {im2col_step!r}")
    check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    args = (value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    if backend == "reference":
        return ms_deform_attn_reference(*args)
    if backend == "auto":
        kind = "cuda" if value.device.type == "cuda" else "cpu"
        ext, reason = _compiled_or_reason(kind, value)
        if ext is None:
            _warn_fallback(reason)
            return ms_deform_attn_reference(*args)
    else:
        ext, reason = _compiled_or_reason(backend, value)
        if ext is None:
            raise RuntimeError(f"ms_deform_attn: backend={backend!r} is unavailable: {reason}")
    return MSDeformAttnFunction.apply(ext, *args, im2col_step)
