"""Multi-label attribute groups in the model: config, heads, matcher cost, criterion; single groups unchanged."""
import pytest
import torch
import torch.nn.functional as F

import workbench as wb
from workbench.config import AttributeSpec
from workbench.harness import synthetic
from workbench.harness.runners import DEFAULT_ATTRIBUTES
from workbench.model.criterion import multilabel_loss, sigmoid_focal_loss
from workbench.model.matcher import HungarianMatcher, batch_multilabel_cost
from workbench.model.meta_arch import build_criterion, build_matcher

# Recorded from the code before multi-label groups existed (commit c0ccfd3), on the inputs built below:
# single-label configurations must give these numbers to float rounding (1e-6 relative: the CPU's vector width
# and thread count change the order of the losses' sums; scalar kernels on 3 threads move them by up to 2.3e-7,
# tried with .ci/numerics_variants.py), and exactly these matches.
RECORDED_CRITERION = {"loss_ce": 0.5235028266906738, "loss_attr_color": 1.3051633834838867,
                      "loss_attr_size": 0.7593011260032654, "loss_mask": 0.4971331059932709,
                      "loss_dice": 0.7906904220581055}
RECORDED_INDICES = [([1, 3, 5], [1, 0, 2]), ([2, 4, 7], [1, 0, 2])]
RECORDED_COST = (140.1664581298828, [6.292783737182617, 6.671706199645996, 5.465828895568848])
RECORDED_MODEL = {
    "loss_ce": 2.606358766555786, "loss_attr_color": 1.1639817953109741, "loss_attr_size": 1.1783653497695923,
    "loss_mask": 3.216353416442871, "loss_dice": 4.722080707550049, "loss_ce_0": 2.853367567062378,
    "loss_attr_color_0": 1.1475578546524048, "loss_attr_size_0": 1.378163456916809,
    "loss_mask_0": 3.180009126663208, "loss_dice_0": 4.648232936859131, "loss_ce_1": 2.6709156036376953,
    "loss_attr_color_1": 1.0832189321517944, "loss_attr_size_1": 1.173594355583191,
    "loss_mask_1": 3.2623658180236816, "loss_dice_1": 4.648955345153809}

MULTI = AttributeSpec("pattern", ("stripes", "dots", "outline"), kind="multi")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_single_label_losses_and_matches_equal_recorded():
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=DEFAULT_ATTRIBUTES)
    p = synthetic.planted_problem(num_classes=3, confidence=0.5, seed=3)
    p.targets[0]["attributes"]["color"][1] = -1
    losses = build_criterion(cfg)(p.outputs, p.targets, generator=gen())
    assert {k: v.item() for k, v in losses.items()} == pytest.approx(RECORDED_CRITERION, rel=1e-6)
    matcher = build_matcher(cfg)
    indices = matcher(p.outputs, p.targets, generator=gen())
    assert [(a.tolist(), b.tolist()) for a, b in indices] == RECORDED_INDICES
    coords = torch.rand((1, cfg.loss.num_points, 2), generator=gen(1))
    cost = matcher.cost_matrix(p.outputs, p.targets, 0, coords)
    assert cost.sum().item() == pytest.approx(RECORDED_COST[0], rel=1e-6)
    assert cost[0].tolist() == pytest.approx(RECORDED_COST[1], rel=1e-6)
    torch.manual_seed(0)
    model = wb.build_model(cfg).train()
    batch = synthetic.synthetic_batch(3, {"color": 3, "size": 3}, batch=2, size=64, seed=0)
    assert {k: v.item() for k, v in model(batch, generator=gen()).items()} == pytest.approx(RECORDED_MODEL, rel=1e-6)


def test_spec_kinds_and_head_sizes():
    assert AttributeSpec("color", ("r", "g")).num_logits == 3
    assert MULTI.num_logits == 3 and MULTI.multi
    with pytest.raises(ValueError, match="kind"):
        AttributeSpec("x", ("a",), kind="several")
    with pytest.raises(ValueError, match="loss"):
        AttributeSpec("x", ("a",), kind="multi", loss="hinge")
    with pytest.raises(ValueError, match="multi_label_loss"):
        wb.LossConfig(multi_label_loss="hinge")
    cfg = wb.ModelConfig.tiny(attributes={"color": ["r", "g"], "pattern": {"values": ["a", "b", "c"], "kind": "multi"}})
    assert cfg.attribute("pattern").multi and not cfg.attribute("color").multi
    model = wb.build_model(cfg)
    assert model.decoder.attribute_heads["pattern"].out_features == 3
    assert model.decoder.attribute_heads["color"].out_features == 3


