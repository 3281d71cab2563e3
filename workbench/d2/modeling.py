"""detectron2 registrations wrapping our plain modules.

META_ARCH_REGISTRY     "MultiTaskMaskFormer": backbone (detectron2's registry, so upstream's ResNet and its
                       R-50.pkl work) -> our MSDeformAttnPixelDecoder -> transformer decoder (below) -> our
                       SetCriterion / instance_inference.
transformer decoders   "MultiTaskMaskedTransformerDecoder": our MultiScaleMaskedTransformerDecoder built from a
                       detectron2 config, registered in Mask2Former's TRANSFORMER_DECODER_REGISTRY when
                       Mask2Former is importable, else in a registry of the same name here. Upstream's name
                       "MultiScaleMaskedTransformerDecoder" (what its YAMLs say) is read as ours.
BACKBONE_REGISTRY      "build_workbench_backbone": our torchvision backbones (MODEL.MULTITASK.BACKBONE.*).

Batched inputs are detectron2's: {"image": (3, H, W) tensor in INPUT.FORMAT, "instances": Instances with
gt_classes, gt_masks (BitMasks or (N, H, W) tensor) and gt_attr_<name> (N,) int64 (-1 = unlabeled)}, plus
"height" / "width" at inference and optionally "ignore" (H, W) bool (crowd / void-by-annotator pixels, left out
of the mask losses; the segment mapper sets it). The instances are whatever the mapper made them: instances,
panoptic segments (stuff included) or one per class present. Training returns the weighted 0-dim losses (keys
as upstream: loss_ce, loss_mask, loss_dice, plus loss_attr_<name>; `_i` for the aux predictions).

Inference returns, per image, one key per MODEL.MASK_FORMER.TEST flag that is on (upstream's keys):
"sem_seg" (C, H, W) class scores; "panoptic_seg" (ids (H, W) int32, segments_info [{"id", "category_id",
"isthing", "score", "query_index", "attributes", "attribute_scores"}]); "instances": Instances with
pred_masks, pred_boxes (from the masks), pred_classes, scores (the ranking score of MODEL.MULTITASK.SCORING),
main_scores (class x mask score, upstream's), class_scores, mask_scores, query_index and per attribute
pred_attr_<name>, pred_attr_<name>_scores, pred_attr_<name>_no_object (things only when PANOPTIC_ON is on).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY, Backbone, ShapeSpec
from detectron2.modeling import build_backbone as build_d2_backbone
from detectron2.structures import BitMasks, ImageList, Instances
from detectron2.utils.registry import Registry
from torch import nn

from workbench.config import ModelConfig
from workbench.d2.translate import UPSTREAM_DECODER_NAME, matcher_from_cfg, model_config_from_cfg, tasks_of_cfg
from workbench.d2.data import check_cfg_matches_datasets
from workbench.engine.scoring import ranking_scores, to_numpy
from workbench.model.backbones import FEATURE_NAMES, FEATURE_STRIDES, backbone_from_config
from workbench.model.decoder import MultiScaleMaskedTransformerDecoder
from workbench.model.meta_arch import build_criterion, build_decoder, build_pixel_decoder
from workbench.model.outputs import ModelOutput
from workbench.model.panoptic_inference import panoptic_inference
from workbench.model.postprocess import instance_inference
from workbench.model.semantic_inference import semantic_inference

try:  # where Mask2Former's decoders live, when it is installed
    from mask2former.modeling.transformer_decoder.maskformer_transformer_decoder import (
        TRANSFORMER_DECODER_REGISTRY,
    )
except ImportError:
    TRANSFORMER_DECODER_REGISTRY = Registry("TRANSFORMER_MODULE")
    TRANSFORMER_DECODER_REGISTRY.__doc__ = "Transformer decoders, built as fn(cfg, in_channels, mask_classification)."

DECODER_NAME = "MultiTaskMaskedTransformerDecoder"

__all__ = ["DECODER_NAME", "MultiTaskMaskFormer", "TRANSFORMER_DECODER_REGISTRY", "WorkbenchBackbone",
           "build_transformer_decoder", "instances_from_prediction", "prediction_from_instances"]


# --- transformer decoder ---------------------------------------------------------------------------------------
def _build_multitask_decoder(cfg, in_channels: int, mask_classification: bool = True) -> MultiScaleMaskedTransformerDecoder:
    """Our decoder with the class head and one K+1 head per MODEL.MULTITASK attribute."""
    if not mask_classification:
        raise ValueError(f"{DECODER_NAME} always classifies its masks (mask_classification=True)")
    return build_decoder(model_config_from_cfg(cfg), in_channels)


if DECODER_NAME not in TRANSFORMER_DECODER_REGISTRY:
    TRANSFORMER_DECODER_REGISTRY._do_register(DECODER_NAME, _build_multitask_decoder)


def build_transformer_decoder(cfg, in_channels: int) -> nn.Module:
    """MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME from the registry; upstream's default name means ours."""
    name = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    if name == UPSTREAM_DECODER_NAME:
        name = DECODER_NAME
    return TRANSFORMER_DECODER_REGISTRY.get(name)(cfg, in_channels, True)


