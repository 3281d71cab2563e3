import itertools

import pytest
import torch

from workbench.harness.synthetic import attribute_ambiguous_problem, planted_problem
from workbench.model.matcher import (
    HungarianMatcher,
    assignment_cost,
    batch_attribute_cost,
    batch_dice_cost,
    batch_sigmoid_ce_cost,
)
from workbench.model.outputs import ModelOutput


def matcher(**kw):
    args = dict(cost_attributes={"color": 1.0, "size": 1.0}, num_points=512)
    args.update(kw)
    return HungarianMatcher(**args)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("seed", range(4))
def test_recovers_planted_permutation(seed):
    p = planted_problem(num_queries=12, num_targets=4, seed=seed)
    found = matcher()(p.outputs, p.targets, generator=gen(seed))
    for (q, t), (pq, pt) in zip(found, p.assignment):
        assert q.tolist() == pq.tolist() and t.tolist() == pt.tolist()


@pytest.mark.parametrize("seed", range(5))
def test_equals_brute_force(seed):
    # low confidence: costs are close, so a wrong solver would be caught
    p = planted_problem(batch=1, num_queries=5, num_targets=3, confidence=0.3, seed=seed)
    m = matcher(num_points=64)
    coords = torch.rand(1, 64, 2, generator=gen(seed))
    cost = m.cost_matrix(p.outputs, p.targets, 0, coords).numpy()
    best = min(sum(cost[q, t] for t, q in enumerate(qs)) for qs in itertools.permutations(range(5), 3))
    (rows, cols), = m(p.outputs, p.targets, generator=gen(seed))  # same generator -> same points
    assert assignment_cost(cost, rows, cols) == pytest.approx(best, abs=1e-5)


def test_permuting_queries_permutes_assignment():
    p = planted_problem(batch=1, num_queries=8, num_targets=3, confidence=1.0, seed=3)
    perm = torch.randperm(8, generator=gen(1))
    o = p.outputs
    permuted = ModelOutput(o.class_logits[:, perm], {k: v[:, perm] for k, v in o.attribute_logits.items()},
                           o.mask_logits[:, perm])
    (q1, t1), = matcher()(o, p.targets, generator=gen(0))
    (q2, t2), = matcher()(permuted, p.targets, generator=gen(0))
    original = dict(zip(t1.tolist(), q1.tolist()))
    after = {t: perm[q].item() for q, t in zip(q2.tolist(), t2.tolist())}
    assert original == after


def test_attribute_cost_changes_assignment_when_it_should():
    p = attribute_ambiguous_problem()
    (_, with_attr), = HungarianMatcher(cost_attributes={"color": 1.0}, num_points=4096)(p.outputs, p.targets, gen())
    (_, without), = HungarianMatcher(cost_attributes={"color": 0.0}, num_points=4096)(p.outputs, p.targets, gen())
    assert with_attr.tolist() == [0, 1]  # attributes decide
    assert without.tolist() == [1, 0]  # masks alone pick the other pairing


def test_attribute_costs_enter_the_cost_matrix():
    p = planted_problem(batch=1, seed=1)
    coords = torch.rand(1, 128, 2, generator=gen())
    on = matcher().cost_matrix(p.outputs, p.targets, 0, coords)
    off = matcher(cost_attributes={"color": 0.0, "size": 0.0}).cost_matrix(p.outputs, p.targets, 0, coords)
    assert not torch.allclose(on, off)


def test_unlabeled_attribute_adds_no_cost():
    probs = torch.softmax(torch.randn(4, 4), -1)
    cost = batch_attribute_cost(probs, torch.tensor([1, -1, 2]))
    assert torch.all(cost[:, 1] == 0)
    assert torch.allclose(cost[:, 0], -probs[:, 1]) and torch.allclose(cost[:, 2], -probs[:, 2])


def test_pairwise_costs_match_elementwise_definitions():
    x, y = torch.randn(3, 50), (torch.rand(2, 50) > 0.5).float()
    ce = batch_sigmoid_ce_cost(x, y)
    dice = batch_dice_cost(x, y)
    for i in range(3):
        for j in range(2):
            ref = torch.nn.functional.binary_cross_entropy_with_logits(x[i], y[j])
            assert ce[i, j].item() == pytest.approx(ref.item(), abs=1e-5)
            prob = x[i].sigmoid()
            ref_dice = 1 - (2 * (prob * y[j]).sum() + 1) / (prob.sum() + y[j].sum() + 1)
            assert dice[i, j].item() == pytest.approx(ref_dice.item(), abs=1e-5)


def test_nan_costs_are_guarded():
    p = planted_problem(batch=1, seed=2)
    p.outputs.mask_logits[0, 0] = float("nan")
    (q, t), = matcher()(p.outputs, p.targets, generator=gen())
    assert len(q) == len(t) == 3
    assert 0 not in q.tolist()  # the NaN query is never preferred


def test_empty_targets():
    p = planted_problem(batch=2, seed=0)
    p.targets[1] = {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 32, 32, dtype=torch.bool),
                    "attributes": {"color": torch.zeros(0, dtype=torch.long), "size": torch.zeros(0, dtype=torch.long)}}
    out = matcher()(p.outputs, p.targets)
    assert out[1][0].numel() == 0 and out[1][1].numel() == 0
    assert len(out[0][0]) == 3


def test_generator_makes_costs_reproducible():
    p = planted_problem(batch=1, confidence=0.2, seed=5)
    m = matcher(num_points=16)
    a = m(p.outputs, p.targets, generator=gen(7))
    b = m(p.outputs, p.targets, generator=gen(7))
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_points"):
        HungarianMatcher(num_points=0)
    with pytest.raises(ValueError):
        HungarianMatcher(cost_attributes={"color": -1.0})
    p = planted_problem(batch=1)
    with pytest.raises(KeyError, match="shape"):
        HungarianMatcher(cost_attributes={"shape": 1.0})(p.outputs, p.targets)


