"""Step-through views of single components for notebook 02 (tensors in, tensors out, no training), and the
four seed bugs reproduced on the harness's synthetic problems next to what the workbench does instead."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from workbench.config import ModelConfig
from workbench.harness.synthetic import attribute_ambiguous_problem, planted_problem, synthetic_batch
from workbench.model.matcher import (
    HungarianMatcher,
    batch_attribute_cost,
    batch_class_cost,
    batch_dice_cost,
    batch_sigmoid_ce_cost,
)
from workbench.model.ignore import ignored_cells, image_ignore, valid_points
from workbench.model.meta_arch import build_criterion, pad_images
from workbench.model.outputs import ModelOutput
from workbench.model.points import point_sample

__all__ = [
    "SeedBug",
    "component_tensors",
    "criterion_losses",
    "matcher_cost_terms",
    "seed_bugs",
    "seed_bug_table",
]


@torch.no_grad()
def component_tensors(model, images: torch.Tensor) -> dict:
    """The intermediate tensors of one forward pass, component by component.

    images float (B, 3, H, W) in 0..255 (multiples of 32) -> {"backbone": {res2..res5}, "pixel": PixelDecoderOutput,
    "decoder": ModelOutput with aux and attention masks}.
    """
    model.eval()
    x = (images.to(model.device, torch.float32) - model.pixel_mean) / model.pixel_std
    feats = model.backbone(x)
    pixel = model.pixel_decoder(feats)
    out = model.decoder(pixel.multi_scale_features, pixel.mask_features, return_aux=True, return_attention=True)
    return {"backbone": feats, "pixel": pixel, "decoder": out}


def matcher_cost_terms(matcher: HungarianMatcher, outputs: ModelOutput, targets: Sequence[Mapping], b: int = 0,
                       num_points: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Image b's (Q, T) cost matrix split into its weighted terms, plus "total" (what the matcher solves).

    Keys: "class", "attr <name>" per attribute with a non-zero weight, "mask (BCE)", "dice", "total". The
    total equals `matcher.cost_matrix` on the same points.
    """
    coords = torch.rand((1, num_points, 2), generator=torch.Generator().manual_seed(seed))
    tgt = targets[b]
    labels = torch.as_tensor(tgt["labels"]).long()
    terms: dict[str, torch.Tensor] = {}
    terms["class"] = matcher.cost_class * batch_class_cost(outputs.class_logits[b].float().softmax(-1), labels)
    for name, weight in matcher.cost_attributes.items():
        if weight:
            probs = outputs.attribute_logits[name][b].float().softmax(-1)
            terms[f"attr {name}"] = weight * batch_attribute_cost(probs, torch.as_tensor(tgt["attributes"][name]).long())
    out_mask = outputs.mask_logits[b].float()
    tgt_mask = torch.as_tensor(tgt["masks"]).float()
    out_pts = point_sample(out_mask[:, None], coords.expand(out_mask.shape[0], -1, -1))[:, 0]
    tgt_pts = point_sample(tgt_mask[:, None], coords.expand(tgt_mask.shape[0], -1, -1))[:, 0]
    ignore = image_ignore([tgt])[0]  # the matcher's mask costs skip points on ignored cells (model/ignore.py)
    valid = (None if ignore is None
             else valid_points(ignored_cells(ignore[None], out_mask.shape[-2:]), coords)[0].float())
    terms["mask (BCE)"] = matcher.cost_mask * batch_sigmoid_ce_cost(out_pts, tgt_pts, valid)
    terms["dice"] = matcher.cost_dice * batch_dice_cost(out_pts, tgt_pts, valid)
    result = {k: v.numpy() for k, v in terms.items()}
    result["total"] = matcher.cost_matrix(outputs, targets, b, coords).numpy()
    return result


