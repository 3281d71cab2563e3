import pytest
import torch

import workbench as wb
from workbench.harness import synthetic
from workbench.model.criterion import SetCriterion, weighted_cross_entropy
from workbench.model.matcher import HungarianMatcher
from workbench.model.meta_arch import build_criterion
from workbench.model.outputs import ModelOutput


def empty_targets(n, size=32):
    return [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, size, size, dtype=torch.bool),
             "attributes": {"color": torch.zeros(0, dtype=torch.long), "size": torch.zeros(0, dtype=torch.long)}}
            for _ in range(n)]


def planted_problem(**kw):
    return synthetic.planted_problem(num_classes=3, **kw)


def gen():
    return torch.Generator().manual_seed(0)


def test_empty_targets_zero_mask_and_dice_finite_class(tiny_cfg):
    p = planted_problem()
    losses = build_criterion(tiny_cfg)(p.outputs, empty_targets(2), generator=gen())
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    assert torch.isfinite(losses["loss_ce"]) and losses["loss_ce"] > 0
    for name in ("color", "size"):  # unmatched queries are pushed to no-object: finite, non-zero
        assert torch.isfinite(losses[f"loss_attr_{name}"]) and losses[f"loss_attr_{name}"] > 0


def test_correct_predictions_score_lower_than_wrong(tiny_cfg):
    good = planted_problem(confidence=6.0)
    bad = planted_problem(confidence=0.3)
    c = build_criterion(tiny_cfg)
    lg, lb = c(good.outputs, good.targets, generator=gen()), c(bad.outputs, bad.targets, generator=gen())
    assert set(lg) == {"loss_ce", "loss_attr_color", "loss_attr_size", "loss_mask", "loss_dice"}
    assert all(lg[k] < lb[k] for k in lg)


def test_unmatched_queries_get_attribute_no_object_target(tiny_cfg):
    p = planted_problem(batch=1, num_queries=6, num_targets=2, seed=4)
    p.targets[0]["attributes"]["color"] = torch.tensor([2, -1])
    c = build_criterion(tiny_cfg)
    indices = p.assignment
    target = c.attribute_targets(p.outputs, p.targets, indices, "color", 3)
    (q, t), = indices
    expected = torch.full((1, 6), 3)  # K = 3 is "no object"
    expected[0, q] = p.targets[0]["attributes"]["color"][t]
    assert torch.equal(target, expected)
    assert (target == -1).sum() == 1  # the unlabeled instance's query is ignored


def test_unlabeled_attribute_is_ignored_by_the_loss(tiny_cfg):
    p = planted_problem(batch=1, num_queries=6, num_targets=2, seed=4)
    p.targets[0]["attributes"]["color"] = torch.tensor([-1, 1])
    c = build_criterion(tiny_cfg)
    (q, t), = p.assignment
    unlabeled_query = q[t.tolist().index(0)]
    before = c(p.outputs, p.targets, generator=gen())["loss_attr_color"]
    p.outputs.attribute_logits["color"][0, unlabeled_query] = torch.tensor([9.0, -9.0, 3.0, -4.0])
    after = c(p.outputs, p.targets, generator=gen())["loss_attr_color"]
    assert after.item() == pytest.approx(before.item(), abs=1e-7)


def test_all_ignored_cross_entropy_is_zero_not_nan():
    logits = torch.randn(1, 3, 4)
    loss = weighted_cross_entropy(logits, torch.full((1, 3), -1), torch.ones(4))
    assert loss.item() == 0.0


def test_head_sized_k_instead_of_k_plus_one_is_caught(tiny_cfg):
    """Seed bug 2: a K-way head hits a device assert on the no-object target; we raise first."""
    p = planted_problem()
    p.outputs.attribute_logits["color"] = p.outputs.attribute_logits["color"][..., :3]
    with pytest.raises(ValueError, match=r"K\+1"):
        build_criterion(tiny_cfg)(p.outputs, p.targets)


