"""Backend choice, the one loud fallback warning, input checks, and that kernel errors are never swallowed."""
from __future__ import annotations

import os
import warnings

import pytest
import torch

if os.environ.get("WORKBENCH_BUILD_OPS") == "0":
    pytest.skip("WORKBENCH_BUILD_OPS=0: the compiled ops were not built on purpose", allow_module_level=True)

import workbench._C as compiled  # noqa: E402  (a missing build must fail here, loudly)
from workbench.ops import dispatch, ms_deform_attn  # noqa: E402
from workbench.ops.extension import Extension


def inputs(dtype=torch.float32, n=2, lq=3, m=2, d=4, p=2):
    shapes = torch.tensor([[4, 4], [2, 2]])
    starts = torch.tensor([0, 16])
    return [torch.randn(n, 20, m, d, dtype=dtype), shapes, starts,
            torch.rand(n, lq, m, 2, p, 2, dtype=dtype), torch.rand(n, lq, m, 2, p, dtype=dtype)]


@pytest.fixture
def fresh_warnings():
    dispatch._warned.clear()
    yield
    dispatch._warned.clear()


@pytest.fixture
def missing_extension(monkeypatch, fresh_warnings):
    fake = Extension(None, "the compiled extension workbench._C is not built (test)", "make setup")
    monkeypatch.setattr(dispatch, "load_extension", lambda: fake)
    return fake


def test_fallback_warns_once_naming_reason_and_backend(missing_extension):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = ms_deform_attn(*inputs())
        ms_deform_attn(*inputs())
        ms_deform_attn(*inputs())
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning) and "ms_deform_attn" in str(w.message)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "not built (test)" in message and "reference" in message
    assert first.shape == (2, 3, 8)


def test_explicit_compiled_backend_raises_when_missing(missing_extension):
    with pytest.raises(RuntimeError, match="backend='cpu' is unavailable: the compiled extension"):
        ms_deform_attn(*inputs(), backend="cpu")


def test_auto_uses_compiled_kernel_without_warning(fresh_warnings):
    args = [t.requires_grad_(True) if t.is_floating_point() else t for t in inputs()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ms_deform_attn(*args)
    assert out.grad_fn.name() == "MSDeformAttnFunctionBackward"


def test_half_on_cpu_falls_back_with_dtype_reason(fresh_warnings):
    with pytest.warns(RuntimeWarning, match="float32/float64, got torch.float16"):
        try:
            ms_deform_attn(*inputs(torch.float16))
        except RuntimeError as exc:  # grid_sample may not support half on CPU; the warning came first
            assert "Half" in str(exc) or "half" in str(exc)


def test_kernel_errors_propagate(monkeypatch, fresh_warnings):
    class Broken:
        with_cuda = False

        @staticmethod
        def ms_deform_attn_forward(*args):
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")

    monkeypatch.setattr(dispatch, "load_extension", lambda: Extension(Broken))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        ms_deform_attn(*inputs())


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        ms_deform_attn(*inputs(), backend="gpu")


def _bad_cases():
    def mutate(index, fn):
        def build():
            args = inputs()
            args[index] = fn(args[index])
            return args
        return build

    return {
        "value-3d": (mutate(0, lambda v: v[0]), "value must be \\(N, S, M, D\\)"),
        "locations-last-dim": (mutate(3, lambda loc: loc[..., :1].contiguous()), "sampling_locations must be"),
        "weights-shape": (mutate(4, lambda w: w[:, :, :, :, :1].contiguous()), "attention_weights must be"),
        "levels-mismatch": (mutate(1, lambda s: s[:1]), "level_start_index must be \\(1,\\)"),
        "starts-wrong": (mutate(2, lambda s: torch.tensor([0, 15])), "does not match spatial_shapes"),
        "positions-wrong": (mutate(1, lambda s: torch.tensor([[4, 4], [2, 3]])), "20 positions but spatial_shapes"),
        "shapes-int32": (mutate(1, lambda s: s.int()), "must be int64"),
        "dtype-mismatch": (mutate(3, lambda loc: loc.double()), "must share a dtype"),
        "int-value": (mutate(0, lambda v: v.long()), "must be floating point"),
        "non-contiguous": (mutate(0, lambda v: v.transpose(2, 3).contiguous().transpose(2, 3)), "contiguous"),
        "batch-mismatch": (mutate(0, lambda v: v[:1].contiguous()), "batch N or heads M"),
    }


@pytest.mark.parametrize("backend", ["cpu", "reference", "auto"])
@pytest.mark.parametrize("name", list(_bad_cases()))
def test_bad_inputs_raise_clear_value_error(name, backend):
    build, pattern = _bad_cases()[name]
    with pytest.raises(ValueError, match=pattern):
        ms_deform_attn(*build(), backend=backend)


@pytest.mark.parametrize("name,pattern", [
    ("non-contiguous", "must be contiguous"),
    ("starts-wrong", "level_start_index\\[1\\] is 15, expected 16"),
    ("shapes-int32", "must be int64"),
    ("dtype-mismatch", "must share a dtype"),
    ("levels-mismatch", "does not match value \\[2, 20, 2, 4\\] and 1 levels"),
])
def test_extension_checks_its_own_inputs(name, pattern):
    """Called directly (bypassing Python's checks) the extension still refuses with a RuntimeError."""
    build, _ = _bad_cases()[name]
    with pytest.raises(RuntimeError, match=pattern):
        compiled.ms_deform_attn_forward(*build(), 64)


def test_extension_rejects_bad_im2col_step():
    with pytest.raises(RuntimeError, match="im2col_step must be >= 1"):
        compiled.ms_deform_attn_forward(*inputs(), 0)
    with pytest.raises(ValueError, match="im2col_step"):
        ms_deform_attn(*inputs(), im2col_step=0)
