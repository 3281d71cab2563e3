"""detectron2 config keys: upstream Mask2Former's (the ones our adapter reads) and ours (MODEL.MULTITASK).

`model_config_from_cfg(cfg)` (translate.py, re-exported here) is the one place a detectron2 CfgNode becomes
our `ModelConfig`. Upstream keys:

honoured      MODEL.SEM_SEG_HEAD.NUM_CLASSES, MASK_DIM, TRANSFORMER_ENC_LAYERS,
              DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS;
              MODEL.MASK_FORMER.HIDDEN_DIM, NUM_OBJECT_QUERIES, NHEADS, DIM_FEEDFORWARD, DROPOUT,
              DEC_LAYERS (upstream counts the prediction from the learnable queries: ours = DEC_LAYERS - 1),
              SIZE_DIVISIBILITY, DEEP_SUPERVISION, CLASS_WEIGHT, MASK_WEIGHT, DICE_WEIGHT, NO_OBJECT_WEIGHT,
              TRAIN_NUM_POINTS, OVERSAMPLE_RATIO, IMPORTANCE_SAMPLE_RATIO, TRANSFORMER_DECODER_NAME;
              MODEL.PIXEL_MEAN, PIXEL_STD, BACKBONE.NAME (any detectron2 backbone with res2..res5), WEIGHTS;
              MASK_FORMER.TEST.INSTANCE_ON / SEMANTIC_ON / PANOPTIC_ON (our task and the outputs per image,
              any combination but all off: workbench/d2/tasks.py), OBJECT_MASK_THRESHOLD, OVERLAP_THRESHOLD
              (panoptic), SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE (semantic only: resize the summed scores
              instead of the mask logits, as upstream); stuff classes from the registered dataset's metadata
              (`stuff_classes` = all classes, `thing_dataset_id_to_contiguous_id` = things, Mask2Former's
              convention);
              TEST.DETECTIONS_PER_IMAGE (top-k per image); INPUT.DATASET_MAPPER_NAME ("coco_instance_lsj" /
              "coco_panoptic_lsj": IMAGE_SIZE, MIN_SCALE, MAX_SCALE, RANDOM_FLIP; "coco_instance" /
              "mask_former_panoptic" / "mask_former_semantic": MIN_SIZE_TRAIN, MAX_SIZE_TRAIN,
              MIN_SIZE_TRAIN_SAMPLING, CROP.* incl. SINGLE_CATEGORY_MAX_AREA for the segment mappers; the
              name also picks the targets: instances, one per panoptic segment, one per class present),
              INPUT.FORMAT, MIN_SIZE_TEST, MAX_SIZE_TEST;
              SOLVER.OPTIMIZER, BACKBONE_MULTIPLIER, WEIGHT_DECAY_EMBED, CLIP_GRADIENTS (incl. "full_model").
checked       values our modules do not implement are errors, not silently different models: SEM_SEG_HEAD.
              CONVS_DIM must equal HIDDEN_DIM, PIXEL_DECODER_NAME "MSDeformAttnPixelDecoder",
              DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES res3-res5, DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS =
              NHEADS, COMMON_STRIDE 4, NORM "GN"; MASK_FORMER.PRE_NORM False, TRANSFORMER_IN_FEATURE
              "multi_scale_pixel_decoder", TEST flags not all off; INPUT.COLOR_AUG_SSD False while the model
              predicts attributes (colour may be one; upstream's ADE20K YAMLs set it True: add
              `INPUT.COLOR_AUG_SSD False`); without attributes it is upstream's ColorAugSSD (needs OpenCV).
accepted      so upstream YAMLs merge, without effect: MASK_FORMER.ENC_LAYERS, ENFORCE_INPUT_PROJ,
              SEM_SEG_HEAD.NAME / IGNORE_VALUE (ours: 255) / LOSS_WEIGHT / IN_FEATURES,
              INPUT.SIZE_DIVISIBILITY (our model pads to SIZE_DIVISIBILITY), MODEL.RESNETS.STEM_TYPE /
              RES5_MULTI_GRID (DeepLab's keys, which upstream's COCO YAMLs set and detectron2's ResNet ignores).
"""
from __future__ import annotations

