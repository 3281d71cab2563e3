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
    import workbench.ops.module as module

    calls = []
    original = module.ms_deform_attn

    def recording(value, *args, **kwargs):
        calls.append((value.dtype, kwargs.get("backend")))
        return original(value, *args, **kwargs)

    monkeypatch.setattr(module, "ms_deform_attn", recording)
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


def test_bf16_on_a_cpu_without_native_bf16_says_torch_emulates_it(monkeypatch, capsys):
    import workbench.engine.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert "torch emulates it" in capsys.readouterr().out
    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: True)
    autocast_dtype("bf16", torch.device("cpu"))
    assert capsys.readouterr().out == ""