def test_multilabel_cost_is_mean_bce_and_unlabeled_costs_nothing():
    logits = torch.randn(5, 3, generator=gen())
    multi_hot = torch.tensor([[1.0, 0, 1], [0, 0, 0]])
    cost = batch_multilabel_cost(logits, multi_hot, torch.tensor([True, False]))
    assert cost.shape == (5, 2)
    for q in range(5):
        expected = F.binary_cross_entropy_with_logits(logits[q], multi_hot[0])
        assert cost[q, 0].item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.all(cost[:, 1] == 0)


def multi_problem(confidence=6.0, seed=0):
    """A planted problem whose matched queries also predict a multi-hot pattern set."""
    p = synthetic.planted_problem(num_classes=3, num_queries=8, num_targets=3, seed=seed, confidence=confidence)
    g = gen(seed + 1)
    for b, (queries, tgt_idx) in enumerate(p.assignment):
        multi_hot = (torch.rand(3, 3, generator=g) > 0.5).float()
        p.targets[b]["attributes"]["pattern"] = multi_hot
        p.targets[b]["attribute_labeled"] = {"pattern": torch.ones(3, dtype=torch.bool)}
    logits = torch.zeros(2, 8, 3)
    for b, (queries, tgt_idx) in enumerate(p.assignment):
        logits[b, queries] = confidence * (2 * p.targets[b]["attributes"]["pattern"][tgt_idx] - 1)
    p.outputs.attribute_logits["pattern"] = logits
    return p


def multi_cfg(**kw):
    return wb.ModelConfig.tiny(num_classes=3, attributes=[*wb.ModelConfig.tiny(attributes=DEFAULT_ATTRIBUTES).attributes,
                                                          MULTI], **kw)


def test_multilabel_criterion_on_matched_labeled_queries_only():
    cfg = multi_cfg()
    crit = build_criterion(cfg)
    good = crit(multi_problem().outputs, multi_problem().targets, generator=gen())
    bad_p = multi_problem()
    bad_p.outputs.attribute_logits["pattern"] = -bad_p.outputs.attribute_logits["pattern"]
    bad = crit(bad_p.outputs, bad_p.targets, generator=gen())
    assert good["loss_attr_pattern"] < 0.01 < bad["loss_attr_pattern"]
    # unmatched queries are not trained on the multi group
    p = multi_problem()
    unmatched = [q for q in range(8) if q not in p.assignment[0][0].tolist()]
    before = crit(p.outputs, p.targets, generator=gen())["loss_attr_pattern"].item()
    p.outputs.attribute_logits["pattern"][0, unmatched] = 50.0
    assert crit(p.outputs, p.targets, generator=gen())["loss_attr_pattern"].item() == pytest.approx(before)
    # an unlabeled instance adds nothing: flip its logits, the loss does not move
    p = multi_problem()
    p.outputs.attribute_logits["pattern"] = -p.outputs.attribute_logits["pattern"]
    p.targets[0]["attribute_labeled"]["pattern"][:] = False
    p.targets[1]["attribute_labeled"]["pattern"][:] = False
    assert crit(p.outputs, p.targets, generator=gen())["loss_attr_pattern"].item() == 0.0


def test_multilabel_loss_value_bce_and_focal():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0, 0.0]])
    assert multilabel_loss(logits, y, "bce").item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, y).item())
    p = logits.sigmoid()
    p_t = torch.where(y == 1, p, 1 - p)
    alpha_t = torch.where(y == 1, torch.tensor(0.25), torch.tensor(0.75))
    expected = (-alpha_t * (1 - p_t) ** 2 * p_t.log()).mean()
    assert multilabel_loss(logits, y, "focal").item() == pytest.approx(expected.item(), rel=1e-5)
    assert sigmoid_focal_loss(logits, y, -1, 0.0).mean().item() == pytest.approx(multilabel_loss(logits, y).item())


def test_focal_configured_per_group_or_in_loss_config():
    cfg = multi_cfg(loss=wb.LossConfig(num_points=64, multi_label_loss="focal"))
    assert build_criterion(cfg).multi_label_losses == {"pattern": "focal"}
    cfg = multi_cfg()
    cfg = cfg.replace(attributes=[*cfg.attributes[:2], AttributeSpec("pattern", MULTI.values, kind="multi", loss="focal")])
    assert build_criterion(cfg).multi_label_losses == {"pattern": "focal"}
    assert build_criterion(multi_cfg()).multi_label_losses == {"pattern": "bce"}