from detectron2.config import CfgNode as CN

from workbench.config import ModelConfig
from workbench.d2.tasks import flags_for_task
# re-exported: the translation lives below this module and modeling.py, which both use it
from workbench.d2.translate import UPSTREAM_DECODER_NAME, attribute_cost_weights, matcher_from_cfg, model_config_from_cfg

__all__ = ["add_maskformer2_keys", "add_multitask_config", "attribute_cost_weights", "model_config_from_cfg",
           "matcher_from_cfg", "set_model_keys"]


def add_maskformer2_keys(cfg: CN) -> None:
    """Add the keys upstream Mask2Former's configs set (COCO instance and panoptic, ADE20K semantic), with
    upstream's defaults, so that `cfg.merge_from_file("maskformer2_R50_bs16_50ep.yaml")` works without Mask2Former
    installed. Which are
    honoured is listed in this module's docstring. Keys detectron2 already has are left alone."""
    cfg.INPUT.DATASET_MAPPER_NAME = "coco_instance_lsj"
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    cfg.INPUT.SIZE_DIVISIBILITY = -1
    cfg.INPUT.IMAGE_SIZE = 1024
    cfg.INPUT.MIN_SCALE = 0.1
    cfg.INPUT.MAX_SCALE = 2.0

    # upstream's train_net adds DeepLab's keys first; its COCO YAMLs set these two ("not used" there too)
    if "STEM_TYPE" not in cfg.MODEL.RESNETS:
        cfg.MODEL.RESNETS.STEM_TYPE = "deeplab"
    if "RES5_MULTI_GRID" not in cfg.MODEL.RESNETS:
        cfg.MODEL.RESNETS.RES5_MULTI_GRID = [1, 2, 4]

    if "POLY_LR_POWER" not in cfg.SOLVER:  # DeepLab's WarmupPolyLR keys (upstream's ADE20K YAMLs use it)
        cfg.SOLVER.POLY_LR_POWER = 0.9
        cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 0.0
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.1

    mf = cfg.MODEL.MASK_FORMER = CN()
    mf.DEEP_SUPERVISION = True
    mf.NO_OBJECT_WEIGHT = 0.1
    mf.CLASS_WEIGHT = 1.0
    mf.DICE_WEIGHT = 1.0
    mf.MASK_WEIGHT = 20.0
    mf.NHEADS = 8
    mf.DROPOUT = 0.1
    mf.DIM_FEEDFORWARD = 2048
    mf.ENC_LAYERS = 0
    mf.DEC_LAYERS = 6
    mf.PRE_NORM = False
    mf.HIDDEN_DIM = 256
    mf.NUM_OBJECT_QUERIES = 100
    mf.TRANSFORMER_IN_FEATURE = "res5"
    mf.ENFORCE_INPUT_PROJ = False
    mf.SIZE_DIVISIBILITY = 32
    mf.TRANSFORMER_DECODER_NAME = UPSTREAM_DECODER_NAME
    mf.TRAIN_NUM_POINTS = 112 * 112
    mf.OVERSAMPLE_RATIO = 3.0
    mf.IMPORTANCE_SAMPLE_RATIO = 0.75
    mf.TEST = CN()
    mf.TEST.SEMANTIC_ON = True
    mf.TEST.INSTANCE_ON = False
    mf.TEST.PANOPTIC_ON = False
    mf.TEST.OBJECT_MASK_THRESHOLD = 0.0
    mf.TEST.OVERLAP_THRESHOLD = 0.0
    mf.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False

    head = cfg.MODEL.SEM_SEG_HEAD
    head.MASK_DIM = 256
    head.TRANSFORMER_ENC_LAYERS = 0
    head.PIXEL_DECODER_NAME = "BasePixelDecoder"
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = 8