def test_costs_stay_float32_under_autocast():
    """AMP runs the model in bf16/fp16; matching must not (ties and NaNs appear in half precision)."""
    p = planted_problem(batch=1, seed=6)
    half = ModelOutput(p.outputs.class_logits.bfloat16(), {k: v.bfloat16() for k, v in p.outputs.attribute_logits.items()},
                       p.outputs.mask_logits.bfloat16())
    m = matcher()
    coords = torch.rand(1, 64, 2, generator=gen())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cost = m.cost_matrix(half, p.targets, 0, coords)
        (q, t), = m(half, p.targets, generator=gen())
    exact = m.cost_matrix(half, p.targets, 0, coords)  # outside autocast
    assert cost.dtype == torch.float32 and torch.equal(cost, exact)
    assert q.tolist() == p.assignment[0][0].tolist() and t.tolist() == p.assignment[0][1].tolist()


def per_image_costs(m: HungarianMatcher, outputs: ModelOutput, targets, coords: torch.Tensor) -> list:
    """Image b's cost matrix computed on image b alone, with the textbook formulas (two BCE passes, the masks
    sampled one image at a time), as the matcher did before issue 14 batched it."""
    from workbench.model.points import point_sample

    costs = []
    for b, tgt in enumerate(targets):
        probs = outputs.class_logits[b].softmax(-1)
        cost = m.cost_class * -probs[:, tgt["labels"]]
        for name, w in m.cost_attributes.items():
            values = torch.as_tensor(tgt["attributes"][name])
            attr = outputs.attribute_logits[name][b].softmax(-1)
            cost = cost + w * -attr[:, values.clamp(min=0)] * (values >= 0).float()[None]
        out = point_sample(outputs.mask_logits[b][:, None], coords[b : b + 1].expand(outputs.num_queries, -1, -1))[:, 0]
        masks = torch.as_tensor(tgt["masks"]).float()
        tgt_pts = point_sample(masks[:, None], coords[b : b + 1].expand(len(masks), -1, -1))[:, 0]
        bce = torch.stack([torch.stack([torch.nn.functional.binary_cross_entropy_with_logits(o, t) for t in tgt_pts])
                           for o in out]) if len(masks) else cost.new_zeros((len(out), 0))
        costs.append(cost + m.cost_mask * bce + m.cost_dice * batch_dice_cost(out, tgt_pts))
    return costs


@pytest.mark.parametrize("one_call", [True, False], ids=["masks-in-one-call", "masks-per-image"])
def test_batched_costs_equal_each_image_alone(one_call, monkeypatch):
    """Issue 14 computes all images' costs together, targets padded to the largest count: each image's block
    equals its own computation, whatever its neighbours hold (an empty image, 1 target, 4 targets)."""
    p = planted_problem(batch=3, num_queries=9, num_targets=4, confidence=0.4, seed=5)
    p.outputs.mask_logits[1] *= 8  # confident logits: softplus(x) - t x must not lose the small costs
    for key in ("labels", "masks"):
        p.targets[0][key] = p.targets[0][key][:0]
        p.targets[2][key] = p.targets[2][key][:1]
    for name in ("color", "size"):
        p.targets[0]["attributes"][name] = p.targets[0]["attributes"][name][:0]
        p.targets[2]["attributes"][name] = p.targets[2]["attributes"][name][:1]
    p.targets[1]["attributes"]["color"][2] = -1
    m = matcher(num_points=256)
    if not one_call:  # targets too large to sample as one batch fall back to one image at a time
        monkeypatch.setattr("workbench.model.matcher.MAX_BATCHED_MASK_PIXELS", 0)
    padded = m.pad(p.targets, torch.device("cpu"))
    assert (padded.masks is not None) == one_call
    coords = torch.rand(3, 256, 2, generator=gen(3))
    batched = m.cost_matrices(p.outputs, p.targets, coords, padded)
    assert batched.shape == (3, 9, 4)
    for b, want in enumerate(per_image_costs(m, p.outputs, p.targets, coords)):
        got = batched[b, :, : len(p.targets[b]["labels"])]
        assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-5), b
        assert torch.allclose(m.cost_matrix(p.outputs, p.targets, b, coords[b : b + 1]), want, rtol=1e-5, atol=1e-5)
    found = m(p.outputs, p.targets, generator=gen(4))
    assert [len(q) for q, _ in found] == [0, 4, 1]


def test_sigmoid_ce_cost_holds_for_soft_targets():
    """Targets sampled bilinearly at mask edges lie between 0 and 1: the one-product form still equals BCE."""
    x, y = 6 * torch.randn(4, 300), torch.rand(3, 300)
    ce = batch_sigmoid_ce_cost(x, y)
    for i in range(4):
        for j in range(3):
            ref = torch.nn.functional.binary_cross_entropy_with_logits(x[i], y[j])
            assert ce[i, j].item() == pytest.approx(ref.item(), rel=1e-5)


def test_one_draw_for_the_batch_is_one_draw_per_image():
    """The matcher draws all images' points at once from a CPU generator: the same numbers as upstream's one
    draw per image, in image order (a torch change that broke this would change every match)."""
    from workbench.model.points import rand

    g = gen(7)
    per_image = torch.cat([rand((1, 300, 2), device="cpu", generator=g) for _ in range(5)])
    assert torch.equal(rand((5, 300, 2), device="cpu", generator=gen(7)), per_image)