@pytest.mark.parametrize("field,value,match", [
    ("labels", 7, "labels"), ("color", 3, "color"), ("size", -2, "size")])
def test_out_of_range_targets_name_the_field(tiny_cfg, field, value, match):
    p = planted_problem()
    if field == "labels":
        p.targets[0]["labels"][0] = value
    else:
        p.targets[0]["attributes"][field][0] = value
    with pytest.raises(ValueError, match=match):
        build_criterion(tiny_cfg)(p.outputs, p.targets)


def test_every_loss_key_needs_a_weight(tiny_cfg):
    with pytest.raises(KeyError, match="loss_dice"):
        SetCriterion(3, tiny_cfg.attributes, HungarianMatcher(), {"loss_ce": 1, "loss_mask": 1,
                     "loss_attr_color": 1, "loss_attr_size": 1})
    c = build_criterion(tiny_cfg.replace(loss=wb.LossConfig(deep_supervision=False, num_points=64)))
    with pytest.raises(KeyError, match="loss_ce_0"):
        c.weigh({"loss_ce_0": torch.tensor(1.0)})


def test_aux_losses_for_every_stage(tiny_cfg):
    p = planted_problem()
    o = p.outputs
    o.aux = [ModelOutput(o.class_logits.clone(), {k: v.clone() for k, v in o.attribute_logits.items()},
                         o.mask_logits.clone()) for _ in range(tiny_cfg.dec_layers)]
    c = build_criterion(tiny_cfg)
    losses = c.weigh(c(o, p.targets, generator=gen()))
    assert {k for k in losses if k.endswith("_1")} == {"loss_ce_1", "loss_attr_color_1", "loss_attr_size_1",
                                                        "loss_mask_1", "loss_dice_1"}
    assert losses["loss_ce_0"].item() == pytest.approx(losses["loss_ce"].item())
    assert losses["loss_ce"].item() == pytest.approx(2.0 * c(o, p.targets, generator=gen())["loss_ce"].item())