def add_multitask_config(cfg: CN) -> None:
    """Add our keys under MODEL.MULTITASK (and upstream's via `add_maskformer2_keys` when cfg lacks them), set
    the model keys to `ModelConfig.coco_r50()` (META_ARCHITECTURE "MultiTaskMaskFormer", our ResNet-50 via
    "build_workbench_backbone", RGB input), and register our meta-architecture, transformer decoder and
    backbone in detectron2's registries. So `get_cfg(); add_multitask_config(cfg); build_model(cfg)` builds the
    multi-task coco_r50 model as is, never detectron2's default R-CNN; a YAML merged afterwards (upstream's
    COCO instance YAML as `_BASE_` plus META_ARCHITECTURE "MultiTaskMaskFormer") overrides these defaults.

    MODEL.MULTITASK:
      ATTRIBUTE_NAMES              ["color", "size"]; empty = no attributes (then the model is Mask2Former)
      ATTRIBUTE_VALUES             one vocabulary per name: [["red", "green", "blue"], ["small", "large"]]
      ATTRIBUTE_LOSS_WEIGHTS       one per name; empty = 1.0 each
      ATTRIBUTE_COST_WEIGHTS       matcher cost per name; empty = the loss weights (as upstream uses
                                   CLASS_WEIGHT for both); 0 switches that attribute's cost off
      ATTRIBUTE_NO_OBJECT_WEIGHTS  cross-entropy weight of each head's "no object" slot; empty = 0.1 each
      SCORING                      "main" | "product" | "mean": the score instances are ranked by (see
                                   workbench.config.EvalConfig) -- Instances.scores and so COCOEvaluator
      BACKBONE.NAME / PRETRAINED / NORM   our backbones (workbench.model.backbones.BACKBONE_NAMES: ResNet,
                                   MobileNetV3, Swin, tiny; weights from the local torch hub cache; "auto" |
                                   "bn" | "frozen_bn"), used when MODEL.BACKBONE.NAME is "build_workbench_backbone"
      BACKBONE.WINDOW_SIZE / DROP_PATH_RATE   Swin only (upstream's MODEL.SWIN.WINDOW_SIZE / DROP_PATH_RATE):
                                   7 and 0.0 otherwise
    `workbench.d2.data.multitask_keys_from_dataset(name)` gives NUM_CLASSES and the vocabularies of a
    registered dataset.
    """
    if "MASK_FORMER" not in cfg.MODEL:
        add_maskformer2_keys(cfg)
    mt = cfg.MODEL.MULTITASK = CN()
    mt.ATTRIBUTE_NAMES = []
    mt.ATTRIBUTE_VALUES = []
    mt.ATTRIBUTE_LOSS_WEIGHTS = []
    mt.ATTRIBUTE_COST_WEIGHTS = []
    mt.ATTRIBUTE_NO_OBJECT_WEIGHTS = []
    mt.SCORING = "main"
    mt.BACKBONE = CN()
    mt.BACKBONE.NAME = "resnet50"
    mt.BACKBONE.PRETRAINED = False
    mt.BACKBONE.NORM = "auto"
    mt.BACKBONE.WINDOW_SIZE = 7
    mt.BACKBONE.DROP_PATH_RATE = 0.0
    set_model_keys(cfg, ModelConfig.coco_r50())
    import workbench.d2.modeling  # noqa: F401  -- registers MultiTaskMaskFormer, the decoder and the backbone


