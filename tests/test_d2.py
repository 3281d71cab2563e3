"""detectron2 adapter (workbench/d2). Tests marked `needs_d2` skip, with the reason shown by `pytest -ra`, where
detectron2 is not importable (CI); the import tests run everywhere."""
import json
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.d2 import INSTALL_COMMANDS, INSTALL_HINT, detectron2_available

ROOT = Path(__file__).resolve().parents[1]

needs_d2 = pytest.mark.skipif(
    not detectron2_available(),
    reason=f"detectron2 is not importable, so the adapter tests do not run. {INSTALL_HINT}",
)

# The keys of upstream Mask2Former's Base-COCO-InstanceSegmentation.yaml and maskformer2_R50_bs16_50ep.yaml
# (COCO instance segmentation, R50, 50 epochs), written out here since Mask2Former is not installable.
UPSTREAM_BASE = """\
MODEL:
  BACKBONE:
    FREEZE_AT: 0
    NAME: "build_resnet_backbone"
  WEIGHTS: "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
  RESNETS:
    DEPTH: 50
    STEM_TYPE: "basic"
    STEM_OUT_CHANNELS: 64
    STRIDE_IN_1X1: False
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
    RES5_MULTI_GRID: [1, 1, 1]
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.0001
  STEPS: (327778, 355092)
  MAX_ITER: 368750
  WARMUP_FACTOR: 1.0
  WARMUP_ITERS: 10
  WEIGHT_DECAY: 0.05
  OPTIMIZER: "ADAMW"
  BACKBONE_MULTIPLIER: 0.1
  CLIP_GRADIENTS:
    ENABLED: True
    CLIP_TYPE: "full_model"
    CLIP_VALUE: 0.01
    NORM_TYPE: 2.0
  AMP:
    ENABLED: True
INPUT:
  IMAGE_SIZE: 1024
  MIN_SCALE: 0.1
  MAX_SCALE: 2.0
  FORMAT: "RGB"
  DATASET_MAPPER_NAME: "coco_instance_lsj"
TEST:
  EVAL_PERIOD: 5000
DATALOADER:
  FILTER_EMPTY_ANNOTATIONS: True
  NUM_WORKERS: 4
VERSION: 2
"""

UPSTREAM_R50 = """\
_BASE_: Base-COCO-InstanceSegmentation.yaml
MODEL:
  META_ARCHITECTURE: "MaskFormer"
  SEM_SEG_HEAD:
    NAME: "MaskFormerHead"
    IGNORE_VALUE: 255
    NUM_CLASSES: 80
    LOSS_WEIGHT: 1.0
    CONVS_DIM: 256
    MASK_DIM: 256
    NORM: "GN"
    PIXEL_DECODER_NAME: "MSDeformAttnPixelDecoder"
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
    DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: ["res3", "res4", "res5"]
    COMMON_STRIDE: 4
    TRANSFORMER_ENC_LAYERS: 6
  MASK_FORMER:
    TRANSFORMER_DECODER_NAME: "MultiScaleMaskedTransformerDecoder"
    TRANSFORMER_IN_FEATURE: "multi_scale_pixel_decoder"
    DEEP_SUPERVISION: True
    NO_OBJECT_WEIGHT: 0.1
    CLASS_WEIGHT: 2.0
    MASK_WEIGHT: 5.0
    DICE_WEIGHT: 5.0
    HIDDEN_DIM: 256
    NUM_OBJECT_QUERIES: 100
    NHEADS: 8
    DROPOUT: 0.0
    DIM_FEEDFORWARD: 2048
    ENC_LAYERS: 0
    PRE_NORM: False
    ENFORCE_INPUT_PROJ: False
    SIZE_DIVISIBILITY: 32
    DEC_LAYERS: 10
    TRAIN_NUM_POINTS: 12544
    OVERSAMPLE_RATIO: 3.0
    IMPORTANCE_SAMPLE_RATIO: 0.75
    TEST:
      SEMANTIC_ON: False
      INSTANCE_ON: True
      PANOPTIC_ON: False
      OVERLAP_THRESHOLD: 0.8
      OBJECT_MASK_THRESHOLD: 0.8
"""