# --- backbone --------------------------------------------------------------------------------------------------
class WorkbenchBackbone(Backbone):
    """One of our backbones (workbench.model.backbones) behind detectron2's Backbone interface."""

    def __init__(self, model_cfg: ModelConfig) -> None:
        super().__init__()
        self.net = backbone_from_config(model_cfg)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(images)

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self.net.out_channels[n], stride=FEATURE_STRIDES[n]) for n in FEATURE_NAMES}


@BACKBONE_REGISTRY.register()
def build_workbench_backbone(cfg, input_shape: ShapeSpec) -> WorkbenchBackbone:
    if input_shape.channels != 3:
        raise ValueError(f"our backbones take 3-channel images, MODEL.PIXEL_MEAN has {input_shape.channels}")
    return WorkbenchBackbone(model_config_from_cfg(cfg))


# --- meta-architecture -----------------------------------------------------------------------------------------
def instances_from_prediction(pred: dict[str, Any], image_size: tuple[int, int], scoring: str,
                              attribute_names: Sequence[str]) -> Instances:
    """`instance_inference`'s dict -> detectron2 Instances (fields in the module docstring)."""
    out = Instances(image_size)
    out.pred_masks = pred["masks"]
    out.pred_boxes = BitMasks(pred["masks"]).get_bounding_boxes()
    out.pred_classes = pred["labels"]
    small = to_numpy({k: v for k, v in pred.items() if k != "masks"})
    out.scores = torch.as_tensor(ranking_scores(small, scoring, attribute_names), dtype=torch.float32,
                                 device=pred["scores"].device)
    out.main_scores = pred["scores"]
    out.class_scores = pred["class_scores"]
    out.mask_scores = pred["mask_scores"]
    out.query_index = pred["query_index"]
    for name in attribute_names:
        out.set(f"pred_attr_{name}", pred["attributes"][name])
        out.set(f"pred_attr_{name}_scores", pred["attribute_scores"][name])
        out.set(f"pred_attr_{name}_no_object", pred["attribute_no_object"][name])
    return out


