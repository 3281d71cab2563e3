"""Synthetic inputs with known answers, so each component can run (and be tested) alone.

`planted_problem` builds model outputs that predict the targets through a hidden query permutation: a correct
matcher recovers it, and a correct criterion gives low losses on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from workbench.model.outputs import ModelOutput


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_box_masks(num: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(num, H, W) bool rectangles covering 10-50% of each side, distinct and non-empty."""
    masks = torch.zeros(num, height, width, dtype=torch.bool)
    for i in range(num):
        h = int(torch.randint(max(2, height // 10), max(3, height // 2), (1,), generator=generator))
        w = int(torch.randint(max(2, width // 10), max(3, width // 2), (1,), generator=generator))
        y = int(torch.randint(0, height - h + 1, (1,), generator=generator))
        x = int(torch.randint(0, width - w + 1, (1,), generator=generator))
        masks[i, y : y + h, x : x + w] = True
    return masks


def random_targets(num_targets: int, num_classes: int, attributes: Mapping[str, int], height: int, width: int,
                   generator: torch.Generator, unlabeled_fraction: float = 0.0) -> dict:
    """One image's targets: labels (T,), masks bool (T, H, W), attributes {name: (T,)} with -1 = unlabeled."""
    attrs = {}
    for name, k in attributes.items():
        values = torch.randint(0, k, (num_targets,), generator=generator)
        unlabeled = torch.rand(num_targets, generator=generator) < unlabeled_fraction
        attrs[name] = values.masked_fill(unlabeled, -1)
    return {
        "labels": torch.randint(0, num_classes, (num_targets,), generator=generator),
        "masks": random_box_masks(num_targets, height, width, generator),
        "attributes": attrs,
    }


def random_features(channels: Mapping[str, int], batch: int, height: int, width: int,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Backbone-like features {"res2": (B, C2, H/4, W/4), ..., "res5": (B, C5, H/32, W/32)}."""
    strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    return {name: torch.randn(batch, c, height // strides[name], width // strides[name], generator=generator)
            for name, c in channels.items()}


@dataclass
class PlantedProblem:
    """outputs predict targets[b] through `assignment[b]` = (query_idx (T,), target_idx (T,)), sorted by query."""

    outputs: ModelOutput
    targets: list[dict]
    assignment: list[tuple[torch.Tensor, torch.Tensor]]


def planted_problem(batch: int = 2, num_queries: int = 8, num_targets: int = 3, num_classes: int = 4,
                    attributes: Mapping[str, int] | None = None, size: int = 32, confidence: float = 6.0,
                    seed: int = 0) -> PlantedProblem:
    """Outputs whose matched queries confidently predict their target's class, attributes and mask, and whose
    other queries predict "no object" with a random mask."""
    g = _generator(seed)
    attributes = dict(attributes if attributes is not None else {"color": 3, "size": 3})
    q = num_queries
    class_logits = torch.randn(batch, q, num_classes + 1, generator=g)
    class_logits[..., -1] += confidence
    attr_logits = {name: torch.randn(batch, q, k + 1, generator=g) for name, k in attributes.items()}
    for name in attr_logits:
        attr_logits[name][..., -1] += confidence
    mask_logits = -confidence * torch.ones(batch, q, size, size) + torch.randn(batch, q, size, size, generator=g)
    targets, assignment = [], []
    for b in range(batch):
        tgt = random_targets(num_targets, num_classes, attributes, size, size, g)
        queries = torch.randperm(q, generator=g)[:num_targets]
        for t, qi in enumerate(queries.tolist()):
            class_logits[b, qi, -1] -= 2 * confidence
            class_logits[b, qi, tgt["labels"][t]] += 2 * confidence
            for name in attributes:
                attr_logits[name][b, qi, -1] -= 2 * confidence
                attr_logits[name][b, qi, tgt["attributes"][name][t]] += 2 * confidence
            mask_logits[b, qi] = confidence * (2 * tgt["masks"][t].float() - 1)
        order = queries.argsort()
        targets.append(tgt)
        assignment.append((queries[order], torch.arange(num_targets)[order]))
    outputs = ModelOutput(class_logits, attr_logits, mask_logits)
    return PlantedProblem(outputs, targets, assignment)


def attribute_ambiguous_problem(size: int = 32, seed: int = 0) -> PlantedProblem:
    """Two same-class targets whose masks nearly coincide and whose attributes differ.

    Query 0 carries target 0's attributes but its mask fits target 1 slightly better (query 1 the reverse).
    Mask costs alone match q0->t1; with attribute costs the right answer, q0->t0, wins. `assignment` is that
    attribute-aware answer.
    """
    g = _generator(seed)
    base = torch.zeros(size, size, dtype=torch.bool)
    base[4:28, 4:28] = True
    m0, m1 = base.clone(), base.clone()
    m0[28, 4:28] = True  # target 0 extends one row down
    m1[4:28, 28] = True  # target 1 extends one column right
    attributes = {"color": 3}
    targets = [{"labels": torch.tensor([1, 1]), "masks": torch.stack([m0, m1]),
                "attributes": {"color": torch.tensor([0, 2])}}]
    class_logits = torch.zeros(1, 2, 3)
    class_logits[0, :, 1] = 5.0
    attr_logits = {"color": torch.zeros(1, 2, attributes["color"] + 1)}
    attr_logits["color"][0, 0, 0] = 5.0
    attr_logits["color"][0, 1, 2] = 5.0
    mask_logits = torch.stack([2.0 * (2 * m1.float() - 1), 2.0 * (2 * m0.float() - 1)])[None]
    mask_logits = mask_logits + 0.01 * torch.randn(mask_logits.shape, generator=g)
    outputs = ModelOutput(class_logits, attr_logits, mask_logits)
    return PlantedProblem(outputs, targets, [(torch.tensor([0, 1]), torch.tensor([0, 1]))])


def random_images(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """float (B, 3, H, W) in 0..255, each image different."""
    return torch.rand(batch, 3, height, width, generator=_generator(seed)) * 255.0


def synthetic_batch(num_classes: int, attributes: Mapping[str, int], batch: int = 2, size: int = 64,
                    num_targets: int = 3, seed: int = 0) -> list[dict]:
    """A model-ready batch: images whose pixels show their instances (each instance painted a flat colour
    derived from its class and attributes), so a model can actually learn it."""
    g = _generator(seed)
    items = []
    for _ in range(batch):
        tgt = random_targets(num_targets, num_classes, attributes, size, size, g)
        image = torch.rand(3, size, size, generator=g) * 40
        for t in range(num_targets):
            code = [int(tgt["labels"][t])] + [max(0, int(v[t])) for v in tgt["attributes"].values()]
            colour = torch.tensor([(60 + 70 * c) % 256 for c in (code + [0, 0, 0])[:3]], dtype=torch.float32)
            image[:, tgt["masks"][t]] = colour[:, None]
        items.append({"image": image.to(torch.uint8), "instances": tgt})
    return items