# Our keys on top of the upstream config: the multi-task meta-architecture at test size on our tiny backbone.
TINY_OVERRIDES = [
    "MODEL.META_ARCHITECTURE", "MultiTaskMaskFormer",
    "MODEL.BACKBONE.NAME", "build_workbench_backbone",
    "MODEL.MULTITASK.BACKBONE.NAME", "tiny",
    "MODEL.WEIGHTS", "",
    "MODEL.DEVICE", "cpu",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 3,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32,
    "MODEL.SEM_SEG_HEAD.MASK_DIM", 32,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 1,
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS", 4,
    "MODEL.MASK_FORMER.HIDDEN_DIM", 32,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 10,
    "MODEL.MASK_FORMER.NHEADS", 4,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 64,
    "MODEL.MASK_FORMER.DEC_LAYERS", 3,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS", 256,
    "TEST.DETECTIONS_PER_IMAGE", 10,
]


def _write_upstream(tmp_path):
    (tmp_path / "Base-COCO-InstanceSegmentation.yaml").write_text(UPSTREAM_BASE)
    path = tmp_path / "maskformer2_R50_bs16_50ep.yaml"
    path.write_text(UPSTREAM_R50)
    return path


def _cfg(tmp_path, overrides=(), tiny=True):
    from detectron2.config import get_cfg

    from workbench.d2 import add_multitask_config

    cfg = get_cfg()
    add_multitask_config(cfg)
    cfg.merge_from_file(str(_write_upstream(tmp_path)))
    no_coco = ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"]  # the model is checked against registered DATASETS
    cfg.merge_from_list((TINY_OVERRIDES + no_coco if tiny else []) + list(overrides))
    return cfg


# --- without detectron2 ----------------------------------------------------------------------------------------
def test_workbench_imports_without_detectron2():
    """With detectron2 unimportable, `import workbench` / `workbench.d2` work, and the entry points raise a clear
    ImportError only when called; a plain `import workbench` never imports detectron2."""
    code = textwrap.dedent("""
        import sys
        import workbench, workbench.d2, workbench.model, workbench.engine.evaluate
        assert "detectron2" not in sys.modules, "import workbench imported detectron2"
        sys.modules["detectron2"] = None  # from here on, detectron2 cannot be imported
        from workbench.d2 import add_multitask_config, register_multitask_coco
        assert not workbench.d2.detectron2_available()
        for call in (lambda: register_multitask_coco("x", "x.json", "."), lambda: add_multitask_config(None),
                     lambda: workbench.d2.MultiTaskMaskFormer):
            try:
                call()
            except ImportError as e:
                assert "not on PyPI" in str(e) and "detectron2" in str(e), str(e)
            else:
                raise AssertionError("no ImportError without detectron2")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _readme_d2_block() -> list[str]:
    """The command lines (comments stripped) of the README's first bash block under '## detectron2 adapter'."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## detectron2 adapter", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def test_readme_install_commands_are_the_adapters():
    """One source of truth: the README's detectron2 install lines are `workbench.d2.INSTALL_COMMANDS`, which the
    ImportError and this file's skip reason print; every other install instruction for detectron2 or the d2
    extra in the repository is one of them (none left installing the extra editable, which rebuilds the workbench)."""
    commands = _readme_d2_block()
    assert tuple(commands[:len(INSTALL_COMMANDS)]) == INSTALL_COMMANDS, commands
    for command in INSTALL_COMMANDS:
        assert command in INSTALL_HINT
    assert INSTALL_HINT in needs_d2.kwargs["reason"]
    pip_line = next(c for c in INSTALL_COMMANDS if " pip install " in f" {c} ")
    assert "--use-pep517" in pip_line and "--no-build-isolation" in pip_line
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nd2-deps:", 1)[1].split("\n\n", 1)[0]
    assert '["optional-dependencies"]["d2"]' in recipe and "pip install" in recipe and " -e " not in recipe
    sources = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile", ROOT / "environment.yml",
               Path(__file__), *sorted((ROOT / "workbench" / "d2").glob("*.py"))]
    for path in sources:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "pip install" in line and ("detectron2" in line or "[d2]" in line) and "INSTALL" not in line:
                assert pip_line in line, f"{path.relative_to(ROOT)}:{number}: {line.strip()!r} is not {pip_line!r}"


# --- config translation ----------------------------------------------------------------------------------------
@needs_d2
def test_upstream_config_translates_to_coco_r50(tmp_path):
    """The upstream R50 COCO instance YAML, plus only META_ARCHITECTURE, is our coco_r50 preset exactly."""
    from workbench.d2 import model_config_from_cfg

    cfg = _cfg(tmp_path, ["MODEL.META_ARCHITECTURE", "MultiTaskMaskFormer"], tiny=False)
    assert model_config_from_cfg(cfg) == wb.ModelConfig.coco_r50(num_classes=80)


