import dataclasses
import pathlib
import re

import pytest

import workbench as wb
from workbench.config import AttributeSpec, LossConfig, ModelConfig

PACKAGE = pathlib.Path(wb.__file__).parent


def test_presets():
    tiny = ModelConfig.tiny(num_classes=3, attributes={"color": ["r", "g", "b"]})
    assert 32 <= tiny.hidden_dim <= 64 and tiny.dec_layers == 2 and tiny.num_queries == 10
    assert tiny.attributes == (AttributeSpec("color", ("r", "g", "b")),)
    coco = ModelConfig.coco_r50()
    assert (coco.num_queries, coco.dec_layers, coco.enc_layers, coco.hidden_dim, coco.nheads) == (100, 9, 6, 256, 8)
    assert coco.backbone == "resnet50" and coco.num_classes == 80
    assert (coco.loss.class_weight, coco.loss.mask_weight, coco.loss.dice_weight) == (2.0, 5.0, 5.0)
    assert (coco.loss.num_points, coco.loss.oversample_ratio, coco.loss.importance_sample_ratio) == (12544, 3.0, 0.75)
    assert coco.loss.no_object_weight == 0.1
    # upstream configs/coco/instance-segmentation/{maskformer2_R101,swin/maskformer2_swin_*}.yaml: the R50 head,
    # their backbone, SWIN.WINDOW_SIZE, SWIN.DROP_PATH_RATE, and NUM_OBJECT_QUERIES 200 for Swin-L
    head = dict(coco.__dict__, backbone=None, backbone_window_size=None, backbone_drop_path_rate=None, num_queries=None)
    for preset, backbone, window, drop_path, queries in [
        ("coco_r101", "resnet101", 7, 0.0, 100), ("coco_swin_t", "swin_t", 7, 0.3, 100),
        ("coco_swin_s", "swin_s", 7, 0.3, 100), ("coco_swin_b", "swin_b", 12, 0.3, 100),
        ("coco_swin_l", "swin_l", 12, 0.3, 200),
    ]:
        cfg = getattr(ModelConfig, preset)()
        assert (cfg.backbone, cfg.backbone_window_size, cfg.backbone_drop_path_rate, cfg.num_queries) == (
            backbone, window, drop_path, queries), preset
        assert dict(cfg.__dict__, backbone=None, backbone_window_size=None, backbone_drop_path_rate=None,
                    num_queries=None) == head, preset


def test_frozen():
    cfg = ModelConfig.tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_queries = 5  # type: ignore[misc]


def _fields(cls):
    return [f.name for f in dataclasses.fields(cls)]


CONFIG_CLASSES = [obj for obj in vars(wb.config).values()
                  if isinstance(obj, type) and dataclasses.is_dataclass(obj)
                  and obj.__module__.startswith("workbench.config.")]


def test_every_config_class_is_checked():
    names = {c.__name__ for c in CONFIG_CLASSES}
    assert {"AttributeSpec", "LossConfig", "ModelConfig", "SolverConfig", "DataConfig", "AugmentConfig",
            "EvalConfig", "RunConfig"} <= names


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_no_dead_keys(cls):
    """Every config field is read somewhere in the package outside workbench/config/ (and d2/config.py)."""
    sources = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py")
                         if p.name != "config.py" and PACKAGE / "config" not in p.parents)
    dead = [name for name in _fields(cls) if not re.search(rf"\.{name}\b", sources)]
    assert not dead, f"{cls.__name__} fields never read: {dead}"


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes"),
    (dict(num_classes=3, hidden_dim=30, nheads=4), "divisible"),
    (dict(num_classes=3, attributes={"a": [], }), "empty"),
    (dict(num_classes=3, attributes={"a": ["x", "x"]}), "duplicate"),
    (dict(num_classes=3, attributes={"not valid": ["x"]}), "identifier"),
    (dict(num_classes=3, attribute_cost_weight=-1), "attribute_cost_weight"),
])
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_loss_validation():
    with pytest.raises(ValueError, match="num_points"):
        LossConfig(num_points=0)


def test_attribute_lookup():
    cfg = ModelConfig.tiny(attributes={"color": ["r"], "size": ["s", "l"]})
    assert cfg.attribute_names == ("color", "size")
    assert cfg.attribute("size").num_values == 2
    with pytest.raises(KeyError, match="known"):
        cfg.attribute("shape")
