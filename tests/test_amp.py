"""`solver.amp` on a CPU: bf16 really trains under autocast (it used to run float32 without a word), the
deformable op runs its compiled float32 kernel inside it, and a setting a CPU cannot run is an error before
anything is written."""
import warnings

import pytest
import torch

import workbench as wb
from workbench.config import RunConfig, SolverConfig
from workbench.config_file import ConfigError
from workbench.engine.trainer import autocast_dtype, train
from workbench.harness.synthetic import synthetic_batch
from workbench.model import MultiTaskMask2Former
from workbench.ops import MSDeformAttn, backend_info

ATTRS = {"color": ["r", "g", "b"], "size": ["s", "m", "l"]}


def run_cfg(amp: str) -> RunConfig:
    model = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS, loss=wb.LossConfig(num_points=64))
    solver = SolverConfig(base_lr=1e-3, batch_size=2, max_iter=2, warmup_iters=1, checkpoint_period=2,
                          log_period=1, amp=amp)
    return RunConfig(model=model, solver=solver, device="cpu")


@pytest.mark.parametrize("amp,device,expected", [
    ("off", "cpu", None), ("bf16", "cpu", torch.bfloat16),
    ("off", "cuda", None), ("bf16", "cuda", torch.bfloat16), ("fp16", "cuda", torch.float16)])
def test_autocast_dtype_per_device(amp, device, expected):
    assert autocast_dtype(amp, torch.device(device)) == expected


def test_bf16_on_cpu_runs_the_forward_under_autocast(tmp_path, monkeypatch):
    seen = []
    forward = MultiTaskMask2Former.forward

    def recording_forward(self, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(MultiTaskMask2Former, "forward", recording_forward)
    data = synthetic_batch(3, {"color": 3, "size": 3}, batch=4, size=64, seed=0)
    result = train(run_cfg("bf16"), tmp_path / "run", dataset=data, progress=False)
    assert seen == [(True, torch.bfloat16)] * 2
    assert all(torch.isfinite(torch.tensor(v)) for v in result.last_losses.values())
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast: weights stay float32


def test_fp16_on_cpu_is_an_error_before_anything_is_written(tmp_path):
    data = synthetic_batch(3, {"color": 3, "size": 3}, batch=2, size=64, seed=0)
    with pytest.raises(ConfigError, match=r"solver.amp: 'fp16' cannot run on cpu"):
        train(run_cfg("fp16"), tmp_path / "run", dataset=data, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif("cpu" not in backend_info()["backends"], reason="the compiled CPU kernel is not built")
def test_deformable_attention_under_cpu_autocast_runs_the_compiled_kernel_in_float32(monkeypatch):
    """CPU autocast hands the op a bf16 value (from value_proj): the module widens it for the float32 kernel
    instead of falling back to the reference, and stays within bf16 rounding of the float32 module."""
    import workbench.ops.dispatch as dispatch
    import workbench.ops.module as module

    calls = []
    original = module.ms_deform_attn

    def recording(value, *args, **kwargs):
        calls.append((value.dtype, kwargs.get("backend")))
        return original(value, *args, **kwargs)

    monkeypatch.setattr(module, "ms_deform_attn", recording)
    monkeypatch.setattr(dispatch, "_warned", set())  # the reference fallback warns once per process
    torch.manual_seed(0)
    attn = MSDeformAttn(64, n_levels=2, n_heads=4, n_points=2)
    shapes = torch.tensor([[8, 8], [4, 4]])
    starts = torch.tensor([0, 64])
    query, value = torch.randn(2, 80, 64), torch.randn(2, 80, 64)
    ref = torch.rand(2, 80, 2, 2)
    expected = attn(query, ref, value, shapes, starts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the reference fallback warns
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = attn(query, ref, value, shapes, starts)
    assert calls == [(torch.float32, "auto")] * 2
    assert got.dtype == torch.bfloat16  # output_proj under autocast
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)
    with warnings.catch_warnings():  # a model cast to bf16, no autocast: widened for the kernel, narrowed back
        warnings.simplefilter("error", RuntimeWarning)
        cast = attn.to(torch.bfloat16)(query.bfloat16(), ref.bfloat16(), value.bfloat16(), shapes, starts)
    assert cast.dtype == torch.bfloat16 and calls[-1] == (torch.float32, "auto")
    torch.testing.assert_close(cast.float(), expected, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_instructions_says_torch_emulates_it(tmp_path, monkeypatch, capsys, native):
    import workbench.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: native)
    data = synthetic_batch(3, {"color": 3, "size": 3}, batch=2, size=64, seed=0)
    train(run_cfg("bf16"), tmp_path / "run", dataset=data, progress=False, max_iter=1)
    assert ("torch emulates it" in capsys.readouterr().out) is not native


def test_decoder_attention_runs_in_float32_under_cpu_autocast():
    """Under CPU autocast the decoder's attention kernel gets float32 (autocast would hand it bf16, and torch's
    CPU attention is slower in bf16); outside autocast the dtypes are left alone."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from workbench.model.decoder import attend

    class AttentionDtypes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.dtypes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "scaled_dot_product" in str(func):
                self.dtypes.append(args[0].dtype)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)
    query, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    blocked = torch.rand(2, 5, 7) > 0.7
    expected = attend(mha, query, memory, memory, blocked)
    with AttentionDtypes() as seen, torch.autocast("cpu", dtype=torch.bfloat16):
        got = attend(mha, query, memory, memory, blocked)
    assert seen.dtypes == [torch.float32]
    torch.testing.assert_close(got.float(), expected, rtol=0.05, atol=0.05)
    with AttentionDtypes() as seen:
        attend(mha.to(torch.bfloat16), query.bfloat16(), memory.bfloat16(), memory.bfloat16(), blocked)
    assert seen.dtypes == [torch.bfloat16]
