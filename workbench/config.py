"""Frozen configuration dataclasses.

Every field is read somewhere (tests/test_config.py checks that each field name appears in the package
outside this file). Presets: `ModelConfig.tiny()` for tests and `ModelConfig.coco_r50()`, `coco_r101()`,
`coco_swin_t()`/`_s`/`_b`/`_l` with upstream Mask2Former's COCO instance-segmentation values.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

__all__ = ["ATTRIBUTE_KINDS", "TASKS", "AttributeSpec", "AugmentConfig", "DataConfig", "LogConfig", "LossConfig",
           "ModelConfig", "SolverConfig"]


ATTRIBUTE_KINDS = ("single", "multi")
# model/backbones/build.py's BACKBONE_NAMES (tests/test_cli_robustness.py keeps them equal): checked here, when a config
# is read, so a typo is a config error before any data is read or any folder made
BACKBONES = ("resnet50", "resnet101", "mobilenet_v3_large", "tiny", "swin_t", "swin_s", "swin_b", "swin_l")
DEVICE_SPEC = re.compile(r"auto|cpu|cuda(?::\d+)?")  # what device.resolve_device reads (any case, spaces around)
CHECKPOINT_ACTIVATIONS = ("none", "backbone", "decoder", "all")
MULTI_LABEL_LOSSES = ("bce", "focal")
TASKS = ("instance", "semantic", "panoptic")  # what `model(batch)` returns in eval mode (model/meta_arch.py)


@dataclass(frozen=True)
class AttributeSpec:
    """One independent per-instance label group (e.g. colour).

    kind "single": one value out of K, a K+1-way softmax head (index K = "no object").
    kind "multi": any subset of the K values (e.g. Fashionpedia's textile patterns), K sigmoid logits and no
    no-object slot (the class head says whether there is an object); at inference the values whose
    probability exceeds `threshold` are the predicted set.

    `weight` scales both its loss and its matcher cost (as upstream uses the class weight for both);
    `no_object_weight` is the cross-entropy weight of a single group's "no object" slot (index K);
    `loss` is a multi group's criterion, "bce" | "focal" ("" = `LossConfig.multi_label_loss`).
    """

    name: str
    values: tuple[str, ...]
    weight: float = 1.0
    no_object_weight: float = 0.1
    kind: str = "single"
    threshold: float = 0.5
    loss: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"AttributeSpec.name must be an identifier, got {self.name!r}")
        object.__setattr__(self, "values", tuple(self.values))
        if len(self.values) == 0:
            raise ValueError(f"attribute {self.name!r}: values must not be empty")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"attribute {self.name!r}: duplicate values in {self.values}")
        if self.weight < 0 or self.no_object_weight < 0:
            raise ValueError(f"attribute {self.name!r}: weights must be >= 0")
        if self.kind not in ATTRIBUTE_KINDS:
            raise ValueError(f"attribute {self.name!r}: kind must be one of {ATTRIBUTE_KINDS}, got {self.kind!r}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"attribute {self.name!r}: threshold must be in (0, 1), got {self.threshold!r}")
        if self.loss not in ("", *MULTI_LABEL_LOSSES):
            raise ValueError(f"attribute {self.name!r}: loss must be '' (LossConfig's) or one of "
                             f"{MULTI_LABEL_LOSSES}, got {self.loss!r}")

    @property
    def num_values(self) -> int:
        """K: the real values. Single heads have K+1 outputs (index K is "no object"), multi heads K."""
        return len(self.values)

    @property
    def multi(self) -> bool:
        return self.kind == "multi"

    @property
    def num_logits(self) -> int:
        """Outputs of this group's head: K+1 (single) or K (multi)."""
        return self.num_values if self.multi else self.num_values + 1


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and point sampling, Mask2Former's defaults."""

    class_weight: float = 2.0
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    deep_supervision: bool = True
    boundary_weight: float = 0.0  # boundary-aware mask loss (model/boundary_loss.py); 0 = off, term not computed
    multi_label_loss: str = "bce"  # multi-label attribute groups: "bce" | "focal" (AttributeSpec.loss overrides)
    focal_alpha: float = 0.25  # sigmoid focal loss (Lin et al.) of multi groups: positive-class weight, -1 = none
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        if self.multi_label_loss not in MULTI_LABEL_LOSSES:
            raise ValueError(f"LossConfig.multi_label_loss must be one of {MULTI_LABEL_LOSSES}, "
                             f"got {self.multi_label_loss!r}")
        if not (self.focal_alpha == -1 or 0 <= self.focal_alpha <= 1) or self.focal_gamma < 0:
            raise ValueError("LossConfig.focal_alpha must be in [0, 1] (or -1 = off) and focal_gamma >= 0")
        if self.boundary_weight < 0:
            raise ValueError("LossConfig.boundary_weight must be >= 0 (0 = off)")
        if self.num_points <= 0:
            raise ValueError("LossConfig.num_points must be > 0 (0 points give NaN costs)")
        if self.oversample_ratio < 1:
            raise ValueError("LossConfig.oversample_ratio must be >= 1")
        if not 0 <= self.importance_sample_ratio <= 1:
            raise ValueError("LossConfig.importance_sample_ratio must be in [0, 1]")


_Attributes = Union[Mapping[str, Sequence[str]], Sequence[AttributeSpec]]


def _as_attribute_specs(attributes) -> tuple[AttributeSpec, ...]:
    if isinstance(attributes, Mapping):  # {name: [values]} (single) or {name: {values: [...], kind: multi, ...}}
        return tuple(AttributeSpec(name, **{**values, "values": tuple(values["values"])})
                     if isinstance(values, Mapping) else AttributeSpec(name, tuple(values))
                     for name, values in attributes.items())
    specs = []
    for a in attributes:
        if isinstance(a, AttributeSpec):
            specs.append(a)
        elif isinstance(a, Mapping):
            specs.append(AttributeSpec(**{**a, "values": tuple(a["values"])}))
        else:
            raise TypeError(f"attribute entry must be AttributeSpec or mapping, got {type(a).__name__}")
    return tuple(specs)


@dataclass(frozen=True)
class ModelConfig:
    """The multi-task Mask2Former: architecture, heads and loss weights."""

    num_classes: int
    attributes: tuple[AttributeSpec, ...] = ()
    backbone: str = "resnet50"  # "resnet50" | "resnet101" | "mobilenet_v3_large" | "tiny" | "swin_t" | "swin_s"
    #                             | "swin_b" | "swin_l" (see model/backbones/)
    pretrained_backbone: bool = False  # load torchvision weights from the local cache (never downloads)
    backbone_norm: str = "auto"  # "auto" (frozen BN when pretrained, as upstream) | "bn" | "frozen_bn"; Swin: "auto"
    backbone_window_size: int = 7  # Swin only: attention window (upstream SWIN.WINDOW_SIZE; 12 for its Swin-B/L)
    backbone_drop_path_rate: float = 0.0  # Swin only: stochastic depth at the last block (upstream DROP_PATH_RATE)
    hidden_dim: int = 256
    num_queries: int = 100
    nheads: int = 8
    dim_feedforward: int = 2048
    dec_layers: int = 9  # plus one prediction from the learnable queries before the first layer
    enc_layers: int = 6
    enc_dim_feedforward: int = 1024
    enc_n_points: int = 4
    mask_dim: int = 256
    dropout: float = 0.0
    size_divisibility: int = 32
    attribute_cost_weight: float = 1.0  # scales every attribute's matcher cost; 0 switches them off
    multi_label_cost_weight: float = 1.0  # further scales multi-label groups' matcher costs; 0 switches them off
    test_topk: int = 100  # instances kept per image at inference (top-k over queries x classes)
    # "instance" | "semantic" | "panoptic": the outputs of model(batch) in eval mode; model.predict(batch, tasks)
    # gives any of them from one forward (upstream's INSTANCE_ON / SEMANTIC_ON / PANOPTIC_ON)
    task: str = "instance"
    stuff_classes: tuple[int, ...] = ()  # class indices that are stuff (COCO isthing 0); () = all are things
    object_mask_threshold: float = 0.8  # panoptic: queries whose class score is <= this are dropped (upstream)
    overlap_threshold: float = 0.8  # panoptic: a query keeping < this share of its mask after overlaps is dropped
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    loss: LossConfig = field(default_factory=LossConfig)
    # Mask2Former checkpoint to start training from (workbench/pretrained): upstream .pkl/.pth, a transformers
    # folder or .safetensors; "" = none. Loaded before the first step, never over a resumed run.
    weights: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", _as_attribute_specs(self.attributes))
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate attribute names: {names}")
        if self.num_classes <= 0:
            raise ValueError("num_classes must be > 0")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone {self.backbone!r} is not one of {BACKBONES}")
        if self.num_queries <= 0:
            raise ValueError(f"num_queries must be > 0 (each query predicts one instance), got {self.num_queries}")
        if self.hidden_dim % self.nheads:
            raise ValueError(f"hidden_dim {self.hidden_dim} must be divisible by nheads {self.nheads}")
        if self.dec_layers < 1 or self.enc_layers < 0:
            raise ValueError("dec_layers must be >= 1 and enc_layers >= 0")
        if self.attribute_cost_weight < 0 or self.multi_label_cost_weight < 0:
            raise ValueError("attribute_cost_weight and multi_label_cost_weight must be >= 0")
        if self.backbone_norm not in ("auto", "bn", "frozen_bn"):
            raise ValueError(f"backbone_norm must be 'auto', 'bn' or 'frozen_bn', got {self.backbone_norm!r}")
        if self.backbone_window_size < 1:
            raise ValueError(f"backbone_window_size must be >= 1, got {self.backbone_window_size}")
        if not 0 <= self.backbone_drop_path_rate < 1:
            raise ValueError(f"backbone_drop_path_rate must be in [0, 1), got {self.backbone_drop_path_rate}")
        self._check_task()

    def _check_task(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if isinstance(self.stuff_classes, (str, bytes)) or not isinstance(self.stuff_classes, (list, tuple)):
            raise ValueError(f"stuff_classes must be a list of class indices, got {self.stuff_classes!r}")
        object.__setattr__(self, "stuff_classes", tuple(self.stuff_classes))
        bad = [c for c in self.stuff_classes
               if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"stuff_classes must be class indices in [0, {self.num_classes}) (num_classes), "
                             f"got {bad}")
        if len(set(self.stuff_classes)) != len(self.stuff_classes):
            raise ValueError(f"stuff_classes lists a class twice: {list(self.stuff_classes)}")
        for name in ("object_mask_threshold", "overlap_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")

    @property
    def thing_classes(self) -> tuple[int, ...]:
        """The class indices not in `stuff_classes` (COCO isthing 1)."""
        stuff = set(self.stuff_classes)
        return tuple(c for c in range(self.num_classes) if c not in stuff)

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    def multi_label_loss(self, a: AttributeSpec) -> str:
        """The criterion of multi group `a`: its own `loss`, else `loss.multi_label_loss`."""
        return a.loss or self.loss.multi_label_loss

    def attribute(self, name: str) -> AttributeSpec:
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(f"no attribute {name!r}; known: {list(self.attribute_names)}")

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(
        cls,
        num_classes: int = 3,
        attributes: Mapping[str, Sequence[str]] | Sequence[AttributeSpec] = (),
        **overrides,
    ) -> "ModelConfig":
        """A model that runs a training step in well under a second on CPU (tests, demo)."""
        values = dict(
            num_classes=num_classes,
            attributes=attributes,
            backbone="tiny",
            hidden_dim=32,
            num_queries=10,
            nheads=4,
            dim_feedforward=64,
            dec_layers=2,
            enc_layers=1,
            enc_dim_feedforward=64,
            mask_dim=32,
            test_topk=10,
            loss=LossConfig(num_points=256),
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def _coco_instance(
        cls,
        num_classes: int = 80,
        attributes: Mapping[str, Sequence[str]] | Sequence[AttributeSpec] = (),
        **overrides,
    ) -> "ModelConfig":
        """Upstream's COCO instance-segmentation head (maskformer2_R50_bs16_50ep.yaml, which every COCO instance
        YAML builds on): 100 queries, 9+1 decoder predictions, 6 deformable encoder layers, widths 256/2048/1024."""
        values = dict(
            num_classes=num_classes,
            attributes=attributes,
            backbone="resnet50",
            hidden_dim=256,
            num_queries=100,
            nheads=8,
            dim_feedforward=2048,
            dec_layers=9,
            enc_layers=6,
            enc_dim_feedforward=1024,
            mask_dim=256,
            test_topk=100,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def coco_r50(cls, num_classes: int = 80, attributes: _Attributes = (), **overrides) -> "ModelConfig":
        """Upstream maskformer2_R50_bs16_50ep (COCO instance): 100 queries, 9+1 decoder predictions."""
        return cls._coco_instance(num_classes, attributes, **overrides)

    @classmethod
    def coco_r101(cls, num_classes: int = 80, attributes: _Attributes = (), **overrides) -> "ModelConfig":
        """Upstream maskformer2_R101_bs16_50ep: the R50 model with ResNet-101 (RESNETS.DEPTH 101)."""
        return cls._coco_instance(num_classes, attributes, **{"backbone": "resnet101", **overrides})

    @classmethod
    def coco_swin_t(cls, num_classes: int = 80, attributes: _Attributes = (), **overrides) -> "ModelConfig":
        """Upstream swin/maskformer2_swin_tiny_bs16_50ep: Swin-T (embed 96, depths 2-2-6-2, heads 3-6-12-24),
        window 7, drop path 0.3; head as R50 (100 queries)."""
        return cls._coco_instance(num_classes, attributes, **{
            "backbone": "swin_t", "backbone_window_size": 7, "backbone_drop_path_rate": 0.3, **overrides})

    @classmethod
    def coco_swin_s(cls, num_classes: int = 80, attributes: _Attributes = (), **overrides) -> "ModelConfig":
        """Upstream swin/maskformer2_swin_small_bs16_50ep: Swin-S (embed 96, depths 2-2-18-2, heads 3-6-12-24),
        window 7, drop path 0.3; head as R50 (100 queries)."""
        return cls._coco_instance(num_classes, attributes, **{
            "backbone": "swin_s", "backbone_window_size": 7, "backbone_drop_path_rate": 0.3, **overrides})

    @classmethod
    def coco_swin_b(cls, num_classes: int = 80, attributes: _Attributes = (), **overrides) -> "ModelConfig":
        """Upstream swin/maskformer2_swin_base_IN21k_384_bs16_50ep (and swin_base_384_bs16_50ep, the same model
        from IN-1k weights): Swin-B (embed 128, depths 2-2-18-2, heads 4-8-16-32), window 12, drop path 0.3;
        head as R50 (100 queries). Window 12 means torchvision's window-7 ImageNet Swin-B does not load into it."""
        return cls._coco_instance(num_classes, attributes, **{
            "backbone": "swin_b", "backbone_window_size": 12, "backbone_drop_path_rate": 0.3, **overrides})

    @classmethod
    def coco_swin_l(cls, num_classes: int = 80, attributes: _Attributes = (), **overrides) -> "ModelConfig":
        """Upstream swin/maskformer2_swin_large_IN21k_384_bs16_100ep: Swin-L (embed 192, depths 2-2-18-2, heads
        6-12-24-48), window 12, drop path 0.3, 200 queries (its 100-epoch schedule, MAX_ITER 737500 and STEPS
        655556/710184, is the solver's: set it in SolverConfig)."""
        return cls._coco_instance(num_classes, attributes, **{
            "backbone": "swin_l", "backbone_window_size": 12, "backbone_drop_path_rate": 0.3, "num_queries": 200,
            **overrides})


@dataclass(frozen=True)
class SolverConfig:
    """Optimisation (engine/trainer.py). `base_lr` is for `reference_batch` images per step: with
    `scale_lr` the trainer uses base_lr * batch_size / reference_batch (the linear scaling rule) and prints it.
    Defaults are upstream Mask2Former's COCO schedule (AdamW 1e-4 at batch 16, poly, clip 0.01)."""

    base_lr: float = 1e-4
    reference_batch: int = 16
    batch_size: int = 16
    scale_lr: bool = True
    weight_decay: float = 0.05
    backbone_lr_multiplier: float = 0.1
    # lr x this for the heads your data defines (class head, attribute heads), e.g. > 1 when fine-tuning
    head_lr_multiplier: float = 1.0
    # "none" | "backbone" (backbone frozen) | "trunk" (all but the class and attribute heads frozen): frozen
    # parameters get requires_grad=False and no optimizer state
    freeze: str = "none"
    max_iter: int = 368750
    warmup_iters: int = 10
    warmup_factor: float = 1.0
    schedule: str = "poly"  # "poly" | "step"
    poly_power: float = 0.9
    steps: tuple[int, ...] = (327778, 355092)
    gamma: float = 0.1
    clip_grad_norm: float = 0.01  # upstream clips the full model's gradient norm; 0 = off
    amp: str = "off"  # "off" | "bf16" (CPU or CUDA) | "fp16" (CUDA): autocast; changes the numbers
    checkpoint_period: int = 5000
    log_period: int = 20
    num_workers: int = 0
    keep_checkpoints: int = 2  # last.pt + this many last_step<N>.pt in all; resume falls back to an older one
    compile: bool = False  # torch.compile the backbone and decoder: ~30 s first step, then ~0.97x on the demo
    # gradient accumulation: each optimizer step sums the gradients of this many batches of batch_size, normalised
    # as one batch of batch_size x accumulate (the effective batch: lr rule, warm-up and log use it)
    accumulate: int = 1
    # evaluate on data.val every this many steps (metrics.jsonl, TensorBoard, progress bar) and keep best.pt by
    # best_metric; 0 = only once, at the end
    eval_period: int = 0
    best_metric: str = "segm/AP"  # "segm/AP", "joint/AP", "attribute_accuracy/<name>", ...; panoptic and semantic
    # models: "panoptic/PQ" (their default), "joint_panoptic/PQ", "semantic/mIoU" (their default) ...
    # recompute activations in the backward instead of keeping them (torch.utils.checkpoint): less memory, ~1.3x
    # the step time; "none" | "backbone" (its stages) | "decoder" (pixel-decoder encoder + transformer decoder
    # layers) | "all"
    checkpoint_activations: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        if self.batch_size <= 0 or self.reference_batch <= 0:
            raise ValueError("solver.batch_size and solver.reference_batch must be > 0")
        if not (self.base_lr > 0 and self.max_iter > 0):  # `not >`: a NaN base_lr fails too
            raise ValueError("solver.base_lr and solver.max_iter must be > 0")
        if self.warmup_iters < 0 or self.num_workers < 0:
            raise ValueError(f"solver.warmup_iters and solver.num_workers must be >= 0, got {self.warmup_iters} and "
                             f"{self.num_workers}")
        if self.schedule not in ("poly", "step"):
            raise ValueError(f"solver.schedule must be 'poly' or 'step', got {self.schedule!r}")
        if self.amp not in ("off", "bf16", "fp16"):
            raise ValueError(f"solver.amp must be off|bf16|fp16, got {self.amp!r}")
        if self.freeze not in ("none", "backbone", "trunk"):
            raise ValueError(f"solver.freeze must be 'none', 'backbone' or 'trunk', got {self.freeze!r}")
        if self.head_lr_multiplier < 0 or self.backbone_lr_multiplier < 0:
            raise ValueError("solver.head_lr_multiplier and solver.backbone_lr_multiplier must be >= 0")
        if self.keep_checkpoints < 1:
            raise ValueError(f"solver.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.checkpoint_period <= 0 or self.log_period <= 0:
            raise ValueError("solver.checkpoint_period and solver.log_period must be > 0")
        if isinstance(self.accumulate, bool) or not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise ValueError(f"solver.accumulate must be an integer >= 1 (batches per optimizer step), got "
                             f"{self.accumulate!r}")
        if isinstance(self.eval_period, bool) or not isinstance(self.eval_period, int) or self.eval_period < 0:
            raise ValueError(f"solver.eval_period must be an integer >= 0 (0 = evaluate at the end only), got "
                             f"{self.eval_period!r}")
        if "/" not in self.best_metric:
            raise ValueError(f"solver.best_metric must be '<group>/<name>' as evaluation names it, e.g. 'segm/AP', "
                             f"'joint/AP' or 'attribute_accuracy/<attribute>'; got {self.best_metric!r}")
        if self.checkpoint_activations not in CHECKPOINT_ACTIVATIONS:
            raise ValueError(f"solver.checkpoint_activations must be one of {CHECKPOINT_ACTIVATIONS}, got "
                             f"{self.checkpoint_activations!r}")

    @property
    def effective_batch(self) -> int:
        """Images per optimizer step over all processes: batch_size (over all processes) x accumulate."""
        return self.batch_size * self.accumulate


@dataclass(frozen=True)
class DataConfig:
    """Where the COCO-with-attributes files are. Image `file_name`s are relative to `image_root` for both
    splits; empty = each JSON's own folder (where `workbench data convert` puts them). `val` may be empty.

    keep_empty: train on images without instances too (every query learns "no object" there: negatives teach
    the model not to fire on background). Upstream filters them (`FILTER_EMPTY_ANNOTATIONS`); False does that.

    cache_images: decode every training image once, when the dataset is built, and keep the pixels in memory
    (H x W x 3 bytes each; data-loader workers share them). For small datasets, where decoding is a visible
    part of a step (the demo's 600 PNGs: ~40% of its data time); the size is printed."""

    train: str = ""
    val: str = ""
    image_root: str = ""
    keep_empty: bool = True
    cache_images: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (data/transforms.py). Defaults are upstream Mask2Former's COCO instance recipes.

    recipe "lsj" (large-scale jitter, upstream's COCO instance baseline): flip, resize so the image fits
    `image_size` times a random scale in [min_scale, max_scale], then crop / pad to `image_size` squared.
    recipe "shortest_edge" (upstream's older mapper): flip, shortest edge to a random choice of
    `shortest_edge`, longest edge capped at `max_size`. Test time resizes the shortest edge to
    `test_shortest_edge` (0 keeps the size). Colour jitter is off by default because colour is an attribute;
    for the same reason keep the scale range narrow when size is an attribute (see `synthetic()`).
    """

    recipe: str = "lsj"
    image_size: int = 1024
    min_scale: float = 0.1
    max_scale: float = 2.0
    shortest_edge: tuple[int, ...] = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    max_size: int = 1333
    test_shortest_edge: int = 800
    flip_prob: float = 0.5
    pad_value: int = 128
    color_jitter: bool = False
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "shortest_edge", tuple(self.shortest_edge))
        if self.recipe not in ("lsj", "shortest_edge"):
            raise ValueError(f"AugmentConfig.recipe must be 'lsj' or 'shortest_edge', got {self.recipe!r}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError("AugmentConfig needs 0 < min_scale <= max_scale")
        if self.image_size <= 0 or self.max_size <= 0 or self.test_shortest_edge < 0:
            raise ValueError("AugmentConfig sizes must be positive (test_shortest_edge may be 0 = keep)")
        if self.recipe == "shortest_edge" and (not self.shortest_edge or min(self.shortest_edge) <= 0):
            raise ValueError("AugmentConfig.shortest_edge must list positive sizes")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError("AugmentConfig.flip_prob must be in [0, 1]")
        if not 0 <= self.pad_value <= 255:
            raise ValueError("AugmentConfig.pad_value must be in [0, 255]")
        if min(self.brightness, self.contrast, self.saturation) < 0 or max(self.brightness, self.contrast, self.saturation) >= 1:
            raise ValueError("AugmentConfig jitter strengths must be in [0, 1)")

    @classmethod
    def synthetic(cls, image_size: int = 128, **overrides) -> "AugmentConfig":
        """LSJ for the synthetic shapes: size is an attribute, so scale stays within +-10% (bins are further apart)."""
        values = dict(image_size=image_size, min_scale=0.9, max_scale=1.1, test_shortest_edge=0)
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class LogConfig:
    """What a run writes besides metrics.jsonl (engine/tracking.py). tensorboard: event files in the run
    directory with the training losses and lr, each evaluation's metrics and prediction overlays."""

    tensorboard: bool = True


def _default_eval():
    return EvalConfig()  # noqa: F821 -- defined below; looked up when a RunConfig is made


@dataclass(frozen=True)
class RunConfig:
    """One training run: what `workbench train --config FILE.yaml` reads (see config_file.py).

    `model.num_classes` / `model.attributes` left out of the YAML are taken from the training data's schema.
    """

    model: ModelConfig
    solver: SolverConfig = field(default_factory=SolverConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: "EvalConfig" = field(default_factory=_default_eval)  # noqa: F821
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"; the CLI's --device overrides it

    def __post_init__(self) -> None:
        if not DEVICE_SPEC.fullmatch(str(self.device).strip().lower()):
            raise ValueError(f"device: {self.device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.model.task != "instance" and self.solver.best_metric == SolverConfig.best_metric:
            # the default names instance segmentation's headline; a panoptic or semantic model has its own
            headline = {"panoptic": "panoptic/PQ", "semantic": "semantic/mIoU"}[self.model.task]
            object.__setattr__(self, "solver", dataclasses.replace(self.solver, best_metric=headline))


@dataclass(frozen=True)
class EvalConfig:
    """How predictions are ranked and filtered before evaluation (engine/evaluate.py, engine/scoring.py).

    scoring: the score instances are ranked by (COCOeval's "score"); with c = class prob, m = mask score and
    a_i = the probability of attribute i's predicted (top real) value, over all A schema attributes:
        "main"     c * m                       (upstream Mask2Former, the model's `scores`)
        "product"  c * m * prod_i a_i
        "mean"     (c + sum_i a_i) / (1 + A) * m
    A multi-label group's a_i is the mean over its K values of the probability of the decision taken (p where
    the value is predicted, i.e. p > its threshold, and 1 - p where not).
    dedupe_iou: None = off; else greedy mask-IoU duplicate suppression across queries, class-agnostic, by the
    ranking score: an instance whose mask IoU with a kept one is >= dedupe_iou is removed.
    score_threshold: instances whose ranking score is below it are removed (0 keeps all).
    drop_no_object: remove instances where any single-label attribute's no-object prob exceeds its best real
    value's prob (multi-label groups have no no-object slot).
    max_dets: at most this many instances per image (highest ranking scores) are evaluated; also COCOeval's
    maxDets.
    """

    scoring: str = "main"
    dedupe_iou: float | None = None
    score_threshold: float = 0.0
    drop_no_object: bool = False
    max_dets: int = 100

    def __post_init__(self) -> None:
        if self.scoring not in ("main", "product", "mean"):
            raise ValueError(f"EvalConfig.scoring must be 'main', 'product' or 'mean', got {self.scoring!r}")
        if self.dedupe_iou is not None and not 0 < self.dedupe_iou <= 1:
            raise ValueError(f"EvalConfig.dedupe_iou must be None (off) or in (0, 1], got {self.dedupe_iou!r}")
        if not 0 <= self.score_threshold <= 1:
            raise ValueError(f"EvalConfig.score_threshold must be in [0, 1], got {self.score_threshold!r}")
        if isinstance(self.max_dets, bool) or not isinstance(self.max_dets, int) or self.max_dets < 1:
            raise ValueError(f"EvalConfig.max_dets must be a positive integer, got {self.max_dets!r}")
