"""The boundary loss on semantic targets (InverseForm's home): one mask per class present, label 255 ignored.

A semantic step with the term on produces `loss_boundary` at every stage, weighted by `loss.boundary_weight`,
with gradients into the mask head. Ignored pixels are excluded on both sides: logits there change nothing
(tests/test_ignore_regions.py) and neither does what a target says there (a class mask's area resize counts only
kept pixels), and a semantic batch's padding is label 255, so a class touching the image border gets no outline
there.
"""
import numpy as np
import pytest
import torch
from PIL import Image

import workbench as wb
from workbench.data.segmentation import open_dataset
from workbench.data.synthetic import synthetic_splits
from workbench.model.criterion import Matches
from workbench.model.ignore import kept_share
from workbench.model.meta_arch import build_criterion
from workbench.model.outputs import ModelOutput


@pytest.fixture(scope="module")
def semantic_items(tmp_path_factory):
    """Two synthetic semantic items (sky / ground behind shapes) with a void block (label 255) in each."""
    root = tmp_path_factory.mktemp("semantic")
    train, _ = synthetic_splits(root, 2, 1, image_size=64, progress=False, task="semantic")
    for png in sorted((train / "labels").glob("*.png")):
        labels = np.array(Image.open(png))
        labels[10:29, 5:23] = 255
        Image.fromarray(labels).save(png)
    dataset = open_dataset(train, "semantic")
    return [dataset[0], dataset[1]], dataset.schema


def semantic_model(schema, boundary_weight):
    torch.manual_seed(0)
    cfg = wb.ModelConfig.tiny(num_classes=schema.num_classes, stuff_classes=schema.stuff_classes, task="semantic",
                              loss=wb.LossConfig(num_points=64, boundary_weight=boundary_weight))
    return wb.build_model(cfg).train()


def test_a_semantic_step_trains_with_the_weighted_boundary_loss(semantic_items):
    items, schema = semantic_items
    assert all(bool(item["instances"]["ignore"].any()) for item in items)  # the void block is ignored
    assert all(len(item["instances"]["labels"]) == len(item["instances"]["labels"].unique()) for item in items)
    one = semantic_model(schema, 1.0)(items, generator=torch.Generator().manual_seed(0))
    model = semantic_model(schema, 2.5)
    losses = model(items, generator=torch.Generator().manual_seed(0))
    stages = [""] + [f"_{i}" for i in range(model.cfg.dec_layers)]
    assert {f"loss_boundary{s}" for s in stages} <= set(losses)
    for key in losses:  # same weights and matches: only the boundary keys scale, by exactly the weight
        factor = 2.5 if key.startswith("loss_boundary") else 1.0
        assert losses[key].item() == pytest.approx(factor * one[key].item(), rel=1e-5), key
    assert torch.isfinite(losses["loss_boundary"]) and losses["loss_boundary"] > 0
    losses["loss_boundary"].backward()
    grads = [p.grad for p in model.decoder.mask_embed.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0


def void_strip_targets():
    """One image, classes 0 | 1 left and right, 2 at the bottom; a one-pixel void strip (column 30) inside a logit
    cell that stays kept (1/4 of it ignored)."""
    labels = torch.zeros(64, 64, dtype=torch.long)
    labels[:, 30:] = 1
    labels[40:, :] = 2
    ignore = torch.zeros(64, 64, dtype=torch.bool)
    ignore[:, 30] = True
    masks = torch.stack([(labels == c) & ~ignore for c in range(3)])
    return labels, ignore, {"labels": torch.arange(3), "masks": masks, "attributes": {}, "ignore": ignore}


def test_what_a_class_mask_says_on_ignored_pixels_changes_nothing():
    labels, ignore, target = void_strip_targets()
    criterion = build_criterion(wb.ModelConfig.tiny(num_classes=3, task="semantic",
                                                    loss=wb.LossConfig(num_points=64, boundary_weight=1.0)))
    g = torch.Generator().manual_seed(0)
    outputs = ModelOutput(torch.randn(1, 5, 4, generator=g), {}, 3 * torch.randn(1, 5, 16, 16, generator=g))
    matches = Matches([(torch.tensor([0, 2, 4]), torch.tensor([0, 1, 2]))], True)

    def loss(masks):
        return criterion.loss_boundary(outputs, [{**target, "masks": masks}], matches, 3.0, None)["loss_boundary"]

    base = loss(target["masks"])
    claimed = torch.stack([(labels == c) | (ignore & (c == 0)) for c in range(3)])  # class 0 claims the void
    assert torch.equal(loss(claimed), base)
    moved = target["masks"].clone()
    moved[0, :8, :8], moved[1, :8, :8] = False, False  # a kept corner changes class: that must count
    moved[2, :8, :8] = True
    assert not torch.equal(loss(moved), base)


def test_kept_share_is_the_area_resize_without_ignored_pixels():
    g = torch.Generator().manual_seed(3)
    masks = (torch.rand(4, 32, 32, generator=g) > 0.5).float()
    assert torch.equal(kept_share(masks, torch.ones_like(masks), (8, 8)),
                       torch.nn.functional.adaptive_avg_pool2d(masks[:, None], (8, 8))[:, 0])
    kept = torch.ones_like(masks)
    kept[:, :4, :2] = 0  # half of cell (0, 0) ignored
    share = kept_share(masks, kept, (8, 8))
    assert share[:, 0, 0].tolist() == pytest.approx((masks[:, :4, 2:4].sum((1, 2)) / 8).tolist())
    assert kept_share(masks, torch.zeros_like(masks), (8, 8)).abs().sum() == 0  # nothing kept: 0, not NaN


@pytest.mark.parametrize("task", ["semantic", "panoptic"])
def test_a_semantic_batch_pads_with_ignore_so_the_border_is_no_outline(semantic_items, task):
    items, schema = semantic_items
    narrow = {**items[0], "image": items[0]["image"][..., :48],
              "instances": {**items[0]["instances"], "masks": items[0]["instances"]["masks"][..., :48],
                            "ignore": torch.zeros(64, 48, dtype=torch.bool)}}  # no void of its own
    model = wb.build_model(wb.ModelConfig.tiny(num_classes=schema.num_classes, task=task, attributes=(),
                                               loss=wb.LossConfig(num_points=64, boundary_weight=1.0)))
    targets = model.targets([narrow, items[1]], (64, 64))
    if task != "semantic":  # instance and panoptic targets: padding is background, as upstream's
        assert not targets[0]["ignore"].any()
        return
    assert targets[0]["ignore"][:, 48:].all() and not targets[0]["ignore"][:, :48].any()
    assert torch.equal(targets[1]["ignore"], items[1]["instances"]["ignore"])  # unpadded: its own void only
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(2, 6, 16, 16, generator=g)
    outputs = ModelOutput(torch.randn(2, 6, schema.num_classes + 1, generator=g), {}, logits)
    matches = Matches([(torch.arange(len(t["labels"])), torch.arange(len(t["labels"]))) for t in targets], True)
    base = model.criterion.loss_boundary(outputs, targets, matches, 4.0, None)["loss_boundary"]
    wild = logits.clone()
    wild[0, :, :, 12:] = 30 * torch.randn(6, 16, 4, generator=g)  # predictions on the first image's padding
    moved = ModelOutput(outputs.class_logits, {}, wild)
    assert torch.equal(model.criterion.loss_boundary(moved, targets, matches, 4.0, None)["loss_boundary"], base)