def criterion_losses(cfg: ModelConfig, seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """Unweighted per-term losses of the criterion on the planted problem: confident predictions vs the same
    problem with uncertain ones (every term should be lower for the confident set)."""
    k = {a.name: a.num_values for a in cfg.attributes}
    criterion = build_criterion(cfg)
    out = []
    for confidence in (6.0, 0.5):
        p = planted_problem(num_queries=cfg.num_queries, num_classes=cfg.num_classes, attributes=k, seed=seed,
                            confidence=confidence)
        losses = criterion(p.outputs, p.targets, generator=torch.Generator().manual_seed(seed))
        out.append({key: float(v) for key, v in losses.items()})
    return out[0], out[1]


@dataclass
class SeedBug:
    """One bug of the seed implementation: how it shows on a synthetic input, and what we do instead."""

    name: str
    seed_behaviour: str
    workbench_behaviour: str
    evidence: dict


def _bug_matcher(cfg: ModelConfig) -> SeedBug:
    problem = attribute_ambiguous_problem()
    found = {}
    for label, scale in (("attribute cost on", 1.0), ("attribute cost off (seed)", 0.0)):
        weight = cfg.attribute("color").weight if "color" in cfg.attribute_names else 1.0
        m = HungarianMatcher(cfg.loss.class_weight, cfg.loss.mask_weight, cfg.loss.dice_weight,
                             {"color": weight * scale}, cfg.loss.num_points)
        rows, cols = m(problem.outputs, problem.targets, generator=torch.Generator().manual_seed(0))[0]
        found[label] = cols.tolist()
    return SeedBug(
        "3: matcher without attribute cost",
        f"ambiguous case: query->target {found['attribute cost off (seed)']} (queries get the target whose "
        "mask fits marginally better, so their attributes are trained towards the wrong values)",
        f"query->target {found['attribute cost on']} (the planted answer [0, 1])",
        {"assignment": found, "problem": problem},
    )


def _bug_k_head(cfg: ModelConfig) -> SeedBug:
    k = {a.name: a.num_values for a in cfg.attributes}
    p = planted_problem(num_queries=cfg.num_queries, num_classes=cfg.num_classes, attributes=k, seed=0)
    name = cfg.attributes[0].name
    # the seed's Linear(hidden, K): drop the no-object column of one head
    p.outputs.attribute_logits[name] = p.outputs.attribute_logits[name][..., :-1]
    try:
        build_criterion(cfg)(p.outputs, p.targets)
        message = "no error (unexpected)"
    except ValueError as e:
        message = f"ValueError: {e}"
    return SeedBug(
        "2: attribute head Linear(hidden, K)",
        "unmatched queries get target index K, out of range for K outputs: a CUDA device-side assert "
        "`t >= 0 && t < n_classes` far from the cause",
        message,
        {"message": message},
    )


@torch.no_grad()
def _bug_query_feat(cfg: ModelConfig, model=None, size: int = 64) -> SeedBug:
    from workbench.model import build_model

    if model is None:
        torch.manual_seed(0)
        model = build_model(cfg)
    model.eval()
    k = {a.name: a.num_values for a in cfg.attributes}
    batch = synthetic_batch(cfg.num_classes, k, batch=2, size=size, seed=0)
    images = pad_images([item["image"] for item in batch], cfg.size_divisibility, cfg.pixel_mean)
    ours = model.forward_raw(images).attribute_logits
    dec = model.decoder
    seed_logits = {n: head(dec.decoder_norm(dec.query_feat.weight)) for n, head in dec.attribute_heads.items()}
    seed_diff = {n: 0.0 for n in seed_logits}  # computed from parameters only: every image gets these same logits
    our_diff = {n: float((v[0] - v[1]).abs().max()) for n, v in ours.items()}
    return SeedBug(
        "4: attributes from decoder_norm(query_feat.weight)",
        "max |logits(image 0) - logits(image 1)| = 0 for every attribute: learned parameters, not the image "
        "(training used the right tensors, which hid it)",
        "max |difference| between two images: " + ", ".join(f"{n} {v:.3g}" for n, v in our_diff.items()),
        {"seed_logits": seed_logits, "seed_diff": seed_diff, "our_diff": our_diff},
    )


def _bug_training_predictions(cfg: ModelConfig, model=None, size: int = 64) -> SeedBug:
    from workbench.model import build_model

    if model is None:
        torch.manual_seed(0)
        model = build_model(cfg)
    k = {a.name: a.num_values for a in cfg.attributes}
    batch = synthetic_batch(cfg.num_classes, k, batch=2, size=size, seed=0)
    images = pad_images([item["image"] for item in batch], cfg.size_divisibility, cfg.pixel_mean)
    model.train()
    raw = model.forward_raw(images)  # the seed returned predictions like these in training mode
    seed_outputs = {"pred_logits": raw.class_logits, "pred_masks": raw.mask_logits}
    try:  # detectron2's loop: losses = sum(loss_dict.values()); losses.backward()
        sum(seed_outputs.values()).backward()
        seed_error = "summing them did not fail"
    except RuntimeError as e:
        seed_error = f"RuntimeError: {str(e).splitlines()[0]}"
    losses = model(batch, generator=torch.Generator().manual_seed(0))
    model.eval()
    shapes = {key: tuple(v.shape) for key, v in losses.items()}
    return SeedBug(
        "1: training forward returns predictions",
        f"a train loop sums the outputs as losses: {seed_error}",
        f"train mode returns {len(losses)} weighted 0-dim losses (e.g. loss_ce {shapes['loss_ce']}), sum = "
        f"{float(sum(losses.values()).detach()):.3f}",
        {"seed_error": seed_error, "loss_shapes": shapes},
    )


def seed_bugs(cfg: ModelConfig, model=None) -> list[SeedBug]:
    """The four seed bugs on synthetic inputs (cfg needs a "color" attribute for the ambiguous matcher case)."""
    return [_bug_training_predictions(cfg, model), _bug_k_head(cfg), _bug_matcher(cfg), _bug_query_feat(cfg, model)]


def seed_bug_table(bugs: Sequence[SeedBug]) -> pd.DataFrame:
    return pd.DataFrame([{"bug": b.name, "seed would show": b.seed_behaviour, "workbench shows": b.workbench_behaviour}
                         for b in bugs]).set_index("bug")