@META_ARCH_REGISTRY.register()
class MultiTaskMaskFormer(nn.Module):
    """Mask2Former with attribute heads, built from a detectron2 config (see the module docstring).

    Parts have the plain model's names (backbone, pixel_decoder, decoder, criterion), so their state dicts
    move between this and `workbench.model.MultiTaskMask2Former` part by part. Building it checks NUM_CLASSES
    and the attributes against the datasets of DATASETS.TRAIN / TEST already registered.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        check_cfg_matches_datasets(cfg)  # NUM_CLASSES and attributes vs the registered DATASETS.TRAIN / TEST
        self.model_cfg = m = model_config_from_cfg(cfg)
        self.tasks = tasks_of_cfg(cfg)
        # upstream resizes the summed semantic scores instead of the mask logits only when semantic is its sole
        # output and SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE is off
        self.semantic_resize_after = self.tasks.outputs == ("semantic",) and not \
            cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE
        self.scoring = cfg.MODEL.MULTITASK.SCORING
        self.backbone = build_d2_backbone(cfg)
        shapes = self.backbone.output_shape()
        missing = [n for n in FEATURE_NAMES if n not in shapes]
        if missing:
            raise ValueError(f"MODEL.BACKBONE.NAME {cfg.MODEL.BACKBONE.NAME!r} gives features {sorted(shapes)}; "
                             f"the pixel decoder needs {list(FEATURE_NAMES)} (e.g. RESNETS.OUT_FEATURES)")
        self.pixel_decoder = build_pixel_decoder(m, {n: shapes[n].channels for n in FEATURE_NAMES})
        self.decoder = build_transformer_decoder(cfg, m.hidden_dim)
        self.criterion = build_criterion(m, matcher=matcher_from_cfg(cfg, m))
        self.size_divisibility = m.size_divisibility if m.size_divisibility > 0 else self.backbone.size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(m.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(m.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward_raw(self, images: torch.Tensor, return_aux: bool = False) -> ModelOutput:
        """Normalised, padded images (B, 3, H, W) -> ModelOutput."""
        pixel = self.pixel_decoder(self.backbone(images))
        return self.decoder(pixel.multi_scale_features, pixel.mask_features, return_aux=return_aux)

    def preprocess(self, batched_inputs: Sequence[dict]) -> ImageList:
        """Normalise each image, then pad to SIZE_DIVISIBILITY with zeros (= the mean colour), as upstream."""
        images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.size_divisibility)

    def prepare_targets(self, batched_inputs: Sequence[dict], padded_size: tuple[int, int]) -> list[dict]:
        targets = []
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise KeyError(f"batched_inputs[{i}] has no 'instances' (needed in training mode)")
            inst = x["instances"].to(self.device)
            masks = inst.gt_masks.tensor if isinstance(inst.gt_masks, BitMasks) else inst.gt_masks
            padded = masks.new_zeros((masks.shape[0], *padded_size), dtype=torch.bool)
            padded[:, : masks.shape[-2], : masks.shape[-1]] = masks.bool()
            attributes = {}
            for a in self.model_cfg.attributes:
                field = f"gt_attr_{a.name}"
                if not inst.has(field):
                    raise KeyError(f"batched_inputs[{i}]['instances'] has no {field!r}: use "
                                   f"workbench.d2.MultiTaskDatasetMapper (detectron2's mappers drop attributes)")
                attributes[a.name] = inst.get(field).long()
            target = {"labels": inst.gt_classes.long(), "masks": padded, "attributes": attributes}
            if x.get("ignore") is not None:  # crowd / annotator-ignored pixels; the padding is not ignored
                ignore = torch.as_tensor(x["ignore"], device=self.device).bool()
                target["ignore"] = ignore.new_zeros(padded_size)
                target["ignore"][: ignore.shape[-2], : ignore.shape[-1]] = ignore
            targets.append(target)
        return targets

    def forward(self, batched_inputs: Sequence[dict], generator: torch.Generator | None = None):
        """Training: dict of weighted 0-dim losses. Eval: [{"instances": Instances}] at each input's
        "height" x "width". `generator` drives the point sampling (reproducible losses)."""
        images = self.preprocess(batched_inputs)
        padded_size = tuple(images.tensor.shape[-2:])
        if self.training:
            outputs = self.forward_raw(images.tensor, return_aux=self.model_cfg.loss.deep_supervision)
            targets = self.prepare_targets(batched_inputs, padded_size)
            return self.criterion.weigh(self.criterion(outputs, targets, generator=generator))
        outputs = self.forward_raw(images.tensor)
        return [self.postprocess(outputs, b, padded_size, tuple(image_size),
                                 (int(x.get("height", image_size[0])), int(x.get("width", image_size[1]))))
                for b, (x, image_size) in enumerate(zip(batched_inputs, images.image_sizes))]

    def postprocess(self, outputs: ModelOutput, b: int, padded_size: tuple[int, int], image_size: tuple[int, int],
                    output_size: tuple[int, int]) -> dict[str, Any]:
        """Image b's outputs of the TEST flags that are on (module docstring), with our inference functions."""
        m, result = self.model_cfg, {}
        class_logits, mask_logits = outputs.class_logits[b], outputs.mask_logits[b]
        attribute_logits = {k: v[b] for k, v in outputs.attribute_logits.items()}
        if "semantic" in self.tasks.outputs:
            if self.semantic_resize_after:
                scores = semantic_inference(class_logits, mask_logits, padded_size, image_size, image_size)["sem_seg"]
                if tuple(image_size) != tuple(output_size):
                    scores = F.interpolate(scores[None], size=output_size, mode="bilinear", align_corners=False)[0]
                result["sem_seg"] = scores
            else:
                result["sem_seg"] = semantic_inference(class_logits, mask_logits, padded_size, image_size,
                                                       output_size)["sem_seg"]
        if "panoptic" in self.tasks.outputs:
            pred = panoptic_inference(class_logits, attribute_logits, mask_logits, padded_size, image_size,
                                      output_size, stuff_classes=m.stuff_classes,
                                      object_mask_threshold=m.object_mask_threshold,
                                      overlap_threshold=m.overlap_threshold)
            result["panoptic_seg"] = (pred["panoptic_seg"], pred["segments_info"])
        if "instance" in self.tasks.outputs:
            pred = instance_inference(class_logits, attribute_logits, mask_logits, padded_size, image_size,
                                      output_size, topk=m.test_topk,
                                      stuff_classes=m.stuff_classes if self.tasks.things_only_instances else ())
            result["instances"] = instances_from_prediction(pred, output_size, self.scoring, m.attribute_names)
        return result


def prediction_from_instances(instances: Instances, attribute_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The inverse of `instances_from_prediction` (numpy, CPU), for `workbench.engine.evaluate`."""
    inst = instances.to("cpu")
    pred = {"masks": inst.pred_masks, "scores": inst.main_scores, "labels": inst.pred_classes,
            "class_scores": inst.class_scores, "mask_scores": inst.mask_scores, "query_index": inst.query_index,
            "attributes": {n: inst.get(f"pred_attr_{n}") for n in attribute_names},
            "attribute_scores": {n: inst.get(f"pred_attr_{n}_scores") for n in attribute_names},
            "attribute_no_object": {n: inst.get(f"pred_attr_{n}_no_object") for n in attribute_names}}
    return to_numpy(pred)
