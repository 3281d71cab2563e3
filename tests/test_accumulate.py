"""Gradient accumulation (solver.accumulate): N micro-batches give the gradients of one batch N times the size
(every loss term normalised over the effective batch, over processes too), GradScaler steps once per effective
batch, DDP syncs only on the last micro-batch, resume lands on optimizer steps only."""
import contextlib
import functools
import json
import operator
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import workbench as wb
import workbench.model.matcher as matcher_module
import workbench.model.points as points_module
from workbench.config import AttributeSpec, RunConfig, SolverConfig
from workbench.config_file import ConfigError, run_config_from_dict
from workbench.engine.accumulate import accumulate_gradients, effective_batch
from workbench.engine.trainer import DistInfo, EpochBatches, train
from workbench.harness.synthetic import synthetic_batch
from workbench.model.criterion import EffectiveBatch

from test_ddp import _free_port, join_two_process_group_env  # noqa: E402  (the 2-process gloo set-up)

ATTRS = (AttributeSpec("color", ("r", "g", "b")), AttributeSpec("size", ("s", "m", "l")),
         AttributeSpec("pattern", ("dots", "stripes"), kind="multi"))


def model_cfg(**loss):
    return wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS, loss=wb.LossConfig(num_points=64, **loss))


def varied_images():
    """Four images with 1, 2, 4 and 3 instances (so every term's per-image denominators differ), one colour and
    one pattern left unlabeled (-1)."""
    items = []
    for seed, n in enumerate((1, 2, 4, 3)):
        items += synthetic_batch(3, {"color": 3, "size": 3, "pattern": 2}, batch=1, size=64, num_targets=n,
                                 seed=seed)
    items[2]["instances"]["attributes"]["color"][1] = -1
    items[3]["instances"]["attributes"]["pattern"][0] = -1
    return items


@pytest.fixture
def fixed_points(monkeypatch):
    """Point sampling draws the same points for every mask and image, so a micro-batch samples what the big
    batch samples for its images (random draws depend on the batch's order otherwise)."""
    def same_points_per_row(shape, *, device, dtype=torch.float32, generator=None):
        row = torch.rand((1, *shape[1:]), generator=torch.Generator().manual_seed(7), dtype=dtype)
        return row.repeat(shape[0], *([1] * (len(shape) - 1))).to(device)

    monkeypatch.setattr(points_module, "rand", same_points_per_row)
    monkeypatch.setattr(matcher_module, "rand", same_points_per_row)


def frozen_norm_model(cfg):
    """Training mode with BatchNorm in eval mode (frozen statistics) and no dropout: the batch's split into
    micro-batches is then the only difference between two runs."""
    torch.manual_seed(0)
    model = wb.build_model(cfg).train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    return model


def gradients(cfg, micro_batches, effective, scaler=None):
    model = frozen_norm_model(cfg)
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)

    def fail(losses, micro):
        raise AssertionError(f"non-finite loss {losses}")

    values = accumulate_gradients(model, micro_batches, torch.Generator().manual_seed(0),
                                  effective(model, micro_batches), scaler, contextlib.nullcontext, fail)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, values, model


def worst(a: dict, b: dict) -> tuple[float, float]:
    """Largest absolute difference over all gradients, and the largest gradient (for scale)."""
    assert a.keys() == b.keys()
    return (max(float((a[k] - b[k]).abs().max()) for k in a), max(float(a[k].abs().max()) for k in a))


def test_four_micro_batches_of_one_give_the_gradients_of_one_batch_of_four(fixed_points):
    cfg, items = model_cfg(), varied_images()
    single = lambda model, micro: effective_batch(model, micro)  # noqa: E731
    big, big_loss, _ = gradients(cfg, [items], single)
    small, small_loss, _ = gradients(cfg, [[item] for item in items], single)
    difference, scale = worst(big, small)
    print(f"worst gradient difference 4x1 vs 1x4: {difference:.3g} (largest gradient {scale:.3g})")
    assert scale > 1e-3 and difference <= 1e-5 * scale
    assert small_loss.keys() == big_loss.keys()
    for key in big_loss:  # the logged loss of the step is the big batch's too
        assert small_loss[key] == pytest.approx(big_loss[key], rel=1e-5, abs=1e-7), key
    # Normalised per micro-batch instead (each its own mean), the gradients are not the big batch's:
    alone, _, _ = gradients(cfg, [[item] for item in items], lambda model, micro: None)
    assert worst(big, alone)[0] > 1e-3 * scale


def test_two_processes_of_two_micro_batches_average_to_the_batch_of_four(fixed_points):
    """DDP's mean over processes of each process's accumulated gradients, simulated: the totals are summed over
    both processes' micro-batches (what the trainer's all_reduce gives)."""
    cfg, items = model_cfg(), varied_images()
    big, _, model = gradients(cfg, [items], lambda model, micro: effective_batch(model, micro))
    ranks = [[[items[0]], [items[2]]], [[items[1]], [items[3]]]]  # rank r: every world-th item of each micro-batch
    totals = functools.reduce(operator.add, [model.loss_totals(micro) for rank in ranks for micro in rank])
    per_rank = [gradients(cfg, rank, lambda model, micro: EffectiveBatch(totals, processes=2))[0] for rank in ranks]
    mean = {k: (per_rank[0][k] + per_rank[1][k]) / 2 for k in big}
    difference, scale = worst(big, mean)
    assert difference <= 1e-5 * scale


