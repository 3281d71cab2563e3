"""Activation checkpointing (solver.checkpoint_activations): the same losses, gradients and BatchNorm statistics
as without, with dropout and stochastic depth on (their draws are replayed), and fewer activations kept."""
import pytest
import torch

import workbench as wb
from workbench.config import RunConfig, SolverConfig
from workbench.config_file import ConfigError, run_config_from_dict
from workbench.engine.trainer import train
from workbench.harness.synthetic import synthetic_batch

ATTRS = {"color": ["r", "g", "b"], "size": ["s", "m", "l"]}


def one_step(cfg, mode: str, items):
    """Losses, gradients, BatchNorm buffers and the bytes autograd kept, after one forward + backward."""
    torch.manual_seed(0)
    model = wb.build_model(cfg).train()
    model.checkpoint_activations(mode)
    kept = []

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(1)  # dropout / stochastic depth draws
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = model(items, generator=torch.Generator().manual_seed(2))
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers() if "running" in n or "num_batches" in n}
    return {k: v.item() for k, v in losses.items()}, grads, buffers, sum(kept)


CASES = [
    ("backbone", {}),
    ("decoder", {}),
    ("all", {}),
    ("all", {"backbone": "mobilenet_v3_large"}),
    ("backbone", {"backbone": "resnet50"}),
    ("backbone", {"backbone": "swin_t", "backbone_drop_path_rate": 0.3, "hidden_dim": 32, "mask_dim": 32}),
]


@pytest.mark.parametrize("mode,model", CASES, ids=[f"{m}-{k.get('backbone', 'tiny')}" for m, k in CASES])
def test_checkpointed_step_matches_the_plain_one(mode, model):
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS, dropout=0.1, loss=wb.LossConfig(num_points=64),
                              **model)
    items = synthetic_batch(3, {"color": 3, "size": 3}, batch=2, size=64, seed=0)
    plain_losses, plain_grads, plain_buffers, plain_kept = one_step(cfg, "none", items)
    losses, grads, buffers, kept = one_step(cfg, mode, items)
    assert losses.keys() == plain_losses.keys()
    for key in losses:
        assert losses[key] == pytest.approx(plain_losses[key], rel=1e-6, abs=1e-7), key
    assert grads.keys() == plain_grads.keys()
    scale = max(float(g.abs().max()) for g in plain_grads.values())
    worst = max(float((grads[k] - plain_grads[k]).abs().max()) for k in grads)
    assert worst <= 1e-5 * scale, f"worst gradient difference {worst} (largest gradient {scale})"
    assert all(torch.equal(buffers[k], plain_buffers[k]) for k in buffers)  # BatchNorm counted the batch once
    assert kept < plain_kept  # and fewer activations were kept for the backward (bench/memory.py: how many)


def test_checkpointing_is_off_in_inference():
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS)
    items = synthetic_batch(3, {"color": 3, "size": 3}, batch=1, size=64, seed=0)
    torch.manual_seed(0)
    model = wb.build_model(cfg).eval()
    model.checkpoint_activations("all")
    with torch.no_grad():
        checkpointed = model(items)[0]
    model.checkpoint_activations("none")
    with torch.no_grad():
        plain = model(items)[0]
    assert torch.equal(checkpointed["scores"], plain["scores"])


def test_the_trainer_checkpoints_from_the_config(tmp_path):
    items = synthetic_batch(3, {"color": 3, "size": 3}, batch=4, size=64, seed=0)
    model = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS, loss=wb.LossConfig(num_points=64))
    states = []
    for mode in ("none", "all"):
        solver = SolverConfig(base_lr=1e-3, batch_size=2, max_iter=2, warmup_iters=0, checkpoint_period=10,
                              checkpoint_activations=mode)
        result = train(RunConfig(model=model, solver=solver, device="cpu"), tmp_path / mode, dataset=items,
                       progress=False)
        states.append(result.model.state_dict())
        assert result.model.backbone.checkpoint_segments == (mode == "all")
    for key in states[0]:
        assert torch.allclose(states[0][key].float(), states[1][key].float(), rtol=1e-4, atol=1e-6), key


def test_an_unknown_mode_names_the_field():
    with pytest.raises(ConfigError, match=r"solver.*checkpoint_activations must be one of"):
        run_config_from_dict({"model": {"preset": "tiny", "num_classes": 2},
                              "solver": {"checkpoint_activations": "encoder"}})


def graph_nodes(tensor: torch.Tensor) -> int:
    """Autograd nodes reachable from `tensor`'s grad_fn: what the forward keeps until the backward."""
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


def test_a_checkpointed_forward_keeps_no_graph_inside_its_segments():
    """The segments record one node each, not one per op: the per-op nodes a non-reentrant checkpoint keeps
    until the backward pin the CPU heap between the freed activations (activation_checkpoint.py)."""
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS, loss=wb.LossConfig(num_points=64))
    items = synthetic_batch(3, {"color": 3, "size": 3}, batch=2, size=64, seed=0)
    nodes = {}
    for mode in ("none", "backbone", "decoder", "all"):
        torch.manual_seed(0)
        model = wb.build_model(cfg).train()
        model.checkpoint_activations(mode)
        nodes[mode] = graph_nodes(sum(model(items, generator=torch.Generator().manual_seed(2)).values()))
    assert nodes["backbone"] < nodes["none"] and nodes["decoder"] < nodes["none"], nodes
    assert nodes["all"] < min(nodes["backbone"], nodes["decoder"]), nodes