def test_gradients_reach_every_head(tiny_model):
    from workbench.harness.synthetic import synthetic_batch
    batch = synthetic_batch(3, {"color": 3, "size": 3}, batch=2, size=64)
    tiny_model.train()
    sum(tiny_model(batch, generator=gen()).values()).backward()
    heads = {"class": tiny_model.decoder.class_head, "mask": tiny_model.decoder.mask_embed,
             **{f"attr {k}": v for k, v in tiny_model.decoder.attribute_heads.items()}}
    for name, head in heads.items():
        grads = [p.grad for p in head.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    assert tiny_model.backbone.stem[0][0].weight.grad.abs().sum() > 0


# ---- ignore regions (iscrowd / labelme __ignore__) ----
# Captured on the code before ignore regions existed (same planted problem, generator seed 0).
OLD_NUMBERS = {"loss_ce": 0.29277777671813965, "loss_attr_color": 0.8542320728302002,
               "loss_attr_size": 0.38549426198005676, "loss_mask": 0.35123133659362793,
               "loss_dice": 0.7248630523681641}


def test_losses_without_an_ignore_region_are_unchanged(tiny_cfg):
    p = planted_problem(confidence=1.0, seed=3)
    c = build_criterion(tiny_cfg)
    plain = c(p.outputs, p.targets, generator=gen())
    assert {k: v.item() for k, v in plain.items()} == pytest.approx(OLD_NUMBERS, rel=1e-6)
    for t in p.targets:
        t["ignore"] = torch.zeros(t["masks"].shape[-2:], dtype=torch.bool)
    with_empty_ignore = c(p.outputs, p.targets, generator=gen())
    assert all(torch.equal(plain[k], with_empty_ignore[k]) for k in plain)


def test_mask_losses_skip_points_on_the_ignore_region(tiny_cfg):
    p = planted_problem(batch=1, num_targets=1, confidence=6.0, seed=1)
    (q, _), = p.assignment
    target = p.targets[0]
    crowd = torch.zeros(32, 32, dtype=torch.bool)
    crowd[:, :10] = True
    crowd &= ~target["masks"][0]
    # the matched query also fires on the crowd region: wrong there, right everywhere else
    p.outputs.mask_logits[0, q[0]][crowd] = 6.0
    c = build_criterion(tiny_cfg)

    def mask_terms(targets):  # the term alone, on the planted assignment (the matcher is not under test)
        return c.loss_masks(p.outputs, targets, p.assignment, 1.0, gen())

    without = mask_terms(p.targets)
    target["ignore"] = crowd
    with_ignore = mask_terms(p.targets)
    p.outputs.mask_logits[0, q[0]][crowd] = -6.0  # a prediction that is right everywhere
    perfect = mask_terms([{k: v for k, v in target.items() if k != "ignore"}])
    for key in ("loss_mask", "loss_dice"):
        assert with_ignore[key] < 0.5 * without[key]
        assert with_ignore[key] == pytest.approx(perfect[key].item(), abs=0.05)


# ---- no-object weights reach the losses ----
def test_class_and_attribute_no_object_weights_match_cross_entropy():
    attrs = [wb.AttributeSpec("color", ("r", "g", "b"), no_object_weight=0.3),
             wb.AttributeSpec("size", ("s", "m", "l"), no_object_weight=0.7)]
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=attrs, loss=wb.LossConfig(num_points=64, no_object_weight=0.2))
    p = planted_problem(confidence=0.5, seed=5)
    c = build_criterion(cfg)
    losses = c(p.outputs, p.targets, generator=gen())
    indices = c.matcher(p.outputs, p.targets, generator=gen())
    B, Q = p.outputs.class_logits.shape[:2]
    assert sum(len(s) for s, _ in indices) < B * Q  # both matched and unmatched queries are in the loss
    target = torch.full((B, Q), 3)
    for b, (src, tgt) in enumerate(indices):
        target[b, src] = p.targets[b]["labels"][tgt]
    expected = torch.nn.functional.cross_entropy(
        p.outputs.class_logits.reshape(B * Q, -1), target.reshape(-1), weight=torch.tensor([1.0, 1.0, 1.0, 0.2]))
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    for a in attrs:
        target = torch.full((B, Q), 3)
        for b, (src, tgt) in enumerate(indices):
            target[b, src] = p.targets[b]["attributes"][a.name][tgt]
        weight = torch.tensor([1.0, 1.0, 1.0, a.no_object_weight])
        expected = torch.nn.functional.cross_entropy(
            p.outputs.attribute_logits[a.name].reshape(B * Q, -1), target.reshape(-1), weight=weight)
        assert losses[f"loss_attr_{a.name}"].item() == pytest.approx(expected.item(), rel=1e-5)


# --- random points through images without targets, as upstream ---------------------------------------------------
def _batch_with_an_empty_image(confidence=1.0):
    """Three images, the middle one without targets; final prediction plus one aux stage (different logits)."""
    final = planted_problem(batch=3, confidence=confidence, seed=1)
    aux = planted_problem(batch=3, confidence=confidence, seed=2).outputs
    targets = final.targets
    targets[1] = empty_targets(1)[0]
    outputs = ModelOutput(final.outputs.class_logits, final.outputs.attribute_logits, final.outputs.mask_logits,
                          aux=[aux])
    return outputs, targets


def _small_criterion(num_points=48):
    attrs = (wb.AttributeSpec("color", ("r", "g", "b")), wb.AttributeSpec("size", ("s", "m", "l")))
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=attrs, loss=wb.LossConfig(num_points=num_points))
    return build_criterion(cfg, matcher=HungarianMatcher(cost_attributes={"color": 1.0, "size": 1.0},
                                                         num_points=num_points))


