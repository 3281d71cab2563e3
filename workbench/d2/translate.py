"""detectron2 CfgNode -> our `ModelConfig` and matcher (the keys are documented in config.py).

Its own module so that config.py (keys; registers modeling.py's classes) and modeling.py (builds from a cfg)
both import it without importing each other.
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN
from detectron2.data import DatasetCatalog, MetadataCatalog

from workbench.config import AttributeSpec, LossConfig, ModelConfig
from workbench.d2.tasks import TaskSet, tasks_from_flags
from workbench.engine.scoring import SCORING_MODES
from workbench.model.backbones import BACKBONE_NAMES, NORMS
from workbench.model.matcher import HungarianMatcher

__all__ = ["UPSTREAM_DECODER_NAME", "attribute_cost_weights", "matcher_from_cfg", "model_config_from_cfg",
           "stuff_classes_from_metadata", "tasks_of_cfg"]

UPSTREAM_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"  # read as ours: same decoder plus attribute heads


def _per_attribute(values, names, key: str, default: float) -> list[float]:
    if len(values) == 0:
        return [default] * len(names)
    if len(values) != len(names):
        raise ValueError(f"MODEL.MULTITASK.{key} has {len(values)} entries for {len(names)} ATTRIBUTE_NAMES "
                         f"{list(names)}; give one per attribute or leave it empty")
    return [float(v) for v in values]


def _attributes(cfg: CN) -> tuple[AttributeSpec, ...]:
    mt = cfg.MODEL.MULTITASK
    names, vocabularies = list(mt.ATTRIBUTE_NAMES), list(mt.ATTRIBUTE_VALUES)
    if len(vocabularies) != len(names):
        raise ValueError(f"MODEL.MULTITASK.ATTRIBUTE_VALUES has {len(vocabularies)} vocabularies for "
                         f"{len(names)} ATTRIBUTE_NAMES {names}; expected one list of value names per attribute")
    weights = _per_attribute(mt.ATTRIBUTE_LOSS_WEIGHTS, names, "ATTRIBUTE_LOSS_WEIGHTS", 1.0)
    no_object = _per_attribute(mt.ATTRIBUTE_NO_OBJECT_WEIGHTS, names, "ATTRIBUTE_NO_OBJECT_WEIGHTS", 0.1)
    return tuple(AttributeSpec(n, tuple(v), weight=w, no_object_weight=z)
                 for n, v, w, z in zip(names, vocabularies, weights, no_object))


def _check(condition: bool, key: str, value, expected: str) -> None:
    if not condition:
        raise ValueError(f"{key} = {value!r} is not supported by the multi-task adapter: expected {expected}")


def tasks_of_cfg(cfg: CN) -> TaskSet:
    """MODEL.MASK_FORMER.TEST's three flags as our task and output set (workbench/d2/tasks.py)."""
    t = cfg.MODEL.MASK_FORMER.TEST
    return tasks_from_flags(t.INSTANCE_ON, t.SEMANTIC_ON, t.PANOPTIC_ON)


def stuff_classes_from_metadata(cfg: CN) -> tuple[int, ...]:
    """The stuff class indices of the first registered dataset of DATASETS.TEST, then TRAIN, whose metadata
    follows Mask2Former's panoptic convention (`stuff_classes` = every class, in model order, and
    `thing_dataset_id_to_contiguous_id` = the things): the classes that are no thing's. () when no such dataset
    is registered (instance metadata, or none yet): every class is then a thing, as in instance segmentation."""
    registered = set(DatasetCatalog.list())
    for name in [*cfg.DATASETS.TEST, *cfg.DATASETS.TRAIN]:
        if name not in registered:
            continue
        meta = MetadataCatalog.get(name)
        classes, things = getattr(meta, "stuff_classes", None), getattr(meta, "thing_dataset_id_to_contiguous_id", None)
        if classes is None or things is None:
            continue
        if len(classes) != cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            raise ValueError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}, but dataset "
                             f"{name!r} (in DATASETS) has {len(classes)} classes: set MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                             f"{len(classes)} (`cfg.merge_from_list(workbench.d2.data.multitask_keys_from_dataset("
                             f"{name!r}))` sets it)")
        thing_labels = set(things.values())
        return tuple(c for c in range(len(classes)) if c not in thing_labels)
    return ()


