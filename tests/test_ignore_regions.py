"""Ignore regions in the losses (issue 25's contract: a batch item's optional `ignore` (H, W) bool).

What the model predicts on ignored pixels must not matter: not for the matching, not for which points are
sampled, not for any loss or gradient. Predictions elsewhere must. Without an ignore region the losses are
those of before (tests/test_criterion.py's recorded numbers, tests/test_speed_equality.py).
"""
import pytest
import torch

import workbench as wb
from workbench.harness.synthetic import random_targets
from workbench.model.matcher import HungarianMatcher
from workbench.model.meta_arch import build_criterion
from workbench.model.outputs import ModelOutput

ATTRS = {"color": 3, "size": 3}
SIZE, STRIDE = 64, 4  # targets at the padded input size, mask logits at stride 4


def problem(seed=0, batch=2, num_queries=10):
    g = torch.Generator().manual_seed(seed)
    h = SIZE // STRIDE

    def stage():
        return ModelOutput(torch.randn(batch, num_queries, 4, generator=g),
                           {n: torch.randn(batch, num_queries, k + 1, generator=g) for n, k in ATTRS.items()},
                           (3 * torch.randn(batch, num_queries, h, h, generator=g)).requires_grad_())

    final, aux = stage(), [stage(), stage()]
    final.aux = aux
    targets = [random_targets(4, 3, ATTRS, SIZE, SIZE, g) for _ in range(batch)]
    ignore = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    ignore[:24, :] = True  # image 0: the top 24 rows (6 rows of logit cells); image 1 has none
    targets[0]["ignore"] = ignore
    cells = torch.zeros(batch, h, h, dtype=torch.bool)
    cells[0, :6] = True
    return final, targets, cells


def with_mask_logits(outputs, change):
    """A copy of the outputs (every stage) whose mask logits are `change(logits)`, as fresh leaves."""
    stages = [outputs] + outputs.aux
    new = [ModelOutput(s.class_logits, s.attribute_logits, change(s.mask_logits.detach()).requires_grad_())
           for s in stages]
    new[0].aux = new[1:]
    return new[0]


def losses_and_grads(criterion, outputs, targets):
    losses = criterion.weigh(criterion(outputs, targets, generator=torch.Generator().manual_seed(1)))
    sum(losses.values()).backward()
    return losses, [s.mask_logits.grad for s in [outputs] + outputs.aux]


@pytest.fixture(params=[0.0, 2.0], ids=["no_boundary", "boundary"])
def criterion(request):
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes={"color": ["r", "g", "b"], "size": ["s", "m", "l"]},
                              loss=wb.LossConfig(num_points=200, boundary_weight=request.param))
    return build_criterion(cfg)


@pytest.mark.parametrize("seed", range(3))
def test_logits_on_ignored_pixels_change_no_loss_and_no_gradient(criterion, seed):
    outputs, targets, cells = problem(seed)
    g = torch.Generator().manual_seed(100 + seed)
    base, base_grads = losses_and_grads(criterion, with_mask_logits(outputs, lambda m: m.clone()), targets)

    def on_ignored(m):  # wild values on the ignored cells, every query, every stage
        return torch.where(cells[:, None], 30 * torch.randn(m.shape, generator=g), m)

    moved, moved_grads = losses_and_grads(criterion, with_mask_logits(outputs, on_ignored), targets)
    assert base.keys() == moved.keys()
    for key in base:
        assert torch.equal(base[key], moved[key]), key
    for before, after in zip(base_grads, moved_grads):
        assert torch.equal(before, after)
        assert not after[cells[:, None].expand_as(after)].any()  # nothing flows into ignored cells
        assert after.abs().sum() > 0


def test_logits_elsewhere_do_change_the_mask_losses(criterion):
    outputs, targets, cells = problem(0)
    base, _ = losses_and_grads(criterion, with_mask_logits(outputs, lambda m: m.clone()), targets)
    elsewhere = ~cells[:, None]
    elsewhere[1] = False  # image 0's cells below its ignore region only
    moved, _ = losses_and_grads(criterion, with_mask_logits(outputs, lambda m: torch.where(elsewhere, -m, m)),
                                targets)
    for key in ("loss_mask", "loss_dice", "loss_mask_0", "loss_dice_1"):
        assert not torch.equal(base[key], moved[key]), key


def test_matching_ignores_the_ignored_pixels():
    outputs, targets, cells = problem(0)
    matcher = HungarianMatcher(num_points=300)
    g = torch.Generator().manual_seed(5)
    moved = with_mask_logits(outputs, lambda m: torch.where(cells[:, None], 30 * torch.randn(m.shape, generator=g), m))
    for a, b in zip(matcher(outputs, targets, torch.Generator().manual_seed(1)),
                    matcher(moved, targets, torch.Generator().manual_seed(1))):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    coords = torch.rand(2, 300, 2, generator=g)
    costs = [matcher.cost_matrices(o, targets, coords) for o in (outputs, moved)]
    assert torch.equal(costs[0], costs[1])


def test_a_fully_ignored_image_has_finite_costs_and_zero_mask_losses(criterion):
    outputs, targets, _ = problem(0)
    targets[0]["ignore"] = torch.ones(SIZE, SIZE, dtype=torch.bool)
    cost = criterion.matcher.cost_matrices(outputs, targets, torch.rand(2, 50, 2))
    assert torch.isfinite(cost).all()
    only = [targets[0], {**targets[1], "labels": targets[1]["labels"][:0], "masks": targets[1]["masks"][:0],
                         "attributes": {k: v[:0] for k, v in targets[1]["attributes"].items()}}]
    losses = criterion(outputs, only, generator=torch.Generator().manual_seed(0))
    assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0 and torch.isfinite(losses["loss_ce"])


def test_model_targets_take_the_items_ignore_and_the_instances():
    model = wb.build_model(wb.ModelConfig.tiny(num_classes=3))
    on_item = torch.zeros(40, 40, dtype=torch.bool)
    on_item[:5] = True
    on_instances = torch.zeros(40, 40, dtype=torch.bool)
    on_instances[:, :3] = True
    inst = {"labels": torch.zeros(1, dtype=torch.long), "masks": torch.zeros(1, 40, 40, dtype=torch.bool)}
    batch = [{"image": torch.zeros(3, 40, 40, dtype=torch.uint8), "ignore": on_item, "instances": inst},
             {"image": torch.zeros(3, 40, 40, dtype=torch.uint8), "ignore": on_item,
              "instances": {**inst, "ignore": on_instances}},
             {"image": torch.zeros(3, 40, 40, dtype=torch.uint8), "instances": inst}]
    first, both, none = model.targets(batch, (64, 64))
    assert first["ignore"].shape == (64, 64) and int(first["ignore"].sum()) == 5 * 40
    assert int(both["ignore"].sum()) == 5 * 40 + 3 * 35 and "ignore" not in none