def test_a_grad_scaler_scales_each_micro_batch_and_unscales_once(fixed_points):
    cfg, items = model_cfg(), varied_images()
    single = lambda model, micro: effective_batch(model, micro)  # noqa: E731
    plain, _, _ = gradients(cfg, [[item] for item in items], single)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    scaled, _, model = gradients(cfg, [[item] for item in items], single, scaler)
    assert worst(plain, scaled)[0] > 1.0  # the gradients hold the scaled loss's
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler.unscale_(optimizer)
    unscaled = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    difference, scale = worst(plain, unscaled)
    assert difference <= 1e-5 * scale


def test_epoch_batches_cut_the_effective_batch_into_micro_batches():
    four = EpochBatches(12, 4, seed=3, dist_info=DistInfo())
    accumulated = EpochBatches(12, 1, seed=3, dist_info=DistInfo(), accumulate=4)
    assert accumulated.steps_per_epoch == four.steps_per_epoch == 3
    for step in range(6):
        assert [i for micro in accumulated.micro_batches(step) for i in micro] == four.indices(step)
        assert all(len(micro) == 1 for micro in accumulated.micro_batches(step))
    ranks = [EpochBatches(12, 2, seed=3, dist_info=DistInfo(rank=r, world_size=2), accumulate=2) for r in (0, 1)]
    assert sorted(ranks[0].indices(1) + ranks[1].indices(1)) == sorted(four.indices(1))
    with pytest.raises(ConfigError, match=r"fewer than one effective batch of solver.batch_size 4 x solver.accumulate"):
        EpochBatches(12, 4, seed=3, dist_info=DistInfo(), accumulate=4)


def run_cfg(**solver):
    args = dict(base_lr=1e-3, batch_size=1, accumulate=2, max_iter=4, warmup_iters=2, checkpoint_period=2,
                log_period=1)
    args.update(solver)
    return RunConfig(model=model_cfg(), solver=SolverConfig(**args), device="cpu")


def test_steps_are_optimizer_updates_and_the_lr_uses_the_effective_batch(tmp_path, monkeypatch, capsys):
    forwards, scaler_steps = [], []
    forward, step = wb.model.MultiTaskMask2Former.forward, torch.amp.GradScaler.step

    def counting_forward(self, batch, *args, **kwargs):
        forwards.append(len(batch))
        return forward(self, batch, *args, **kwargs)

    def counting_step(self, *args, **kwargs):
        scaler_steps.append(1)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(wb.model.MultiTaskMask2Former, "forward", counting_forward)
    monkeypatch.setattr(torch.amp.GradScaler, "step", counting_step)
    result = train(run_cfg(batch_size=2, amp="bf16"), tmp_path / "run", dataset=synthetic_batch(
        3, {"color": 3, "size": 3, "pattern": 2}, batch=8, size=64, seed=0), progress=False)
    assert forwards == [2] * 8 and len(scaler_steps) == 4  # 2 micro-batches per optimizer step
    assert result.lr == pytest.approx(1e-3 * 4 / 16)
    out = capsys.readouterr().out
    assert "effective batch 4 = solver.batch_size 2 (2 per process) x solver.accumulate 2" in out
    assert "x batch 4 / reference 16" in out
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]


def test_resume_with_accumulation_is_bit_for_bit_and_refuses_another_accumulation(tmp_path):
    data = synthetic_batch(3, {"color": 3, "size": 3, "pattern": 2}, batch=6, size=64, seed=0)
    straight = train(run_cfg(), tmp_path / "a", dataset=data, progress=False).model.state_dict()
    train(run_cfg(), tmp_path / "b", dataset=data, progress=False, max_iter=2)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["step"] == 2  # optimizer steps, not batches
    with pytest.raises(ConfigError, match=r"trained with solver.accumulate 2, the config says 3"):
        train(run_cfg(accumulate=3), tmp_path / "b", dataset=data, progress=False, resume=True)
    resumed = train(run_cfg(), tmp_path / "b", dataset=data, progress=False, resume=True).model.state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


@pytest.mark.parametrize("value,says", [(0, "integer >= 1"), (1.5, "expected int"), ("2", "expected int")])
def test_accumulate_must_be_a_positive_integer(value, says):
    with pytest.raises(ConfigError, match=rf"solver.*{says}"):
        run_config_from_dict({"model": {"preset": "tiny", "num_classes": 2}, "solver": {"accumulate": value}})


def _worker(rank: int, port: int, out: str) -> None:
    """Two gloo processes, accumulate 2: record the order of forwards and gradient all-reduces."""
    join_two_process_group_env(rank, port)
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    events = []
    ddp = nn.parallel.DistributedDataParallel

    class RecordingDDP(ddp):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

            def hook(state, bucket):
                events.append("sync")
                return allreduce_hook(None, bucket)

            self.register_comm_hook(None, hook)

        def forward(self, *args, **kwargs):
            events.append("forward")
            return super().forward(*args, **kwargs)

    nn.parallel.DistributedDataParallel = RecordingDDP
    try:
        cfg = run_cfg(batch_size=2, max_iter=2, checkpoint_period=10)
        data = synthetic_batch(3, {"color": 3, "size": 3, "pattern": 2}, batch=8, size=64, seed=0)
        result = train(cfg, os.path.join(out, "run"), dataset=data, progress=False)
    finally:
        nn.parallel.DistributedDataParallel = ddp
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    torch.save({"params": flat, "events": events}, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_syncs_gradients_on_the_last_micro_batch_only(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    events = ranks[0]["events"]
    # per step: forward, forward, then the all-reduces (one per gradient bucket); none between the forwards
    assert events[:2] == ["forward", "forward"] and events[2] == "sync"
    steps = " ".join(events).replace("sync ", "").replace(" sync", "").split()
    assert steps == ["forward"] * 4
    second = events.index("forward", 3)
    assert events[second + 1] == "forward" and set(events[2:second]) == {"sync"}
