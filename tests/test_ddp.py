"""DistributedDataParallel smoke test: two gloo processes on CPU train the same model in lockstep."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import workbench as wb
from workbench.config import RunConfig, SolverConfig
from workbench.harness.synthetic import synthetic_batch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_two_process_group_env(rank: int, port: int) -> None:
    """A spawned worker's environment for a 2-process gloo group on localhost (the trainer reads it), 1 thread."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def _worker(rank: int, port: int, out: str, checkpoint_activations: str = "none") -> None:
    join_two_process_group_env(rank, port)
    from workbench.engine.trainer import train

    model = wb.ModelConfig.tiny(num_classes=3, attributes={"color": ["r", "g", "b"]},
                                loss=wb.LossConfig(num_points=64))
    cfg = RunConfig(model=model, solver=SolverConfig(base_lr=1e-3, batch_size=2, max_iter=3, warmup_iters=0,
                                                     log_period=1, checkpoint_period=10,
                                                     checkpoint_activations=checkpoint_activations), device="cpu")
    data = synthetic_batch(3, {"color": 3}, batch=4, size=64, seed=rank * 0)  # same data on both ranks
    result = train(cfg, os.path.join(out, "run"), dataset=data, progress=False)
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    torch.save(flat, os.path.join(out, f"params_rank{rank}.pt"))
    dist.destroy_process_group()


# "all": DDP's gradient hooks also fire inside the checkpoint segments' recomputed backward
@pytest.mark.parametrize("checkpoint_activations", ["none", "all"])
def test_two_process_gloo_training_stays_in_sync(tmp_path, checkpoint_activations):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), checkpoint_activations), nprocs=2, join=True)
    p0 = torch.load(tmp_path / "params_rank0.pt", weights_only=True)
    p1 = torch.load(tmp_path / "params_rank1.pt", weights_only=True)
    assert torch.equal(p0, p1)  # gradients were all-reduced: both ranks hold the same weights
    torch.manual_seed(0)
    init = torch.cat([p.detach().flatten() for p in wb.build_model(wb.ModelConfig.tiny(
        num_classes=3, attributes={"color": ["r", "g", "b"]}, loss=wb.LossConfig(num_points=64))).parameters()])
    assert not torch.equal(p0, init)  # and they trained
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # only rank 0 logs