@needs_d2
def test_multitask_keys_translate(tmp_path):
    from workbench.d2 import model_config_from_cfg
    from workbench.d2.config import attribute_cost_weights

    cfg = _cfg(tmp_path, [
        "MODEL.MULTITASK.ATTRIBUTE_NAMES", ["color", "size"],
        "MODEL.MULTITASK.ATTRIBUTE_VALUES", [["red", "green"], ["small", "medium", "large"]],
        "MODEL.MULTITASK.ATTRIBUTE_LOSS_WEIGHTS", [2.0, 0.5],
        "MODEL.MULTITASK.ATTRIBUTE_COST_WEIGHTS", [1.0, 0.0],
        "MODEL.MULTITASK.ATTRIBUTE_NO_OBJECT_WEIGHTS", [0.2, 0.05],
        "MODEL.MULTITASK.BACKBONE.NORM", "frozen_bn",
    ])
    m = model_config_from_cfg(cfg)
    assert m.attributes == (wb.AttributeSpec("color", ("red", "green"), 2.0, 0.2),
                            wb.AttributeSpec("size", ("small", "medium", "large"), 0.5, 0.05))
    assert (m.dec_layers, m.hidden_dim, m.num_queries, m.backbone, m.backbone_norm) == (2, 32, 10, "tiny", "frozen_bn")
    assert attribute_cost_weights(cfg, m) == {"color": 1.0, "size": 0.0}
    cfg.MODEL.MULTITASK.ATTRIBUTE_COST_WEIGHTS = []
    assert attribute_cost_weights(cfg, m) == {"color": 2.0, "size": 0.5}  # default: the loss weights


