"""Compiled multi-scale deformable attention vs the PyTorch reference vs a brute-force loop.

The extension must be built (CI builds it with `make setup`); these tests fail rather than skip when it is not,
unless the build was switched off on purpose with WORKBENCH_BUILD_OPS=0.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

from workbench.ops import MSDeformAttn, backend_info, ms_deform_attn, ms_deform_attn_reference

if os.environ.get("WORKBENCH_BUILD_OPS") == "0":
    pytest.skip("WORKBENCH_BUILD_OPS=0: the compiled ops were not built on purpose", allow_module_level=True)

NO_GPU = "no CUDA GPU visible (torch.cuda.is_available() is False); CUDA parity runs on a GPU machine"
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)

# (name, level shapes (H, W), N, M, D, Lq, P)
CASES = [
    ("three-levels", [(6, 5), (3, 3), (1, 2)], 2, 2, 8, 5, 3),
    ("odd-channels", [(4, 7), (2, 3)], 2, 3, 5, 4, 2),
    ("wide-head", [(5, 4), (3, 2)], 1, 2, 37, 3, 2),  # one full 32-channel block plus a remainder
    ("one-level", [(7, 6)], 3, 1, 4, 6, 4),
    ("one-point", [(5, 5), (2, 2)], 2, 2, 3, 4, 1),
    ("one-channel", [(3, 4)], 1, 4, 1, 3, 2),
]


def make_inputs(shapes, n, m, d, lq, p, dtype=torch.float64, device="cpu", seed=0):
    """Random inputs with locations spread beyond [0, 1] plus some exactly on the borders of the maps."""
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    areas = spatial_shapes.prod(1)
    level_start_index = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(n, int(areas.sum()), m, d, generator=g, dtype=torch.float64)
    locations = torch.rand(n, lq, m, len(shapes), p, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    flat = locations.view(-1)
    border = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 1.0], dtype=torch.float64)
    flat[: min(len(border), flat.numel())] = border[: flat.numel()]
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g, dtype=torch.float64)
    to = dict(dtype=dtype, device=device)
    return (value.to(**to), spatial_shapes.to(device), level_start_index.to(device), locations.to(**to),
            weights.to(**to))


def brute_force(value, spatial_shapes, level_start_index, locations, weights):
    """Nested loops straight from the definition (grid_sample align_corners=False, zero padding)."""
    value, locations, weights = value.double().cpu(), locations.double().cpu(), weights.double().cpu()
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = locations.shape
    out = torch.zeros(n, lq, m, d, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for h in range(m):
                for lvl in range(num_levels):
                    height, width = (int(v) for v in spatial_shapes[lvl])
                    start = int(level_start_index[lvl])
                    for pt in range(num_points):
                        x = float(locations[b, q, h, lvl, pt, 0]) * width - 0.5
                        y = float(locations[b, q, h, lvl, pt, 1]) * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        for yy, xx, share in ((y0, x0, (1 - (y - y0)) * (1 - (x - x0))),
                                              (y0, x0 + 1, (1 - (y - y0)) * (x - x0)),
                                              (y0 + 1, x0, (y - y0) * (1 - (x - x0))),
                                              (y0 + 1, x0 + 1, (y - y0) * (x - x0))):
                            if 0 <= xx < width and 0 <= yy < height:
                                out[b, q, h] += weights[b, q, h, lvl, pt] * share * value[b, start + yy * width + xx, h]
    return out.view(n, lq, m * d)


def test_extension_is_built_with_openmp():
    info = backend_info()
    assert info["compiled"], f"workbench._C is not usable: {info['reason']}"
    assert "cpu" in info["backends"]
    assert info["cpu_openmp"], "CPU kernels compiled without -fopenmp would run on one thread"
    assert info["build"]["torch"] == torch.__version__


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cpu_forward_matches_reference_and_brute_force(case, dtype, tol):
    _, shapes, n, m, d, lq, p = case
    inputs = make_inputs(shapes, n, m, d, lq, p, dtype)
    expected = brute_force(*inputs)
    kernel = ms_deform_attn(*inputs, backend="cpu")
    reference = ms_deform_attn(*inputs, backend="reference")
    assert kernel.shape == (n, lq, m * d) and kernel.dtype == dtype
    assert (kernel.double() - expected).abs().max() < tol
    assert (reference.double() - expected).abs().max() < tol
    assert expected.abs().max() > 0.1  # the case samples real values, not only padding


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cpu_backward_matches_reference(case, dtype):
    _, shapes, n, m, d, lq, p = case
    inputs = make_inputs(shapes, n, m, d, lq, p, dtype)
    grads = {}
    for backend in ("cpu", "reference"):
        value, spatial_shapes, starts, locations, weights = (t.clone() for t in inputs)
        for t in (value, locations, weights):
            t.requires_grad_(True)
        out = ms_deform_attn(value, spatial_shapes, starts, locations, weights, backend=backend)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out))
        grads[backend] = (value.grad, locations.grad, weights.grad)
    for name, got, want in zip(("value", "sampling_locations", "attention_weights"), grads["cpu"], grads["reference"]):
        if dtype == torch.float64:
            assert (got - want).abs().max() < 1e-10, name
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(want.abs().max())),
                                       msg=lambda m, name=name: f"{name}: {m}")
        assert want.abs().max() > 0, name


def test_cpu_backward_private_chunks_match(monkeypatch):
    """One (batch, head) slice and more threads than slices: queries are split into private grad copies."""
    inputs = make_inputs([(6, 6), (3, 3)], 1, 1, 8, 40, 4, torch.float64)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 4):
            torch.set_num_threads(threads)
            value, locations, weights = (t.clone().requires_grad_(True) for t in (inputs[0], inputs[3], inputs[4]))
            ms_deform_attn(value, inputs[1], inputs[2], locations, weights, backend="cpu").sum().backward()
            results.append((value.grad, locations.grad, weights.grad))
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*results):
        assert (a - b).abs().max() < 1e-12


@pytest.mark.parametrize("wrt", ["value", "sampling_locations", "attention_weights"])
def test_cpu_gradcheck_float64(wrt):
    inputs = make_inputs([(4, 3), (2, 2)], 2, 2, 3, 3, 2, torch.float64, seed=1)
    names = ["value", "spatial_shapes", "level_start_index", "sampling_locations", "attention_weights"]
    index = names.index(wrt)

    def f(x):
        args = list(inputs)
        args[index] = x
        return ms_deform_attn(*args, backend="cpu")

    assert torch.autograd.gradcheck(f, (inputs[index].clone().requires_grad_(True),), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_batch_not_divisible_by_im2col_step(n):
    inputs = make_inputs([(5, 4), (2, 3)], n, 2, 4, 3, 2, torch.float64)
    out = ms_deform_attn(*inputs, backend="cpu", im2col_step=2)
    assert (out - ms_deform_attn_reference(*inputs)).abs().max() < 1e-10


def test_module_uses_compiled_kernel_and_matches_reference(monkeypatch):
    from workbench.ops import dispatch

    calls = []
    original = dispatch.MSDeformAttnFunction.apply
    monkeypatch.setattr(dispatch.MSDeformAttnFunction, "apply", lambda *a: calls.append(a[0]) or original(*a))
    torch.manual_seed(0)
    shapes = torch.tensor([[8, 8], [4, 4], [2, 2]])
    starts = torch.tensor([0, 64, 80])
    query = torch.randn(2, 84, 32, dtype=torch.float64)
    reference_points = torch.rand(2, 84, 3, 2, dtype=torch.float64)
    outputs, grads = {}, {}
    for backend in ("auto", "reference"):
        torch.manual_seed(1)
        module = MSDeformAttn(32, 3, 4, 2, backend=backend).double()
        with torch.no_grad():  # move the weights off the init so attention is not uniform
            module.attention_weights.weight.normal_(0, 0.1)
            module.sampling_offsets.weight.normal_(0, 0.1)
        out = module(query, reference_points, query, shapes, starts)
        out.square().sum().backward()
        outputs[backend] = out
        grads[backend] = module.sampling_offsets.weight.grad
        assert len(calls) == (1 if backend == "auto" else 0)  # auto ran the compiled kernel, reference did not
        calls.clear()
    assert (outputs["auto"] - outputs["reference"]).abs().max() < 1e-10
    assert (grads["auto"] - grads["reference"]).abs().max() < 1e-8
    assert grads["auto"].abs().max() > 0


# --- CUDA: parity on a GPU machine -------------------------------------------------------------------------

@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cuda_matches_reference(case, dtype, tol):
    assert "cuda" in backend_info()["backends"], backend_info()
    _, shapes, n, m, d, lq, p = case
    cpu_inputs = make_inputs(shapes, n, m, d, lq, p, dtype)
    inputs = [t.cuda() for t in cpu_inputs]
    grads = {}
    for backend, args in (("cuda", inputs), ("reference", cpu_inputs)):
        args = [t.clone() for t in args]
        for i in (0, 3, 4):
            args[i].requires_grad_(True)
        out = ms_deform_attn(*args, backend=backend)
        if backend == "cuda":
            assert (out.double().cpu() - brute_force(*cpu_inputs)).abs().max() < tol
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=dtype, device=out.device).view_as(out))
        grads[backend] = [args[i].grad.cpu() for i in (0, 3, 4)]
    for got, want in zip(grads["cuda"], grads["reference"]):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * max(1.0, float(want.abs().max())))


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_forward(dtype):
    inputs = make_inputs([(6, 5), (3, 3)], 2, 2, 16, 5, 2, torch.float64)
    out = ms_deform_attn(*[t.cuda().to(dtype) if t.is_floating_point() else t.cuda() for t in inputs], backend="cuda")
    assert out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), brute_force(*inputs), rtol=2e-2, atol=2e-2)


@pytest.mark.cuda
@needs_gpu
@pytest.mark.parametrize("n", [1, 3, 5])
def test_cuda_batch_not_divisible_by_im2col_step(n):
    inputs = make_inputs([(5, 4), (2, 3)], n, 2, 4, 3, 2, torch.float64)
    out = ms_deform_attn(*[t.cuda() for t in inputs], backend="cuda", im2col_step=2)
    assert (out.cpu() - ms_deform_attn_reference(*inputs)).abs().max() < 1e-10


@pytest.mark.cuda
@needs_gpu
def test_cuda_gradcheck_float64():
    inputs = [t.cuda() for t in make_inputs([(4, 3), (2, 2)], 2, 2, 3, 3, 2, torch.float64, seed=1)]
    value, locations, weights = (inputs[i].clone().requires_grad_(True) for i in (0, 3, 4))
    assert torch.autograd.gradcheck(
        lambda v, loc, w: ms_deform_attn(v, inputs[1], inputs[2], loc, w, backend="cuda"),
        (value, locations, weights), eps=1e-6, atol=1e-7)
