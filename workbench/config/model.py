"""The model's configuration: `ModelConfig` (architecture, heads, task, loss weights) and its presets:
`ModelConfig.tiny()` for tests and `coco_r50()`, `coco_r101()`, `coco_swin_t()`/`_s`/`_b`/`_l` with upstream
Mask2Former's COCO instance-segmentation values."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

from workbench.config.attribute import AttributeSpec
from workbench.config.loss import LossConfig

__all__ = ["BACKBONES", "TASKS", "ModelConfig"]

# model/backbones/build.py's BACKBONE_NAMES (tests/test_cli_robustness.py keeps them equal): checked here, when a config
# is read, so a typo is a config error before any data is read or any folder made
BACKBONES = ("resnet50", "resnet101", "mobilenet_v3_large", "tiny", "swin_t", "swin_s", "swin_b", "swin_l")
TASKS = ("instance", "semantic", "panoptic")  # what `model(batch)` returns in eval mode (model/meta_arch.py)


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