@needs_d2
@pytest.mark.parametrize("key,value,match", [
    ("MODEL.SEM_SEG_HEAD.CONVS_DIM", 64, "CONVS_DIM"),
    ("MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "BasePixelDecoder", "PIXEL_DECODER_NAME"),
    ("MODEL.MASK_FORMER.PRE_NORM", True, "PRE_NORM"),
    ("MODEL.MULTITASK.SCORING", "sum", "SCORING"),
    ("MODEL.MULTITASK.ATTRIBUTE_NAMES", ["color"], "ATTRIBUTE_VALUES"),
])
def test_unsupported_values_are_errors(tmp_path, key, value, match):
    from workbench.d2 import model_config_from_cfg

    with pytest.raises(ValueError, match=match):
        model_config_from_cfg(_cfg(tmp_path, [key, value]))


@needs_d2
def test_add_multitask_config_alone_builds_the_multitask_coco_r50():
    """`get_cfg(); add_multitask_config(cfg); build_model(cfg)` is the multi-task coco_r50 model, never
    detectron2's default GeneralizedRCNN; `set_model_keys` is the inverse of `model_config_from_cfg`."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from workbench.d2 import add_multitask_config, model_config_from_cfg
    from workbench.d2.config import set_model_keys
    from workbench.d2.modeling import MultiTaskMaskFormer

    cfg = get_cfg()
    add_multitask_config(cfg)
    assert model_config_from_cfg(cfg) == wb.ModelConfig.coco_r50()
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert isinstance(model, MultiTaskMaskFormer) and model.model_cfg == wb.ModelConfig.coco_r50()

    tiny = wb.ModelConfig.tiny(num_classes=5, attributes={"color": ["red", "blue"]}, enc_dim_feedforward=1024)
    set_model_keys(cfg, tiny)
    assert model_config_from_cfg(cfg) == tiny
    swin_b = wb.ModelConfig.coco_swin_b(num_classes=5)  # window 12, drop path 0.3 must survive the round trip
    set_model_keys(cfg, swin_b)
    assert model_config_from_cfg(cfg) == swin_b
    with pytest.raises(ValueError, match="enc_dim_feedforward"):
        set_model_keys(cfg, wb.ModelConfig.tiny())


# --- the train entry's checks before training ----------------------------------------------------------------------
def _entry_cfg(tmp_path, overrides=(), meta_architecture=True):
    """`workbench.d2.train.config_from_args` on the upstream YAML plus the tiny overrides and `overrides`."""
    from workbench.d2.train import argument_parser, config_from_args

    opts = TINY_OVERRIDES if meta_architecture else TINY_OVERRIDES[2:]
    opts = [*opts, "DATASETS.TRAIN", "()", "DATASETS.TEST", "()", *overrides]
    args = argument_parser().parse_args(["--config-file", str(_write_upstream(tmp_path)), *[str(v) for v in opts]])
    return config_from_args(args)


@needs_d2
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path; this machine has CUDA")
def test_train_entry_on_cpu_turns_amp_off_with_one_line(tmp_path, capsys):
    """Upstream's YAML enables AMP, which detectron2's AMPTrainer refuses without CUDA: one printed line, AMP off."""
    cfg = _entry_cfg(tmp_path)
    assert cfg.SOLVER.AMP.ENABLED is False
    lines = [line for line in capsys.readouterr().out.splitlines() if "AMP" in line]
    assert len(lines) == 1 and "AMP off" in lines[0] and "SOLVER.AMP.ENABLED" in lines[0], lines
    with pytest.raises(ValueError, match="MODEL.DEVICE = 'cuda'.*MODEL.DEVICE cpu"):
        _entry_cfg(tmp_path, ["MODEL.DEVICE", "cuda"])


@needs_d2
def test_train_entry_refuses_unreachable_or_missing_weights_before_training(tmp_path, monkeypatch):
    """An offline URL (here a refused connection) or a missing file in MODEL.WEIGHTS: an error naming the key and
    the fix, from the config step, before any model is built or trained."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))  # iopath's download cache
    url = f"http://127.0.0.1:9/{uuid.uuid4().hex}/R-50.pkl"
    with pytest.raises(ConnectionError, match=r"MODEL.WEIGHTS = 'http://127.*MODEL.WEIGHTS \"\""):
        _entry_cfg(tmp_path, ["MODEL.WEIGHTS", url])
    with pytest.raises(FileNotFoundError, match=r"MODEL.WEIGHTS = .*nope.pkl'. no such file.*local file"):
        _entry_cfg(tmp_path, ["MODEL.WEIGHTS", str(tmp_path / "nope.pkl")])
    (tmp_path / "model.pkl").write_bytes(b"weights")
    assert _entry_cfg(tmp_path, ["MODEL.WEIGHTS", str(tmp_path / "model.pkl")]).MODEL.WEIGHTS.endswith("model.pkl")


@needs_d2
def test_train_entry_refuses_upstreams_meta_architecture(tmp_path):
    with pytest.raises(ValueError, match="MODEL.META_ARCHITECTURE = 'MaskFormer'.*MultiTaskMaskFormer"):
        _entry_cfg(tmp_path, meta_architecture=False)


# --- model ---------------------------------------------------------------------------------------------------------
def _d2_batch(attributes: dict[str, list[int]] | None = None, size=(64, 96)):
    """Two images with two instances each, in detectron2's format and in the plain model's."""
    from detectron2.structures import BitMasks, Instances

    g = torch.Generator().manual_seed(0)
    d2_batch, plain_batch = [], []
    for b in range(2):
        image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=g)
        masks = torch.zeros((2, *size), dtype=torch.bool)
        masks[0, 5:30, 10:40] = True
        masks[1, 20 + b:60, 50:90] = True
        labels = torch.tensor([b, 2])
        inst = Instances(size, gt_classes=labels, gt_masks=BitMasks(masks))
        attrs = {}
        for name, values in (attributes or {}).items():
            attrs[name] = torch.tensor(values)
            inst.set(f"gt_attr_{name}", attrs[name])
        d2_batch.append({"image": image, "instances": inst, "height": size[0], "width": size[1]})
        plain_batch.append({"image": image, "instances": {"labels": labels, "masks": masks, "attributes": attrs}})
    return d2_batch, plain_batch


def _plain_twin(d2_model):
    """The plain model of the same ModelConfig with the d2 model's weights."""
    plain = wb.build_model(d2_model.model_cfg)
    plain.backbone.load_state_dict(d2_model.backbone.net.state_dict())
    plain.pixel_decoder.load_state_dict(d2_model.pixel_decoder.state_dict())
    plain.decoder.load_state_dict(d2_model.decoder.state_dict())
    return plain