def test_points_are_drawn_for_images_without_targets_in_upstreams_order(monkeypatch):
    """Upstream's HungarianMatcher draws (1, P, 2) points for every image *before* looking at its targets; then
    loss_masks draws (N, P * oversample, 2) and (N, P - importance * P, 2) for the N matched masks of the batch.
    Per stage: final prediction first, then each aux stage. An empty image must take its draw too. From a CPU
    generator the matcher takes the B images' draws as one (B, P, 2) draw, the same numbers in the same order
    (tests/test_matcher.py; the next test replays upstream's per-image draws)."""
    import workbench.model.matcher as matcher_module
    import workbench.model.points as points_module

    drawn = []
    real = points_module.rand

    def recording(shape, **kw):
        drawn.append(tuple(shape))
        return real(shape, **kw)

    monkeypatch.setattr(matcher_module, "rand", recording)
    monkeypatch.setattr(points_module, "rand", recording)
    outputs, targets = _batch_with_an_empty_image()
    criterion = _small_criterion(num_points=48)
    criterion(outputs, targets, generator=gen())
    matched = sum(len(t["labels"]) for t in targets)  # 3 + 0 + 3
    per_stage = [(3, 48, 2)] + [(matched, int(48 * 3.0), 2), (matched, 48 - int(0.75 * 48), 2)]
    assert drawn == per_stage * 2


def test_losses_through_an_empty_image_equal_upstreams_draws_step_by_step():
    """The criterion's losses equal those computed step by step with upstream's draws from the same generator:
    per stage, one (1, P, 2) draw per image (also the empty one) for the matching costs, then PointRend's
    importance sampling for the matched masks. Skipping the empty image's draw shifts every later point."""
    from scipy.optimize import linear_sum_assignment

    from workbench.model.criterion import dice_loss, sigmoid_ce_loss
    from workbench.model.points import point_sample

    num_points, oversample, importance = 48, 3.0, 0.75
    outputs, targets = _batch_with_an_empty_image()
    criterion = _small_criterion(num_points)
    got = criterion(outputs, targets, generator=torch.Generator().manual_seed(11))

    g = torch.Generator().manual_seed(11)
    num_masks = float(sum(len(t["labels"]) for t in targets))
    for suffix, stage in [("", outputs), ("_0", outputs.aux[0])]:
        indices = []
        for b in range(3):
            coords = torch.rand(1, num_points, 2, generator=g)  # upstream: drawn before the targets are read
            if len(targets[b]["labels"]) == 0:
                indices.append((torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))
                continue
            cost = criterion.matcher.cost_matrix(stage, targets, b, coords)
            rows, cols = linear_sum_assignment(cost.numpy())
            indices.append((torch.as_tensor(rows), torch.as_tensor(cols)))
        src = torch.cat([stage.mask_logits[b, q] for b, (q, _) in enumerate(indices)])[:, None]
        tgt = torch.cat([targets[b]["masks"][t].float() for b, (_, t) in enumerate(indices)])[:, None]
        n, num_sampled = src.shape[0], int(num_points * oversample)
        candidates = torch.rand(n, num_sampled, 2, generator=g)
        uncertainty = -point_sample(src, candidates).abs()[:, 0]
        top = torch.topk(uncertainty, int(importance * num_points), dim=1).indices
        picked = torch.stack([candidates[i, top[i]] for i in range(n)])
        rest = torch.rand(n, num_points - int(importance * num_points), 2, generator=g)
        coords = torch.cat([picked, rest], dim=1)
        logits, labels = point_sample(src, coords)[:, 0], point_sample(tgt, coords)[:, 0]
        torch.testing.assert_close(got[f"loss_mask{suffix}"], sigmoid_ce_loss(logits, labels, num_masks))
        torch.testing.assert_close(got[f"loss_dice{suffix}"], dice_loss(logits, labels, num_masks))
        # and the class loss follows the same matching
        target = torch.full((3, stage.num_queries), 3, dtype=torch.long)
        for b, (q, t) in enumerate(indices):
            target[b, q] = targets[b]["labels"][t]
        expected_ce = torch.nn.functional.cross_entropy(stage.class_logits.transpose(1, 2), target,
                                                        criterion.empty_weight)
        torch.testing.assert_close(got[f"loss_ce{suffix}"], expected_ce)