def test_multilabel_keys_are_weighted_with_aux_copies():
    cfg = multi_cfg()
    torch.manual_seed(0)
    model = wb.build_model(cfg).train()
    batch = synthetic.synthetic_batch(3, {"color": 3, "size": 3}, batch=2, size=64, seed=0)
    for item in batch:
        n = len(item["instances"]["labels"])
        item["instances"]["attributes"]["pattern"] = torch.tensor([[1, 0, 1]] * n)
    losses = model(batch, generator=gen())
    assert {"loss_attr_pattern", "loss_attr_pattern_0", "loss_attr_pattern_1"} <= set(losses)
    assert set(model.criterion.weight_dict) >= set(losses)
    sum(losses.values()).backward()
    assert model.decoder.attribute_heads["pattern"].weight.grad.abs().sum() > 0


def test_bad_multi_hot_targets_name_the_field():
    cfg = multi_cfg()
    p = multi_problem()
    p.targets[0]["attributes"]["pattern"] = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"\['pattern'\].*multi-hot"):
        build_criterion(cfg)(p.outputs, p.targets)
    p = multi_problem()
    p.targets[0]["attributes"]["pattern"][0, 0] = -1
    with pytest.raises(ValueError, match="attribute_labeled"):
        build_criterion(cfg)(p.outputs, p.targets)


def test_matcher_uses_multilabel_cost_and_weight_zero_switches_it_off():
    """Two identical-looking queries differ only in their pattern prediction: the multi cost decides."""
    p = multi_problem(seed=2)
    targets = [p.targets[0]]
    outputs = p.outputs.select(0)
    queries, tgt_idx = p.assignment[0]
    # give query of target 0 and target 1 the same class/mask evidence by swapping only patterns
    on = HungarianMatcher(cost_attributes={"pattern": 5.0}, multi_label=["pattern"], num_points=256)
    off = HungarianMatcher(cost_attributes={"pattern": 0.0}, multi_label=["pattern"], num_points=256)
    coords = torch.rand((1, 256, 2), generator=gen())
    c_on, c_off = on.cost_matrix(outputs, targets, 0, coords), off.cost_matrix(outputs, targets, 0, coords)
    expected = 5.0 * batch_multilabel_cost(outputs.attribute_logits["pattern"][0], targets[0]["attributes"]["pattern"],
                                           torch.ones(3, dtype=torch.bool))
    assert torch.allclose(c_on - c_off, expected, atol=1e-5)
    targets[0]["attribute_labeled"]["pattern"][:] = False
    assert torch.allclose(on.cost_matrix(outputs, targets, 0, coords), c_off)


def test_an_image_without_instances_trains_with_a_multilabel_group():
    """Empty images are first-class (data.keep_empty): with a multi-label group their (0, K) multi-hot rows must
    not break the losses (reshape(0, -1) raised: 'cannot reshape tensor of 0 elements')."""
    import dataclasses

    import numpy as np

    from workbench.data.dataset import multi_hot

    cfg = wb.ModelConfig.tiny(num_classes=3, attributes={"color": ["r", "g", "b"]}, loss=wb.LossConfig(num_points=64))
    cfg = dataclasses.replace(cfg, attributes=cfg.attributes + (MULTI,))
    torch.manual_seed(0)
    model = wb.build_model(cfg).train()
    items = synthetic.synthetic_batch(3, {"color": 3}, batch=2, size=64, seed=3)
    rows, labeled = multi_hot([[0, 2], [1], []], 3)
    items[0]["instances"]["attributes"]["pattern"] = torch.as_tensor(rows)
    items[0]["instances"]["attribute_labeled"] = {"pattern": torch.as_tensor(labeled)}
    empty_rows, empty_labeled = multi_hot([], 3)
    assert empty_rows.shape == (0, 3) and empty_labeled.shape == (0,)
    items[1]["instances"] = {"labels": torch.zeros(0, dtype=torch.long),
                             "masks": torch.zeros(0, 64, 64, dtype=torch.bool),
                             "attributes": {"color": torch.zeros(0, dtype=torch.long),
                                            "pattern": torch.as_tensor(empty_rows)},
                             "attribute_labeled": {"pattern": torch.as_tensor(empty_labeled)}}
    losses = model(items, generator=gen())
    assert all(torch.isfinite(v) for v in losses.values()) and "loss_attr_pattern" in losses
    sum(losses.values()).backward()
    assert np.isfinite(model.decoder.attribute_heads["pattern"].weight.grad.numpy()).all()
