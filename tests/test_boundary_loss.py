"""Boundary-aware mask loss (model/boundary_loss.py) and its criterion term."""
import pytest
import torch

import workbench as wb
from workbench.harness import synthetic
from workbench.model.boundary_loss import boundary_loss, edge_map
from workbench.model.meta_arch import build_criterion
from workbench.model.outputs import ModelOutput

KERNELS = ["laplacian", "sobel"]


def square_masks(n=2, size=16):
    masks = torch.zeros(n, size, size)
    for i in range(n):
        masks[i, 2 + i : 10 + i, 3 : 12 - i] = 1
    return masks


@pytest.mark.parametrize("kernel", KERNELS)
def test_edge_map_marks_the_outline_only(kernel):
    mask = torch.zeros(1, 12, 12)
    mask[0, 3:9, 3:9] = 1
    edges = edge_map(mask, kernel)[0]
    assert edges.shape == (12, 12) and edges.min() >= 0 and edges.max() <= 1
    assert edges[5, 5] < 1e-6 and edges[0, 0] < 1e-6  # interior and far background
    assert edges[3, 5] == 1 and edges[5, 8] == 1  # on the square's outline
    full = edge_map(torch.ones(1, 8, 8), kernel)  # the image border is not an outline (replicate padding)
    assert full.abs().max() < 1e-5


@pytest.mark.parametrize("kernel", KERNELS)
def test_perfect_prediction_costs_almost_nothing(kernel):
    target = square_masks()
    perfect = boundary_loss(40 * (2 * target - 1), target, num_masks=2, kernel=kernel)
    shifted = boundary_loss(40 * (2 * target.roll(2, dims=-1) - 1), target, num_masks=2, kernel=kernel)
    blurry = boundary_loss(torch.zeros_like(target), target, num_masks=2, kernel=kernel)
    assert 0 <= perfect.item() < 1e-4
    assert shifted.item() > 0.5 and blurry.item() > 0.5


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradients_flow_and_are_finite(kernel):
    target = square_masks()
    logits = torch.randn(target.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                         requires_grad=True)
    loss = boundary_loss(logits, target, num_masks=2, kernel=kernel)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # near the outline the gradient is strongest: the interior of a confident blob gets (almost) none
    flat = torch.full((1, 16, 16), -20.0, dtype=torch.float64, requires_grad=True)
    boundary_loss(flat, square_masks(1), num_masks=1, kernel=kernel).backward()
    assert torch.isfinite(flat.grad).all()


def test_gradcheck_float64():
    target = torch.zeros(1, 6, 6, dtype=torch.float64)
    target[0, 1:4, 2:5] = 1
    logits = torch.randn(1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: boundary_loss(x, target, 1.0), (logits,), fast_mode=True)


@pytest.mark.parametrize("pred_shape,target_shape", [((2, 16, 16), (2, 8, 8)), ((2, 16, 16), (3, 16, 16)),
                                                     ((16, 16), (16, 16))])
def test_shape_mismatch_raises(pred_shape, target_shape):
    with pytest.raises(ValueError, match="same shape"):
        boundary_loss(torch.zeros(pred_shape), torch.zeros(target_shape), num_masks=1)


def test_unknown_kernel_raises():
    with pytest.raises(ValueError, match="laplacian"):
        edge_map(torch.zeros(1, 4, 4), "canny")


def test_no_masks_gives_zero_with_graph():
    logits = torch.zeros(0, 8, 8, requires_grad=True)
    loss = boundary_loss(logits, torch.zeros(0, 8, 8), num_masks=1)
    loss.backward()
    assert loss.item() == 0 and logits.grad is not None


# ---- the criterion term ----
ATTRS = {"color": ["r", "g", "b"], "size": ["s", "m", "l"]}


def cfg(boundary_weight):
    return wb.ModelConfig.tiny(num_classes=4, attributes=ATTRS,
                               loss=wb.LossConfig(num_points=64, boundary_weight=boundary_weight))


def test_weight_zero_is_off():
    criterion = build_criterion(cfg(0.0))
    assert "boundary" not in criterion.losses
    assert not any(k.startswith("loss_boundary") for k in criterion.weight_dict)
    p = synthetic.planted_problem()
    assert not any("boundary" in k for k in criterion(p.outputs, p.targets, generator=torch.Generator()))


def test_weight_on_adds_weighted_key_for_every_stage():
    criterion = build_criterion(cfg(2.5))
    assert criterion.weight_dict["loss_boundary"] == 2.5
    p = synthetic.planted_problem()
    o = p.outputs
    o.aux = [ModelOutput(o.class_logits, o.attribute_logits, o.mask_logits) for _ in range(2)]  # two aux stages
    losses = criterion(p.outputs, p.targets, generator=torch.Generator().manual_seed(0))
    assert {"loss_boundary", "loss_boundary_0", "loss_boundary_1"} <= set(losses)
    weighted = criterion.weigh(losses)
    assert weighted["loss_boundary"] == pytest.approx(2.5 * losses["loss_boundary"].item())


def test_criterion_term_prefers_the_right_masks():
    criterion = build_criterion(cfg(1.0))
    good = synthetic.planted_problem(confidence=6.0)
    bad = synthetic.planted_problem(confidence=6.0)
    for b, (queries, _) in enumerate(bad.assignment):
        bad.outputs.mask_logits[b, queries] = bad.outputs.mask_logits[b, queries].flip(-1).transpose(-1, -2)
    g = criterion(good.outputs, good.targets, generator=torch.Generator().manual_seed(0))["loss_boundary"]
    w = criterion(bad.outputs, bad.targets, generator=torch.Generator().manual_seed(0))["loss_boundary"]
    assert g < w


def test_model_trains_with_the_term():
    torch.manual_seed(0)
    model = wb.build_model(cfg(1.0)).train()
    batch = synthetic.synthetic_batch(4, {"color": 3, "size": 3}, batch=2, size=32, seed=0)
    losses = model(batch, generator=torch.Generator().manual_seed(0))
    assert "loss_boundary" in losses and torch.isfinite(losses["loss_boundary"])
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.mask_embed.parameters())


def test_negative_weight_rejected():
    with pytest.raises(ValueError, match="boundary_weight"):
        wb.LossConfig(boundary_weight=-1.0)