def model_config_from_cfg(cfg: CN) -> ModelConfig:
    """The `ModelConfig` a detectron2 config describes (keys in this module's docstring)."""
    mf, head, mt = cfg.MODEL.MASK_FORMER, cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MULTITASK
    _check(head.CONVS_DIM == mf.HIDDEN_DIM, "MODEL.SEM_SEG_HEAD.CONVS_DIM", head.CONVS_DIM,
           f"MODEL.MASK_FORMER.HIDDEN_DIM ({mf.HIDDEN_DIM}): our pixel decoder works at the hidden width")
    _check(head.PIXEL_DECODER_NAME == "MSDeformAttnPixelDecoder", "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME",
           head.PIXEL_DECODER_NAME, "'MSDeformAttnPixelDecoder'")
    _check(list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES) == ["res3", "res4", "res5"],
           "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES",
           list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES), "['res3', 'res4', 'res5']")
    _check(head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS == mf.NHEADS,
           "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS,
           f"MODEL.MASK_FORMER.NHEADS ({mf.NHEADS})")
    _check(head.COMMON_STRIDE == 4, "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", head.COMMON_STRIDE, "4")
    _check(head.NORM == "GN", "MODEL.SEM_SEG_HEAD.NORM", head.NORM, "'GN'")
    _check(not mf.PRE_NORM, "MODEL.MASK_FORMER.PRE_NORM", mf.PRE_NORM, "False (post-norm decoder layers)")
    _check(mf.TRANSFORMER_IN_FEATURE == "multi_scale_pixel_decoder", "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE",
           mf.TRANSFORMER_IN_FEATURE, "'multi_scale_pixel_decoder'")
    tasks = tasks_of_cfg(cfg)
    _check(mf.DEC_LAYERS >= 2, "MODEL.MASK_FORMER.DEC_LAYERS", mf.DEC_LAYERS,
           ">= 2 (upstream counts the prediction from the learnable queries as a layer)")
    _check(mt.SCORING in SCORING_MODES, "MODEL.MULTITASK.SCORING", mt.SCORING, f"one of {SCORING_MODES}")
    _check(mt.BACKBONE.NAME in BACKBONE_NAMES, "MODEL.MULTITASK.BACKBONE.NAME", mt.BACKBONE.NAME,
           f"one of {BACKBONE_NAMES}")
    _check(mt.BACKBONE.NORM in NORMS, "MODEL.MULTITASK.BACKBONE.NORM", mt.BACKBONE.NORM, f"one of {NORMS}")
    return ModelConfig(
        num_classes=head.NUM_CLASSES,
        attributes=_attributes(cfg),
        backbone=mt.BACKBONE.NAME,
        pretrained_backbone=bool(mt.BACKBONE.PRETRAINED),
        backbone_norm=mt.BACKBONE.NORM,
        backbone_window_size=int(mt.BACKBONE.WINDOW_SIZE),
        backbone_drop_path_rate=float(mt.BACKBONE.DROP_PATH_RATE),
        hidden_dim=mf.HIDDEN_DIM,
        num_queries=mf.NUM_OBJECT_QUERIES,
        nheads=mf.NHEADS,
        dim_feedforward=mf.DIM_FEEDFORWARD,
        dec_layers=mf.DEC_LAYERS - 1,
        enc_layers=head.TRANSFORMER_ENC_LAYERS,
        enc_dim_feedforward=1024,  # upstream fixes the deformable encoder's FFN at 1024 (no config key)
        enc_n_points=head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
        mask_dim=head.MASK_DIM,
        dropout=mf.DROPOUT,
        size_divisibility=mf.SIZE_DIVISIBILITY,
        test_topk=cfg.TEST.DETECTIONS_PER_IMAGE,
        task=tasks.task,
        stuff_classes=stuff_classes_from_metadata(cfg),
        object_mask_threshold=float(mf.TEST.OBJECT_MASK_THRESHOLD),
        overlap_threshold=float(mf.TEST.OVERLAP_THRESHOLD),
        pixel_mean=tuple(float(v) for v in cfg.MODEL.PIXEL_MEAN),
        pixel_std=tuple(float(v) for v in cfg.MODEL.PIXEL_STD),
        loss=LossConfig(
            class_weight=mf.CLASS_WEIGHT,
            mask_weight=mf.MASK_WEIGHT,
            dice_weight=mf.DICE_WEIGHT,
            no_object_weight=mf.NO_OBJECT_WEIGHT,
            num_points=mf.TRAIN_NUM_POINTS,
            oversample_ratio=mf.OVERSAMPLE_RATIO,
            importance_sample_ratio=mf.IMPORTANCE_SAMPLE_RATIO,
            deep_supervision=mf.DEEP_SUPERVISION,
        ),
    )


def attribute_cost_weights(cfg: CN, model_cfg: ModelConfig) -> dict[str, float]:
    """Matcher cost per attribute: ATTRIBUTE_COST_WEIGHTS, or each attribute's loss weight when empty."""
    names = model_cfg.attribute_names
    default = [a.weight * model_cfg.attribute_cost_weight for a in model_cfg.attributes]
    costs = cfg.MODEL.MULTITASK.ATTRIBUTE_COST_WEIGHTS
    values = default if len(costs) == 0 else _per_attribute(costs, names, "ATTRIBUTE_COST_WEIGHTS", 1.0)
    return dict(zip(names, values))


def matcher_from_cfg(cfg: CN, model_cfg: ModelConfig) -> HungarianMatcher:
    """Upstream's matcher costs (the loss weights) plus one cost per attribute."""
    return HungarianMatcher(cost_class=model_cfg.loss.class_weight, cost_mask=model_cfg.loss.mask_weight,
                            cost_dice=model_cfg.loss.dice_weight, cost_attributes=attribute_cost_weights(cfg, model_cfg),
                            num_points=model_cfg.loss.num_points)