def set_model_keys(cfg: CN, m: ModelConfig) -> None:
    """Write `m` into cfg's model keys: the inverse of `model_config_from_cfg` (it returns `m` again), with
    META_ARCHITECTURE "MultiTaskMaskFormer" and our backbone (MODEL.BACKBONE.NAME "build_workbench_backbone").
    Keys without a ModelConfig field (enc_dim_feedforward, attribute_cost_weight, boundary loss) are upstream's
    fixed values, so `m` must keep those at their defaults. `m.task` turns on that one TEST flag (add others by
    hand for more outputs); `m.stuff_classes` has no key: the registered dataset's metadata gives them
    (translate.stuff_classes_from_metadata), so register the dataset before building the model."""
    fixed = ModelConfig(num_classes=m.num_classes)
    for name in ("enc_dim_feedforward", "attribute_cost_weight"):
        if getattr(m, name) != getattr(fixed, name):
            raise ValueError(f"ModelConfig.{name} = {getattr(m, name)} has no detectron2 key (fixed at "
                             f"{getattr(fixed, name)} there)")
    if m.loss.boundary_weight != 0:
        raise ValueError("ModelConfig.loss.boundary_weight has no detectron2 key (the boundary loss is off there)")
    cfg.MODEL.META_ARCHITECTURE = "MultiTaskMaskFormer"
    cfg.MODEL.BACKBONE.NAME = "build_workbench_backbone"
    cfg.MODEL.PIXEL_MEAN = list(m.pixel_mean)
    cfg.MODEL.PIXEL_STD = list(m.pixel_std)
    cfg.INPUT.FORMAT = "RGB"  # our backbones and pixel_mean are RGB
    mt = cfg.MODEL.MULTITASK
    mt.ATTRIBUTE_NAMES = [a.name for a in m.attributes]
    mt.ATTRIBUTE_VALUES = [list(a.values) for a in m.attributes]
    mt.ATTRIBUTE_LOSS_WEIGHTS = [a.weight for a in m.attributes]
    mt.ATTRIBUTE_COST_WEIGHTS = []
    mt.ATTRIBUTE_NO_OBJECT_WEIGHTS = [a.no_object_weight for a in m.attributes]
    mt.BACKBONE.NAME = m.backbone
    mt.BACKBONE.PRETRAINED = m.pretrained_backbone
    mt.BACKBONE.NORM = m.backbone_norm
    mt.BACKBONE.WINDOW_SIZE = m.backbone_window_size
    mt.BACKBONE.DROP_PATH_RATE = m.backbone_drop_path_rate
    head = cfg.MODEL.SEM_SEG_HEAD
    head.NUM_CLASSES = m.num_classes
    head.CONVS_DIM = m.hidden_dim
    head.MASK_DIM = m.mask_dim
    head.NORM = "GN"
    head.COMMON_STRIDE = 4
    head.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    head.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = m.enc_n_points
    head.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS = m.nheads
    head.TRANSFORMER_ENC_LAYERS = m.enc_layers
    mf = cfg.MODEL.MASK_FORMER
    mf.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    mf.HIDDEN_DIM = m.hidden_dim
    mf.NUM_OBJECT_QUERIES = m.num_queries
    mf.NHEADS = m.nheads
    mf.DIM_FEEDFORWARD = m.dim_feedforward
    mf.DEC_LAYERS = m.dec_layers + 1  # upstream counts the prediction from the learnable queries
    mf.DROPOUT = m.dropout
    mf.PRE_NORM = False
    mf.SIZE_DIVISIBILITY = m.size_divisibility
    mf.DEEP_SUPERVISION = m.loss.deep_supervision
    mf.CLASS_WEIGHT = m.loss.class_weight
    mf.MASK_WEIGHT = m.loss.mask_weight
    mf.DICE_WEIGHT = m.loss.dice_weight
    mf.NO_OBJECT_WEIGHT = m.loss.no_object_weight
    mf.TRAIN_NUM_POINTS = m.loss.num_points
    mf.OVERSAMPLE_RATIO = m.loss.oversample_ratio
    mf.IMPORTANCE_SAMPLE_RATIO = m.loss.importance_sample_ratio
    mf.TEST.INSTANCE_ON, mf.TEST.SEMANTIC_ON, mf.TEST.PANOPTIC_ON = flags_for_task(m.task)
    mf.TEST.OBJECT_MASK_THRESHOLD = m.object_mask_threshold
    mf.TEST.OVERLAP_THRESHOLD = m.overlap_threshold
    cfg.TEST.DETECTIONS_PER_IMAGE = m.test_topk