@needs_d2
def test_zero_attributes_losses_match_plain_model(tmp_path):
    """Zero attributes: the registered meta-architecture built from the upstream config gives upstream's loss
    keys and exactly the plain model's losses for the same inputs and sampled points."""
    from detectron2.modeling import build_model

    from workbench.d2.modeling import MultiTaskMaskFormer

    torch.manual_seed(0)
    model = build_model(_cfg(tmp_path))
    assert isinstance(model, MultiTaskMaskFormer)
    plain = _plain_twin(model)
    d2_batch, plain_batch = _d2_batch()
    model.train(), plain.train()
    losses = model(d2_batch, generator=torch.Generator().manual_seed(3))
    expected = plain(plain_batch, generator=torch.Generator().manual_seed(3))
    upstream_keys = {f"{k}{s}" for k in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1")}
    assert set(losses) == upstream_keys == set(expected)
    for key in losses:
        torch.testing.assert_close(losses[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    sum(losses.values()).backward()


@needs_d2
def test_attributes_train_and_infer(tmp_path):
    from detectron2.modeling import build_model

    cfg = _cfg(tmp_path, ["MODEL.MULTITASK.ATTRIBUTE_NAMES", ["color"],
                          "MODEL.MULTITASK.ATTRIBUTE_VALUES", [["red", "green", "blue"]],
                          "MODEL.MULTITASK.SCORING", "product"])
    torch.manual_seed(0)
    model = build_model(cfg)
    plain = _plain_twin(model)
    d2_batch, plain_batch = _d2_batch({"color": [0, -1]})
    losses = model.train()(d2_batch, generator=torch.Generator().manual_seed(1))
    expected = plain.train()(plain_batch, generator=torch.Generator().manual_seed(1))
    assert "loss_attr_color" in losses and "loss_attr_color_1" in losses
    for key in expected:
        torch.testing.assert_close(losses[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    d2_batch[0]["instances"].remove("gt_attr_color")
    with pytest.raises(KeyError, match="gt_attr_color"):
        model(d2_batch)

    model.eval()
    with torch.no_grad():
        out = model([{"image": d2_batch[0]["image"], "height": 32, "width": 48}])
    inst = out[0]["instances"]
    assert inst.image_size == (32, 48) and inst.pred_masks.shape == (10, 32, 48)
    assert inst.pred_attr_color.max() < 3 and inst.pred_attr_color_scores.shape == (10,)
    product = inst.main_scores * inst.pred_attr_color_scores  # MODEL.MULTITASK.SCORING "product"
    torch.testing.assert_close(inst.scores, product)


# --- data ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from workbench.engine.demo import prepare_data

    root = tmp_path_factory.mktemp("synthetic")
    prepare_data(root, train_images=8, val_images=4)
    return root


@needs_d2
def test_register_multitask_coco_keeps_attributes(synthetic):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from workbench.d2 import register_multitask_coco
    from workbench.d2.data import multitask_keys_from_dataset

    name = f"synth_{uuid.uuid4().hex[:8]}"
    register_multitask_coco(name, synthetic / "train" / "coco.json", synthetic / "train")
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 8
    ann = dicts[0]["annotations"][0]
    assert set(ann["attributes"]) == {"color", "size"} and 0 <= ann["category_id"] < 3
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["circle", "square", "triangle"]
    assert meta.attribute_values == {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"]}
    keys = multitask_keys_from_dataset(name)
    assert keys[keys.index("MODEL.MULTITASK.ATTRIBUTE_NAMES") + 1] == ["color", "size"]


@needs_d2
def test_mapper_carries_attributes_and_drops_cropped_instances(tmp_path):
    """A crop that removes one instance removes its attributes too; the other keeps its values."""
    from detectron2.data import transforms as T
    from PIL import Image

    from workbench.d2.data import MultiTaskDatasetMapper
    from workbench.data.masks import mask_to_rle

    h, w = 64, 64
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(tmp_path / "im.png")
    top_left, bottom_right = np.zeros((h, w), bool), np.zeros((h, w), bool)
    top_left[2:20, 4:24] = True
    bottom_right[40:60, 44:60] = True
    record = {"file_name": str(tmp_path / "im.png"), "height": h, "width": w, "image_id": 7, "annotations": [
        {"segmentation": mask_to_rle(top_left), "bbox": [4, 2, 20, 18], "bbox_mode": 1, "category_id": 1,
         "iscrowd": 0, "attributes": {"color": 2, "size": -1}},
        {"segmentation": mask_to_rle(bottom_right), "bbox": [44, 40, 16, 20], "bbox_mode": 1, "category_id": 0,
         "iscrowd": 0, "attributes": {"color": 0, "size": 1}},
    ]}
    keep_all = MultiTaskDatasetMapper(True, [T.HFlipTransform(w)], "RGB", ["color", "size"])(record)
    inst = keep_all["instances"]
    assert inst.gt_attr_color.tolist() == [2, 0] and inst.gt_attr_size.tolist() == [-1, 1]
    assert inst.gt_masks.tensor[0, 2:20, w - 24:w - 4].all()  # flipped with the image

    cropped = MultiTaskDatasetMapper(True, [T.CropTransform(0, 0, 32, 32)], "RGB", ["color", "size"])(record)
    inst = cropped["instances"]
    assert cropped["image"].shape == (3, 32, 32) and len(inst) == 1
    assert inst.gt_classes.tolist() == [1]
    assert inst.gt_attr_color.tolist() == [2] and inst.gt_attr_size.tolist() == [-1]
    assert inst.gt_boxes.tensor.tolist() == [[4.0, 2.0, 24.0, 20.0]]

    no_attrs = dict(record, annotations=[{k: v for k, v in a.items() if k != "attributes"}
                                         for a in record["annotations"]])
    with pytest.raises(KeyError, match="register_multitask_coco"):
        MultiTaskDatasetMapper(True, [], "RGB", ["color"])(no_attrs)
    test_time = MultiTaskDatasetMapper(False, [], "RGB", ["color"])(record)
    assert "instances" not in test_time and "annotations" not in test_time


def _registered(synthetic, split):
    from workbench.d2 import register_multitask_coco

    name = f"synth_{split}_{uuid.uuid4().hex[:8]}"
    register_multitask_coco(name, synthetic / split / "coco.json", synthetic / split)
    return name


@needs_d2
@pytest.mark.parametrize("overrides,match", [
    (["MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5], "MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5.*has 3 categories"),
    (["MODEL.MULTITASK.ATTRIBUTE_NAMES", ["colour"], "MODEL.MULTITASK.ATTRIBUTE_VALUES", [["red", "green", "blue"]]],
     r"MODEL.MULTITASK.ATTRIBUTE_NAMES = \['colour'\].*not in dataset"),
    (["MODEL.MULTITASK.ATTRIBUTE_NAMES", ["size"], "MODEL.MULTITASK.ATTRIBUTE_VALUES", [["small", "large"]]],
     "MODEL.MULTITASK.ATTRIBUTE_VALUES for 'size'.*'medium'"),
])
def test_num_classes_and_attributes_are_checked_against_the_dataset_when_the_model_is_built(
        tmp_path, synthetic, overrides, match):
    from detectron2.modeling import build_model

    name = _registered(synthetic, "train")
    cfg = _cfg(tmp_path, ["DATASETS.TRAIN", (name,), *overrides])
    with pytest.raises(ValueError, match=match):
        build_model(cfg)


def _evaluate(tmp_path, synthetic, attribute_names, values):
    """A tiny random model predicting `attribute_names` evaluated on the synthetic val split (color and size)."""
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from workbench.d2 import MultiTaskCOCOEvaluator, MultiTaskDatasetMapper

    name = _registered(synthetic, "val")
    cfg = _cfg(tmp_path, ["DATASETS.TEST", (name,), "MODEL.MULTITASK.ATTRIBUTE_NAMES", attribute_names,
                          "MODEL.MULTITASK.ATTRIBUTE_VALUES", values, "INPUT.MIN_SIZE_TEST", 64,
                          "INPUT.MAX_SIZE_TEST", 64])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    mapper = MultiTaskDatasetMapper.from_config(cfg, is_train=False)
    evaluator = MultiTaskCOCOEvaluator(name, distributed=False, output_dir=str(tmp_path / "eval"))
    evaluator.reset()
    with torch.no_grad():
        for record in DatasetCatalog.get(name):
            inputs = [mapper(record)]
            evaluator.process(inputs, model(inputs))
    return evaluator.evaluate(), json.loads((tmp_path / "eval" / "metrics.json").read_text())


@needs_d2
@pytest.mark.parametrize("attribute_names,values", [
    (["color"], [["red", "green", "blue"]]),
    ([], []),
])
def test_evaluator_scores_the_attributes_the_model_predicts(tmp_path, synthetic, attribute_names, values):
    """The dataset has color and size; a model predicting fewer (as the README allows) is scored on those, the
    others are reported as not predicted (no KeyError for the missing pred_attr_<name>)."""
    results, metrics = _evaluate(tmp_path, synthetic, attribute_names, values)
    attributes = results["attributes"]
    for name in ("color", "size"):
        assert attributes[f"{name}_predicted"] == float(name in attribute_names)
        assert name in attribute_names or (np.isnan(attributes[f"{name}_accuracy"])
                                           and attributes[f"{name}_count"] == 0)
    assert set(metrics["attributes"]) == set(attribute_names)
    assert metrics["config"]["attributes_not_predicted"] == [n for n in ("color", "size") if n not in attribute_names]
    assert "segm" in results and np.isfinite(results["joint"]["AP"])


# --- train + evaluate through the entry point ----------------------------------------------------------------------
@needs_d2
def test_train_net_trains_and_evaluates(tmp_path, synthetic):
    """`python -m workbench.d2.train` with the upstream YAML as _BASE_ plus our keys: a few iterations on the
    synthetic shapes, then COCOEvaluator's results with attribute accuracy and joint AP added. As a user meets
    it: upstream's AMP on a CPU machine (turned off with one line), and a model predicting only `color` of the
    dataset's color and size (size reported as not predicted)."""
    _write_upstream(tmp_path)
    out = tmp_path / "out"
    (tmp_path / "multitask.yaml").write_text(textwrap.dedent(f"""\
        _BASE_: maskformer2_R50_bs16_50ep.yaml
        MODEL:
          MULTITASK:
            ATTRIBUTE_NAMES: ["color"]
            ATTRIBUTE_VALUES: [["red", "green", "blue"]]
            SCORING: "mean"
        DATASETS:
          TRAIN: ("synth_train",)
          TEST: ("synth_val",)
        SOLVER:
          IMS_PER_BATCH: 2
          BASE_LR: 0.001
          MAX_ITER: 6
          STEPS: (100,)
          CHECKPOINT_PERIOD: 1000
        INPUT:
          IMAGE_SIZE: 128
          MIN_SCALE: 0.9
          MAX_SCALE: 1.1
          MIN_SIZE_TEST: 128
          MAX_SIZE_TEST: 128
        TEST:
          EVAL_PERIOD: 0
        DATALOADER:
          NUM_WORKERS: 0
        OUTPUT_DIR: "{out}"
        SEED: 0
    """))
    command = [sys.executable, "-m", "workbench.d2.train", "--config-file", str(tmp_path / "multitask.yaml"),
               "--register", "synth_train", str(synthetic / "train" / "coco.json"), str(synthetic / "train"),
               "--register", "synth_val", str(synthetic / "val" / "coco.json"), str(synthetic / "val"),
               *[str(v) for v in TINY_OVERRIDES]]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    if not torch.cuda.is_available():
        assert sum("AMP off" in line for line in run.stdout.splitlines()) == 1, run.stdout[-3000:]
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert losses and all(np.isfinite(losses)), records
    final = records[-1]
    for key in ("segm/AP", "bbox/AP", "joint/AP", "attributes/color_accuracy", "attributes/size_accuracy"):
        assert key in final, sorted(final)
    assert (final["attributes/color_predicted"], final["attributes/size_predicted"]) == (1.0, 0.0)
    result = json.loads((out / "inference" / "synth_val" / "metrics.json").read_text())
    assert result["config"]["scoring"] == "mean" and result["config"]["attributes_not_predicted"] == ["size"]
    assert set(result["attributes"]) == {"color"} and result["counts"]["images"] == 4


@needs_d2
def test_workbench_backbone_in_detectron2(tmp_path):
    """MODEL.BACKBONE.NAME build_workbench_backbone with MobileNetV3 and frozen BN, through detectron2's registry."""
    from detectron2.modeling import build_model
    from torchvision.ops import FrozenBatchNorm2d

    cfg = _cfg(tmp_path, ["MODEL.MULTITASK.BACKBONE.NAME", "mobilenet_v3_large",
                          "MODEL.MULTITASK.BACKBONE.NORM", "frozen_bn"])
    model = build_model(cfg)
    assert {k: v.channels for k, v in model.backbone.output_shape().items()} == \
        {"res2": 24, "res3": 40, "res4": 112, "res5": 960}
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.modules())
    losses = model.train()(_d2_batch()[0], generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in losses.values())
