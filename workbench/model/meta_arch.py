"""`MultiTaskMask2Former`: backbone -> pixel decoder -> masked-attention decoder, plus matcher and criterion.

Training mode returns only weighted 0-dim losses (a dict a train loop can sum); eval mode returns per-image
predictions built from that image's own decoder outputs, for the config's `task`; `predict(batch, tasks)` gives
any tasks' predictions from one forward. Returning predictions while training was a seed bug.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from workbench.config import TASKS, ModelConfig
from workbench.model.activation_checkpoint import set_checkpointing
from workbench.model.backbones import backbone_from_config
from workbench.model.criterion import DEFAULT_TERMS, EffectiveBatch, LossTotals, SetCriterion, build_weight_dict
from workbench.model.decoder import MultiScaleMaskedTransformerDecoder
from workbench.model.matcher import HungarianMatcher
from workbench.model.outputs import ModelOutput
from workbench.model.panoptic_inference import panoptic_inference
from workbench.model.pixel_decoder import MSDeformAttnPixelDecoder
from workbench.model.postprocess import instance_inference
from workbench.model.semantic_inference import semantic_inference

Batch = Sequence[dict[str, Any]]


def build_pixel_decoder(cfg: ModelConfig, in_channels: dict[str, int]) -> MSDeformAttnPixelDecoder:
    """The pixel decoder for backbone features with `in_channels` {"res2": C2, ..., "res5": C5}."""
    return MSDeformAttnPixelDecoder(
        in_channels, conv_dim=cfg.hidden_dim, mask_dim=cfg.mask_dim, enc_layers=cfg.enc_layers, nheads=cfg.nheads,
        dim_feedforward=cfg.enc_dim_feedforward, n_points=cfg.enc_n_points, dropout=cfg.dropout,
    )


def build_decoder(cfg: ModelConfig, in_channels: int | None = None) -> MultiScaleMaskedTransformerDecoder:
    """The masked-attention decoder with its class head and one K+1 head per attribute."""
    return MultiScaleMaskedTransformerDecoder(
        num_classes=cfg.num_classes, attributes=cfg.attributes, hidden_dim=cfg.hidden_dim,
        num_queries=cfg.num_queries, nheads=cfg.nheads, dim_feedforward=cfg.dim_feedforward,
        dec_layers=cfg.dec_layers, mask_dim=cfg.mask_dim,
        in_channels=cfg.hidden_dim if in_channels is None else in_channels, dropout=cfg.dropout,
    )


def build_matcher(cfg: ModelConfig) -> HungarianMatcher:
    """Matcher costs use the loss weights (as upstream); attributes are scaled by `attribute_cost_weight`,
    multi-label groups also by `multi_label_cost_weight`."""
    return HungarianMatcher(
        cost_class=cfg.loss.class_weight,
        cost_mask=cfg.loss.mask_weight,
        cost_dice=cfg.loss.dice_weight,
        cost_attributes={a.name: a.weight * cfg.attribute_cost_weight * (cfg.multi_label_cost_weight if a.multi else 1.0)
                         for a in cfg.attributes},
        num_points=cfg.loss.num_points,
        multi_label=[a.name for a in cfg.attributes if a.multi],
    )


def build_criterion(cfg: ModelConfig, matcher: HungarianMatcher | None = None) -> SetCriterion:
    base = {"loss_ce": cfg.loss.class_weight, "loss_mask": cfg.loss.mask_weight, "loss_dice": cfg.loss.dice_weight}
    base.update({f"loss_attr_{a.name}": a.weight for a in cfg.attributes})
    losses = DEFAULT_TERMS
    if cfg.loss.boundary_weight > 0:  # 0 = off: the term is not computed at all, so no key lacks a weight
        losses += ("boundary",)
        base["loss_boundary"] = cfg.loss.boundary_weight
    num_aux = cfg.dec_layers if cfg.loss.deep_supervision else 0
    return SetCriterion(
        num_classes=cfg.num_classes,
        attributes=cfg.attributes,
        matcher=matcher or build_matcher(cfg),
        weight_dict=build_weight_dict(base, num_aux),
        losses=losses,
        no_object_weight=cfg.loss.no_object_weight,
        num_points=cfg.loss.num_points,
        oversample_ratio=cfg.loss.oversample_ratio,
        importance_sample_ratio=cfg.loss.importance_sample_ratio,
        multi_label_losses={a.name: cfg.multi_label_loss(a) for a in cfg.attributes if a.multi},
        focal_alpha=cfg.loss.focal_alpha,
        focal_gamma=cfg.loss.focal_gamma,
    )


def pad_images(images: Sequence[torch.Tensor], divisibility: int,
               fill: Sequence[float] = (0.0, 0.0, 0.0), min_size: int = 0) -> torch.Tensor:
    """List of (3, H_i, W_i) -> (B, 3, H, W) float, padded bottom/right to a multiple of `divisibility` (and to
    at least `min_size`) with the per-channel `fill` (the model passes its pixel mean: padding is 0 after
    normalisation, as upstream)."""
    h = max(min_size, max(int(im.shape[-2]) for im in images))
    w = max(min_size, max(int(im.shape[-1]) for im in images))
    h, w = -(-h // divisibility) * divisibility, -(-w // divisibility) * divisibility
    out = torch.as_tensor(fill, dtype=torch.float32, device=images[0].device).view(1, 3, 1, 1).repeat(len(images), 1, h, w)
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    return out


def pad_batch(images: Sequence[torch.Tensor], cfg: ModelConfig) -> torch.Tensor:
    """The model's own input rule, for every caller that feeds its graph (model(batch), the ONNX pre-processing):
    `pad_images` with the pixel mean to multiples of `size_divisibility` and to at least 2x2 cells at the coarsest
    stride, since GroupNorm needs more than one value per group and a tiny image (1x1, 32x32) would otherwise
    give degenerate logits. (3, H_i, W_i) list -> (B, 3, H, W) float, 0..255."""
    return pad_images(images, cfg.size_divisibility, cfg.pixel_mean, min_size=2 * cfg.size_divisibility)


class MultiTaskMask2Former(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone_from_config(cfg)
        self.pixel_decoder = build_pixel_decoder(cfg, self.backbone.out_channels)
        self.decoder = build_decoder(cfg)
        self.criterion = build_criterion(cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def checkpoint_activations(self, mode: str) -> None:
        """solver.checkpoint_activations: "none" | "backbone" | "decoder" (pixel-decoder encoder and transformer
        decoder layers) | "all": those parts recompute their activations in the backward
        (model/activation_checkpoint.py); same losses and gradients, less memory."""
        set_checkpointing(self, mode)

    def forward_raw(self, images: torch.Tensor, return_aux: bool = False,
                    return_attention: bool = False) -> ModelOutput:
        """images: float (B, 3, H, W) RGB in 0..255, H and W multiples of 32 -> ModelOutput (see outputs.py)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        d = self.cfg.size_divisibility
        if images.shape[-2] % d or images.shape[-1] % d:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be a multiple of {d}; "
                             f"use pad_images() or model(batch)")
        x = (images.to(self.device, torch.float32) - self.pixel_mean) / self.pixel_std
        pixel = self.pixel_decoder(self.backbone(x))
        return self.decoder(pixel.multi_scale_features, pixel.mask_features, return_aux=return_aux,
                            return_attention=return_attention)

    def targets(self, batch: Batch, padded_size: tuple[int, int] | None) -> list[dict[str, Any]]:
        """Instances of each image with masks zero-padded to the batch's padded size, on the model's device.
        `padded_size` None: labels and attributes only (no masks, no ignore regions)."""
        out = []
        for i, item in enumerate(batch):
            inst = item.get("instances")
            if inst is None:
                raise KeyError(f"batch[{i}] has no 'instances' (needed in training mode)")
            attrs = inst.get("attributes", {})
            labels = torch.as_tensor(inst["labels"], device=self.device).long()
            n = labels.shape[0]
            target = {
                "labels": labels,
                "attributes": {a.name: self._single_target(attrs[a.name], a, i) if a.name in attrs
                               else torch.full((n,), -1, device=self.device)
                               for a in self.cfg.attributes if not a.multi},
            }
            multi = [a for a in self.cfg.attributes if a.multi]
            if multi:  # (T, K) multi-hot + (T,) labeled mask; a group absent from the item is unlabeled
                labeled = inst.get("attribute_labeled", {})
                for a in multi:
                    if a.name not in attrs:
                        hot, known = torch.zeros(n, a.num_values, device=self.device), torch.zeros(n, dtype=torch.bool)
                    else:
                        hot, known = self._multi_target(attrs[a.name], labeled.get(a.name), a)
                    target["attributes"][a.name] = hot
                    target.setdefault("attribute_labeled", {})[a.name] = known.to(self.device)
            if padded_size is not None:
                masks = torch.as_tensor(inst["masks"], device=self.device)
                padded = masks.new_zeros((masks.shape[0], *padded_size), dtype=torch.bool)
                padded[:, : masks.shape[-2], : masks.shape[-1]] = masks.bool()
                target["masks"] = padded
            # crowd / label 255 / __ignore__ pixels, on the item or its instances (both: their union); padding is
            # not ignored, except for a semantic model: there it is label 255 (upstream's semantic mapper pads the
            # label map with it), so no class mask gets an outline along the image's border
            regions = [torch.as_tensor(r, device=self.device).bool() for r in (item.get("ignore"), inst.get("ignore"))
                       if r is not None]
            if padded_size is not None and self.cfg.task == "semantic" and tuple(masks.shape[-2:]) != tuple(padded_size):
                beyond = masks.new_ones(tuple(padded_size), dtype=torch.bool)
                beyond[: masks.shape[-2], : masks.shape[-1]] = False
                regions.append(beyond)
            if padded_size is not None and regions:
                target["ignore"] = padded.new_zeros(padded_size)
                for ignore in regions:
                    target["ignore"][: ignore.shape[-2], : ignore.shape[-1]] |= ignore
            out.append(target)
        return out

    def _single_target(self, values, a, i: int) -> torch.Tensor:
        """(T,) int64 value ids; a (T, K) multi-hot from a multi-label file (model configured "single", e.g.
        by an ablation of `kind`) gives each instance its one value, -1 where it has none."""
        values = torch.as_tensor(values, device=self.device)
        if values.dim() == 2:
            counts = values.long().sum(1)
            if bool((counts > 1).any()):
                raise ValueError(f"batch[{i}]: attribute {a.name!r} is single-label in the model config but an "
                                 f"instance holds {int(counts.max())} values; configure kind: multi")
            return torch.where(counts == 1, values.long().argmax(1), torch.full_like(counts, -1))
        return values.long()

    def _multi_target(self, values, labeled, a) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, K) float multi-hot and (T,) bool labeled; (T,) value ids (a single-label file, model configured
        "multi") become one-hot rows, -1 = unlabeled."""
        values = torch.as_tensor(values, device=self.device)
        if values.dim() == 1:
            ids = values.long()
            known = ids >= 0
            hot = torch.zeros(len(ids), a.num_values, device=self.device)
            hot[known, ids[known]] = 1.0
            return hot, known
        known = (torch.as_tensor(labeled).bool() if labeled is not None
                 else torch.ones(values.shape[0], dtype=torch.bool))
        return values.float(), known

    def loss_totals(self, batch: Batch) -> LossTotals:
        """The loss terms' denominators over `batch` (labels and attributes only), for an EffectiveBatch."""
        return self.criterion.totals(self.targets(batch, None), self.cfg.num_queries)

    def forward(self, batch: Batch, generator: torch.Generator | None = None,
                effective: EffectiveBatch | None = None):
        """Training: dict[str, 0-dim Tensor] of weighted losses (`effective`: `batch` is a micro-batch of that
        batch, see SetCriterion.forward). Eval: list of per-image prediction dicts of the config's task (see
        `predict`)."""
        padded = self._padded_images(batch)
        if self.training:
            targets = self.targets(batch, padded.shape[-2:])
            outputs = self.forward_raw(padded, return_aux=self.cfg.loss.deep_supervision)
            losses = self.criterion.weigh(self.criterion(outputs, targets, generator=generator, effective=effective))
            bad = [k for k, v in losses.items() if v.dim() != 0]
            if bad:
                raise RuntimeError(f"training losses must be 0-dim, got shapes for {bad}")
            return losses
        outputs = self.forward_raw(padded)
        return self.postprocess(outputs, batch, tuple(padded.shape[-2:]))

    def _padded_images(self, batch: Batch) -> torch.Tensor:
        if not isinstance(batch, (list, tuple)) or not batch:
            raise TypeError("model(batch) expects a non-empty list of {'image': uint8 (3,H,W), ...} dicts")
        return pad_batch([torch.as_tensor(item["image"], device=self.device) for item in batch], self.cfg)

    @torch.no_grad()
    def predict(self, batch: Batch, tasks: Sequence[str] | None = None) -> list[dict]:
        """Predictions of any of "instance", "semantic", "panoptic" (default: the config's task) from one forward,
        in the model's current mode's weights (call `.eval()` first for dropout-free outputs). Per image, one dict
        holding each task's keys: instance's (masks, scores, labels, ...), "sem_seg", "panoptic_seg" and
        "segments_info" (see postprocess.py, semantic_inference.py, panoptic_inference.py)."""
        padded = self._padded_images(batch)
        return self.postprocess(self.forward_raw(padded), batch, tuple(padded.shape[-2:]), tasks)

    def postprocess(self, outputs: ModelOutput, batch: Batch, padded_size: tuple[int, int],
                    tasks: Sequence[str] | None = None) -> list[dict]:
        """Per image, the `tasks`' predictions merged into one dict (default: the config's task)."""
        tasks = (self.cfg.task,) if tasks is None else ((tasks,) if isinstance(tasks, str) else tuple(tasks))
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"tasks must name some of {TASKS}, got {list(tasks)}")
        multi_label = {a.name: a.threshold for a in self.cfg.attributes if a.multi}
        results = []
        for b, item in enumerate(batch):
            image_size = tuple(int(s) for s in item["image"].shape[-2:])
            output_size = (int(item.get("height", image_size[0])), int(item.get("width", image_size[1])))
            attribute_logits = {k: v[b] for k, v in outputs.attribute_logits.items()}
            result: dict = {}
            if "instance" in tasks:
                result.update(instance_inference(
                    outputs.class_logits[b], attribute_logits, outputs.mask_logits[b], padded_size, image_size,
                    output_size, topk=self.cfg.test_topk, multi_label=multi_label,
                    stuff_classes=self.cfg.stuff_classes,
                ))
            if "semantic" in tasks:
                result.update(semantic_inference(outputs.class_logits[b], outputs.mask_logits[b], padded_size,
                                                 image_size, output_size))
            if "panoptic" in tasks:
                result.update(panoptic_inference(
                    outputs.class_logits[b], attribute_logits, outputs.mask_logits[b], padded_size, image_size,
                    output_size, stuff_classes=self.cfg.stuff_classes,
                    object_mask_threshold=self.cfg.object_mask_threshold,
                    overlap_threshold=self.cfg.overlap_threshold, multi_label=multi_label,
                ))
            results.append(result)
        return results
