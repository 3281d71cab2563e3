"""detectron2 adapter, panoptic and semantic (workbench/d2/tasks.py, segment_data.py, segment_evaluation.py):
upstream's TEST flags, its COCO panoptic and ADE20K semantic YAMLs, a registered panoptic dataset with attributes
trained a step and evaluated. Tests marked `needs_d2` skip where detectron2 is not importable (CI); the flag
translation is pure Python and runs everywhere."""
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench as wb
from test_d2 import TINY_OVERRIDES, UPSTREAM_BASE, UPSTREAM_R50, needs_d2
from workbench.d2.tasks import TaskSet, flags_for_task, tasks_from_flags

# Upstream Mask2Former's configs/coco/panoptic-segmentation/{Base-COCO-PanopticSegmentation,
# maskformer2_R50_bs16_50ep}.yaml and configs/ade20k/semantic-segmentation/{Base-ADE20K-SemanticSegmentation,
# maskformer2_R50_bs16_160k}.yaml, keys and values as upstream writes them (comments left out).
_MODEL = UPSTREAM_BASE[:UPSTREAM_BASE.index("DATASETS:")]  # the MODEL block every Base-*.yaml shares
_SOLVER = """\
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
"""
PANOPTIC_BASE = _MODEL + """\
DATASETS:
  TRAIN: ("coco_2017_train_panoptic",)
  TEST: ("coco_2017_val_panoptic_with_sem_seg",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.0001
  STEPS: (327778, 355092)
  MAX_ITER: 368750
  WARMUP_FACTOR: 1.0
  WARMUP_ITERS: 10
""" + _SOLVER + """\
INPUT:
  IMAGE_SIZE: 1024
  MIN_SCALE: 0.1
  MAX_SCALE: 2.0
  FORMAT: "RGB"
  DATASET_MAPPER_NAME: "coco_panoptic_lsj"
TEST:
  EVAL_PERIOD: 5000
DATALOADER:
  FILTER_EMPTY_ANNOTATIONS: True
  NUM_WORKERS: 4
VERSION: 2
"""
ADE20K_BASE = _MODEL + """\
DATASETS:
  TRAIN: ("ade20k_sem_seg_train",)
  TEST: ("ade20k_sem_seg_val",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.0001
  MAX_ITER: 160000
  WARMUP_FACTOR: 1.0
  WARMUP_ITERS: 0
  LR_SCHEDULER_NAME: "WarmupPolyLR"
""" + _SOLVER + """\
INPUT:
  MIN_SIZE_TRAIN: !!python/object/apply:eval ["[int(x * 0.1 * 512) for x in range(5, 21)]"]
  MIN_SIZE_TRAIN_SAMPLING: "choice"
  MIN_SIZE_TEST: 512
  MAX_SIZE_TRAIN: 2048
  MAX_SIZE_TEST: 2048
  CROP:
    ENABLED: True
    TYPE: "absolute"
    SIZE: (512, 512)
    SINGLE_CATEGORY_MAX_AREA: 1.0
  COLOR_AUG_SSD: True
  SIZE_DIVISIBILITY: 512
  FORMAT: "RGB"
  DATASET_MAPPER_NAME: "mask_former_semantic"
TEST:
  EVAL_PERIOD: 5000
  AUG:
    ENABLED: False
    MIN_SIZES: [256, 384, 512, 640, 768, 896]
    MAX_SIZE: 3584
    FLIP: True
DATALOADER:
  FILTER_EMPTY_ANNOTATIONS: True
  NUM_WORKERS: 4
VERSION: 2
"""


def _r50(base: str, num_classes: int, semantic_on: bool, instance_on: bool, panoptic_on: bool) -> str:
    """maskformer2_R50_bs16_*.yaml of a task: the instance one (test_d2) with its base, class count and TEST flags."""
    text = UPSTREAM_R50
    for old, new in (("_BASE_: Base-COCO-InstanceSegmentation.yaml", f"_BASE_: {base}"),
                     ("NUM_CLASSES: 80", f"NUM_CLASSES: {num_classes}"),
                     ("SEMANTIC_ON: False", f"SEMANTIC_ON: {semantic_on}"),
                     ("INSTANCE_ON: True", f"INSTANCE_ON: {instance_on}"),
                     ("PANOPTIC_ON: False", f"PANOPTIC_ON: {panoptic_on}")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def write_upstream_panoptic(folder: Path) -> Path:
    """configs/coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml and its base, in `folder`."""
    (folder / "Base-COCO-PanopticSegmentation.yaml").write_text(PANOPTIC_BASE)
    path = folder / "maskformer2_R50_bs16_50ep.yaml"
    path.write_text(_r50("Base-COCO-PanopticSegmentation.yaml", 133, True, True, True))
    return path


def write_upstream_ade20k(folder: Path) -> Path:
    """configs/ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml and its base, in `folder`."""
    (folder / "Base-ADE20K-SemanticSegmentation.yaml").write_text(ADE20K_BASE)
    path = folder / "maskformer2_R50_bs16_160k.yaml"
    path.write_text(_r50("Base-ADE20K-SemanticSegmentation.yaml", 150, True, False, False))
    return path


# --- the flags, without detectron2 -------------------------------------------------------------------------------
@pytest.mark.parametrize("flags,task,outputs,things_only", [
    ((True, False, False), "instance", ("instance",), False),  # upstream's COCO instance YAMLs
    ((False, True, False), "semantic", ("semantic",), False),  # ADE20K / Cityscapes semantic
    ((True, True, True), "panoptic", ("semantic", "panoptic", "instance"), True),  # COCO panoptic
    ((False, False, True), "panoptic", ("panoptic",), True),
    ((True, True, False), "instance", ("semantic", "instance"), False),
    ((False, True, True), "panoptic", ("semantic", "panoptic"), True),
])
def test_test_flags_become_our_task_and_outputs(flags, task, outputs, things_only):
    """(INSTANCE_ON, SEMANTIC_ON, PANOPTIC_ON): every flag on is an output, in upstream's order; the task is the
    richest; instances keep things only when panoptic is on (upstream)."""
    t = tasks_from_flags(*flags)
    assert t == TaskSet(task, outputs, things_only)
    assert t.flags == flags
    assert tasks_from_flags(*flags_for_task(task)).task == task


def test_all_test_flags_off_is_refused_with_the_keys_and_a_fix():
    with pytest.raises(ValueError, match=r"TEST.\(INSTANCE_ON, SEMANTIC_ON, PANOPTIC_ON\) = \(False, False, False\)"
                                         r".*output nothing.*PANOPTIC_ON True"):
        tasks_from_flags(False, False, False)


# --- config translation ----------------------------------------------------------------------------------------
def _cfg(path: Path, overrides=(), tiny=True):
    from detectron2.config import get_cfg

    from workbench.d2 import add_multitask_config

    cfg = get_cfg()
    add_multitask_config(cfg)
    cfg.merge_from_file(str(path))
    base = [*TINY_OVERRIDES, "DATASETS.TRAIN", "()", "DATASETS.TEST", "()"] if tiny else \
        ["MODEL.META_ARCHITECTURE", "MultiTaskMaskFormer"]
    cfg.merge_from_list([*base, *overrides])
    return cfg


@needs_d2
def test_upstream_panoptic_and_ade20k_yamls_translate(tmp_path):
    """Upstream's COCO panoptic R50 YAML is our coco_r50 with 133 classes, task panoptic and its thresholds; the
    ADE20K semantic one 150 classes, task semantic. Both merge as upstream writes them (the ADE20K base's
    `!!python/object/apply:eval` and WarmupPolyLR included)."""
    from workbench.d2 import model_config_from_cfg
    from workbench.d2.translate import tasks_of_cfg

    panoptic = _cfg(write_upstream_panoptic(tmp_path), ["DATASETS.TRAIN", "()", "DATASETS.TEST", "()"], tiny=False)
    assert model_config_from_cfg(panoptic) == wb.ModelConfig.coco_r50(
        num_classes=133, task="panoptic", object_mask_threshold=0.8, overlap_threshold=0.8)
    assert tasks_of_cfg(panoptic).outputs == ("semantic", "panoptic", "instance")

    ade = _cfg(write_upstream_ade20k(tmp_path), tiny=False)
    assert model_config_from_cfg(ade) == wb.ModelConfig.coco_r50(num_classes=150, task="semantic")
    assert ade.INPUT.MIN_SIZE_TRAIN[0] == 256 and ade.SOLVER.LR_SCHEDULER_NAME == "WarmupPolyLR"

    ade.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.3
    ade.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.6
    m = model_config_from_cfg(ade)
    assert (m.object_mask_threshold, m.overlap_threshold) == (0.3, 0.6)
    ade.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = False
    with pytest.raises(ValueError, match="output nothing"):
        model_config_from_cfg(ade)


@needs_d2
def test_set_model_keys_round_trips_the_task_and_thresholds():
    from detectron2.config import get_cfg

    from workbench.d2 import add_multitask_config, model_config_from_cfg
    from workbench.d2.config import set_model_keys

    cfg = get_cfg()
    add_multitask_config(cfg)
    for task in ("semantic", "panoptic"):
        m = wb.ModelConfig.tiny(num_classes=4, task=task, object_mask_threshold=0.5, overlap_threshold=0.7,
                                enc_dim_feedforward=1024)
        set_model_keys(cfg, m)
        assert model_config_from_cfg(cfg) == m


# --- a registered panoptic dataset -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_panoptic(tmp_path_factory):
    """The demo's synthetic shapes with sky and ground (stuff) and attributes color, size (things), tone (stuff)."""
    from workbench.engine.demo import demo_data, prepare_data

    root = tmp_path_factory.mktemp("synthetic_panoptic")
    prepare_data(root, train_images=4, val_images=2, task="panoptic")
    return dict(zip(("train", "val"), (Path(p) for p in demo_data(root, "panoptic"))))


def _register(synthetic_panoptic, split: str) -> str:
    from workbench.d2 import register_multitask_coco_panoptic

    name = f"synth_panoptic_{split}_{uuid.uuid4().hex[:8]}"
    register_multitask_coco_panoptic(name, synthetic_panoptic[split])
    return name


@needs_d2
def test_register_panoptic_keeps_attributes_and_isthing(synthetic_panoptic):
    """Mask2Former's metadata convention (stuff_classes = every class, thing ids = the things) from each
    category's isthing; the records keep every segment's attributes; the stuff classes reach the ModelConfig."""
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from workbench.d2 import add_multitask_config, model_config_from_cfg
    from workbench.d2.data import multitask_keys_from_dataset

    name = _register(synthetic_panoptic, "train")
    meta = MetadataCatalog.get(name)
    assert meta.stuff_classes == ["circle", "square", "triangle", "sky", "ground"]
    assert meta.thing_classes == ["circle", "square", "triangle"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2}
    assert meta.stuff_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.attribute_names == ["color", "size", "tone"]
    records = DatasetCatalog.get(name)
    assert len(records) == 4
    sky = next(s for s in records[0]["segments_info"] if s["category_id"] == 3)
    assert sky["isthing"] is False and sky["attributes"]["tone"] in (0, 1)

    cfg = get_cfg()
    add_multitask_config(cfg)
    cfg.merge_from_list(["DATASETS.TRAIN", (name,), "DATASETS.TEST", (), "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", True,
                         *multitask_keys_from_dataset(name)])
    m = model_config_from_cfg(cfg)
    assert (m.num_classes, m.stuff_classes, m.task) == (5, (3, 4), "panoptic")
    assert m.attribute_names == ("color", "size", "tone")
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 133
    with pytest.raises(ValueError, match="NUM_CLASSES = 133.*has 5 classes"):
        model_config_from_cfg(cfg)


@needs_d2
@pytest.mark.parametrize("task", ["panoptic", "semantic"])
def test_segment_mapper_targets(synthetic_panoptic, task):
    """Upstream's panoptic mapper: one target per non-crowd segment, stuff included; its semantic mapper: one per
    class present. Attributes ride along; a crowd segment becomes ignore pixels; a crop drops what it removes."""
    from detectron2.data import DatasetCatalog
    from detectron2.data import transforms as T

    from workbench.d2.segment_data import MultiTaskSegmentMapper
    from workbench.data.coco_panoptic import read_panoptic_png

    name = _register(synthetic_panoptic, "train")
    schema = __import__("detectron2.data", fromlist=["MetadataCatalog"]).MetadataCatalog.get(name).schema
    record = DatasetCatalog.get(name)[0]
    segments = record["segments_info"]
    ids = read_panoptic_png(record["pan_seg_file_name"], segments, record["height"], record["width"])
    out = MultiTaskSegmentMapper(True, [], "RGB", task, schema, ["color", "tone"])(record)
    inst = out["instances"]
    if task == "panoptic":
        assert inst.gt_classes.tolist() == [s["category_id"] for s in segments]
        for k, s in enumerate(segments):
            assert torch.equal(inst.gt_masks.tensor[k], torch.from_numpy(ids == s["id"]))
            assert inst.gt_attr_tone[k] == s["attributes"]["tone"] and inst.gt_attr_color[k] == s["attributes"]["color"]
    else:
        classes = sorted({s["category_id"] for s in segments})
        assert inst.gt_classes.tolist() == classes
        for k, c in enumerate(classes):
            union = np.logical_or.reduce([ids == s["id"] for s in segments if s["category_id"] == c])
            assert torch.equal(inst.gt_masks.tensor[k], torch.from_numpy(union))
    assert {3, 4} <= set(inst.gt_classes.tolist())  # sky and ground (stuff) are targets
    assert not out["ignore"].any()

    crowd = dict(record, segments_info=[dict(s, iscrowd=int(k == 2)) for k, s in enumerate(segments)])
    out = MultiTaskSegmentMapper(True, [], "RGB", "panoptic", schema, ["color"])(crowd)
    assert len(out["instances"]) == len(segments) - 1
    assert torch.equal(out["ignore"], torch.from_numpy(ids == segments[2]["id"]))

    top = MultiTaskSegmentMapper(True, [T.CropTransform(0, 0, 128, 40)], "RGB", "panoptic", schema, ["tone"])(record)
    kept = [s for s in segments if (ids[:40] == s["id"]).any()]
    assert top["image"].shape == (3, 40, 128) and top["instances"].gt_classes.tolist() == \
        [s["category_id"] for s in kept]
    assert top["instances"].gt_attr_tone.tolist() == [s["attributes"]["tone"] for s in kept]


def _tiny_panoptic_model(tmp_path, synthetic_panoptic, overrides=()):
    from detectron2.modeling import build_model

    from workbench.d2.data import multitask_keys_from_dataset

    name = _register(synthetic_panoptic, "val")
    cfg = _cfg(write_upstream_panoptic(tmp_path), ["DATASETS.TEST", (name,), *multitask_keys_from_dataset(name),
                                                   "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 128,
                                                   "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD", 0.0,
                                                   "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD", 0.0, *overrides])
    torch.manual_seed(0)
    return name, cfg, build_model(cfg).eval()


@needs_d2
def test_all_three_outputs_equal_the_plain_models(tmp_path, synthetic_panoptic):
    """Upstream's panoptic YAML (all three flags on): one forward gives sem_seg, panoptic_seg and instances, each
    equal to the plain model's `predict(batch, tasks)` with the same weights; instances drop stuff, as upstream
    does with panoptic on, and without panoptic keep them."""
    from detectron2.data import DatasetCatalog

    from test_d2 import _plain_twin
    from workbench.d2 import MultiTaskDatasetMapper

    name, cfg, model = _tiny_panoptic_model(tmp_path, synthetic_panoptic)
    assert model.model_cfg.stuff_classes == (3, 4)
    plain = _plain_twin(model).eval()
    x = MultiTaskDatasetMapper.from_config(cfg, False)(DatasetCatalog.get(name)[0])
    with torch.no_grad():
        out = model([x])[0]
        expected = plain.predict([{"image": x["image"], "height": 128, "width": 128}],
                                 tasks=("semantic", "panoptic", "instance"))[0]
    assert set(out) == {"sem_seg", "panoptic_seg", "instances"}
    torch.testing.assert_close(out["sem_seg"], expected["sem_seg"])
    ids, segments = out["panoptic_seg"]
    assert torch.equal(ids, expected["panoptic_seg"]) and segments == expected["segments_info"]
    assert {s["isthing"] for s in segments} <= {True, False} and len(segments) > 0
    assert torch.equal(out["instances"].query_index, torch.as_tensor(expected["query_index"]))
    things = out["instances"].pred_classes.tolist()

    model.tasks = tasks_from_flags(True, False, False)  # INSTANCE_ON alone: every class may be an instance
    with torch.no_grad():
        every = model([x])[0]["instances"].pred_classes.tolist()
    assert set(every) & {3, 4}, every  # (random init, seed 0: some of the top 10 are stuff)
    assert things == [c for c in every if c not in (3, 4)]


@needs_d2
def test_semantic_only_resizes_the_summed_scores_as_upstream(tmp_path, synthetic_panoptic):
    """SEMANTIC_ON alone with SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE False (upstream's ADE20K setting): the summed
    class scores are resized to the output size (upstream's order), not the mask logits; True: the logits."""
    import torch.nn.functional as F

    from workbench.model.semantic_inference import semantic_inference

    flags = ["MODEL.MASK_FORMER.TEST.INSTANCE_ON", False, "MODEL.MASK_FORMER.TEST.PANOPTIC_ON", False]
    _, _, model = _tiny_panoptic_model(tmp_path, synthetic_panoptic, flags)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model([{"image": image, "height": 100, "width": 150}])[0]
        raw = model.forward_raw(model.preprocess([{"image": image}]).tensor)
    assert set(out) == {"sem_seg"}
    at_input = semantic_inference(raw.class_logits[0], raw.mask_logits[0], (64, 96), (64, 96))["sem_seg"]
    after = F.interpolate(at_input[None], size=(100, 150), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out["sem_seg"], after)
    before = semantic_inference(raw.class_logits[0], raw.mask_logits[0], (64, 96), (64, 96), (100, 150))["sem_seg"]
    assert not torch.allclose(before, after, atol=1e-4)
    model.semantic_resize_after = False  # SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE True
    with torch.no_grad():
        torch.testing.assert_close(model([{"image": image, "height": 100, "width": 150}])[0]["sem_seg"], before)


def _assert_same(results: dict, expected: dict) -> None:
    """Nested {task: {key: float}} equal to 1e-9, NaN equal to NaN."""
    assert results.keys() == expected.keys()
    for task in results:
        assert results[task].keys() == expected[task].keys(), task
        for key, value in results[task].items():
            assert value == pytest.approx(expected[task][key], abs=1e-9, nan_ok=True), (task, key)


@needs_d2
def test_model_evaluated_through_the_adapter_equals_the_engines_evaluation(tmp_path, synthetic_panoptic):
    """mapper -> model -> MultiTaskPanopticEvaluator gives what `workbench.engine.evaluate_segments` gives for the
    plain model with the same weights: PQ, joint PQ, attribute accuracy, mIoU and per-class IoU."""
    from detectron2.data import DatasetCatalog

    from test_d2 import _plain_twin
    from workbench.d2 import MultiTaskDatasetMapper, MultiTaskPanopticEvaluator
    from workbench.d2.segment_evaluation import detectron2_results
    from workbench.data.segmentation import SegmentationDataset
    from workbench.engine.evaluate_segments import evaluate_segments

    name, cfg, model = _tiny_panoptic_model(tmp_path, synthetic_panoptic)
    mapper = MultiTaskDatasetMapper.from_config(cfg, False)
    ours = MultiTaskPanopticEvaluator(name, attribute_names=["color", "size", "tone"], distributed=False,
                                      output_dir=str(tmp_path / "eval"))
    ours.reset()
    with torch.no_grad():
        for record in DatasetCatalog.get(name):
            inputs = [mapper(record)]
            ours.process(inputs, model(inputs))
    results = ours.evaluate()
    dataset = SegmentationDataset.from_coco_panoptic(synthetic_panoptic["val"], task="panoptic")
    engine = evaluate_segments(_plain_twin(model), dataset, "panoptic", progress=False, semantic=True)
    _assert_same(results, detectron2_results(engine))
    assert set(results) == {"panoptic_seg", "joint_panoptic", "panoptic_attributes", "sem_seg"}
    assert results["sem_seg"]["mIoU"] > 0
    assert {"fwIoU", "mACC", "pACC", "IoU-sky", "ACC-ground"} <= set(results["sem_seg"])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["task"] == "panoptic"


@needs_d2
def test_evaluator_pq_equals_detectron2s_coco_panoptic_evaluator(tmp_path, synthetic_panoptic):
    """Predictions made from the ground truth with known errors (a thing dropped, a stuff segment shrunk, a
    segment given the wrong class, a colour wrong): PQ / SQ / RQ (all, things, stuff) equal detectron2's
    COCOPanopticEvaluator (panopticapi's pq_compute) to 1e-9; the wrong colour costs attribute accuracy and joint
    PQ, not PQ."""
    from detectron2.data import DatasetCatalog
    from detectron2.evaluation import COCOPanopticEvaluator

    from workbench.d2 import MultiTaskPanopticEvaluator
    from workbench.data.coco_panoptic import read_panoptic_png

    name = _register(synthetic_panoptic, "val")
    ours = MultiTaskPanopticEvaluator(name, distributed=False)
    d2 = COCOPanopticEvaluator(name, output_dir=str(tmp_path / "d2"))
    ours.reset(), d2.reset()
    wrong_colours = 0
    for i, r in enumerate(DatasetCatalog.get(name)):
        ids = read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], r["height"], r["width"])
        pred_ids, segments = ids.copy(), []
        things = [s for s in r["segments_info"] if s["isthing"]]
        for s in r["segments_info"]:
            attributes, category = dict(s["attributes"]), s["category_id"]
            if s is things[0] and i == 0:
                pred_ids[ids == s["id"]] = 0  # dropped: a false negative
                continue
            if s is things[1] and i == 1:
                category = (category + 1) % 3  # a wrong thing class: a false positive and a false negative
            elif s is things[-1]:
                attributes["color"] = (attributes["color"] + 1) % 3  # matched, colour wrong
                wrong_colours += 1
            if not s["isthing"] and s["category_id"] == 4:  # ground loses its last 3 rows
                rows = np.nonzero((ids == s["id"]).any(1))[0]
                pred_ids[rows[-3:], :] = np.where(ids[rows[-3:], :] == s["id"], 0, pred_ids[rows[-3:], :])
            segments.append({"id": s["id"], "category_id": category, "isthing": category < 3,
                             "attributes": attributes})
        inputs = [{"image_id": r["image_id"], "file_name": r["file_name"]}]
        ours.process(inputs, [{"panoptic_seg": (torch.from_numpy(pred_ids), segments)}])
        d2.process(inputs, [{"panoptic_seg": (torch.from_numpy(pred_ids), [dict(s) for s in segments])}])
    results, reference = ours.evaluate(), d2.evaluate()["panoptic_seg"]
    assert 0 < results["panoptic_seg"]["PQ_th"] < results["panoptic_seg"]["SQ_th"] <= 100
    assert 0 < results["panoptic_seg"]["SQ_st"] < 100
    for key, value in results["panoptic_seg"].items():
        assert value == pytest.approx(reference[key], abs=1e-9), key
    assert results["joint_panoptic"]["PQ_th"] < results["panoptic_seg"]["PQ_th"]
    assert results["joint_panoptic"]["PQ_st"] == results["panoptic_seg"]["PQ_st"]
    color = results["panoptic_attributes"]
    assert color["color_count"] > wrong_colours > 0
    assert color["color_accuracy"] == pytest.approx(100 * (1 - wrong_colours / color["color_count"]))
    assert color["tone_accuracy"] == 100.0


@needs_d2
def test_train_net_trains_and_evaluates_upstreams_panoptic_yaml(tmp_path, synthetic_panoptic):
    """`python -m workbench.d2.train` with upstream's COCO panoptic R50 YAML as _BASE_ (LSJ panoptic mapper, all
    three outputs), tiny sizes, a panoptic dataset with attributes registered: a few steps, then PQ, joint PQ,
    attribute accuracy and mIoU in detectron2's metrics."""
    write_upstream_panoptic(tmp_path)
    out = tmp_path / "out"
    (tmp_path / "multitask.yaml").write_text(textwrap.dedent(f"""\
        _BASE_: maskformer2_R50_bs16_50ep.yaml
        MODEL:
          SEM_SEG_HEAD:
            NUM_CLASSES: 5
          MULTITASK:
            ATTRIBUTE_NAMES: ["color", "tone"]
            ATTRIBUTE_VALUES: [["red", "green", "blue"], ["light", "dark"]]
        DATASETS:
          TRAIN: ("pan_train",)
          TEST: ("pan_val",)
        SOLVER:
          IMS_PER_BATCH: 2
          BASE_LR: 0.001
          MAX_ITER: 3
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
    tiny = [str(v) for v in TINY_OVERRIDES]
    tiny[tiny.index("MODEL.SEM_SEG_HEAD.NUM_CLASSES") + 1] = "5"
    command = [sys.executable, "-m", "workbench.d2.train", "--config-file", str(tmp_path / "multitask.yaml"),
               "--register-panoptic", "pan_train", str(synthetic_panoptic["train"]),
               str(synthetic_panoptic["train"].with_suffix("")), str(synthetic_panoptic["train"].parent),
               "--register-panoptic", "pan_val", str(synthetic_panoptic["val"]),
               str(synthetic_panoptic["val"].with_suffix("")), str(synthetic_panoptic["val"].parent), *tiny]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = [r["total_loss"] for r in records if "total_loss" in r]
    assert losses and all(np.isfinite(losses)), records
    final = records[-1]
    for key in ("panoptic_seg/PQ", "panoptic_seg/PQ_st", "joint_panoptic/PQ", "panoptic_attributes/color_accuracy",
                "panoptic_attributes/tone_count", "sem_seg/mIoU"):
        assert key in final, sorted(final)
    result = json.loads((out / "inference" / "pan_val" / "metrics.json").read_text())
    assert result["panoptic"]["panoptic"]["images"] == 2 and set(result["panoptic"]["attributes"]) == {"color", "tone"}


@needs_d2
def test_ade20k_semantic_yaml_trains_a_step_on_a_panoptic_dataset(tmp_path, synthetic_panoptic):
    """Upstream's ADE20K semantic YAML (mapper "mask_former_semantic": short-edge resize, 512 crop, colour
    augmentation, flip; WarmupPolyLR) on a registered panoptic dataset: one target per class present, attributes
    where the class's segments agree, one finite optimisation step. Its COLOR_AUG_SSD is refused while the model
    predicts attributes (the error names the fix) and applied without them."""
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from workbench.d2 import MultiTaskSegmentMapper
    from workbench.d2.data import multitask_keys_from_dataset
    from workbench.d2.train import Trainer, build_optimizer

    name = _register(synthetic_panoptic, "train")
    sizes = ["INPUT.MIN_SIZE_TRAIN", (96, 128), "INPUT.MAX_SIZE_TRAIN", 256, "INPUT.CROP.SIZE", (96, 96)]
    path = write_upstream_ade20k(tmp_path)
    cfg = _cfg(path, ["DATASETS.TRAIN", (name,), *multitask_keys_from_dataset(name), *sizes])
    with pytest.raises(ValueError, match=r"INPUT.COLOR_AUG_SSD = True.*attributes.*INPUT.COLOR_AUG_SSD False"):
        MultiTaskSegmentMapper.from_config(cfg, is_train=True)
    no_attributes = _cfg(path, ["DATASETS.TRAIN", (name,), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5, *sizes])
    try:
        import cv2  # noqa: F401  -- detectron2's ColorAugSSDTransform needs OpenCV, which detectron2 does not require
    except ImportError:
        with pytest.raises(ImportError, match="opencv-python-headless.*INPUT.COLOR_AUG_SSD False"):
            MultiTaskSegmentMapper.from_config(no_attributes, is_train=True)
    else:
        mapper = MultiTaskSegmentMapper.from_config(no_attributes, is_train=True)
        assert mapper.task == "semantic" and "ColorAugSSD" in repr(mapper.augmentations)

    cfg.INPUT.COLOR_AUG_SSD = False
    mapper = MultiTaskSegmentMapper.from_config(cfg, is_train=True)
    batch = [mapper(r) for r in DatasetCatalog.get(name)[:2]]
    for x in batch:
        classes = x["instances"].gt_classes.tolist()
        assert x["image"].shape[-2:] == (96, 96) and classes == sorted(set(classes))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = build_optimizer(cfg, model)
    scheduler = Trainer.build_lr_scheduler(cfg, optimizer)
    losses = model(batch, generator=torch.Generator().manual_seed(0))
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_attr_tone"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    optimizer.step()
    scheduler.step()
    assert type(scheduler).__name__ == "WarmupPolyLR"


@needs_d2
def test_ignore_pixels_reach_the_mask_losses_as_in_the_plain_model(tmp_path):
    """The segment mapper's "ignore" (crowd, `__ignore__`) leaves those pixels out of the mask losses exactly as
    the plain model's item "ignore" does."""
    from detectron2.modeling import build_model

    from test_d2 import _cfg as instance_cfg
    from test_d2 import _d2_batch, _plain_twin

    torch.manual_seed(0)
    model = build_model(instance_cfg(tmp_path)).train()
    plain = _plain_twin(model).train()
    d2_batch, plain_batch = _d2_batch()
    without = model(d2_batch, generator=torch.Generator().manual_seed(2))
    for x, item in zip(d2_batch, plain_batch):
        ignore = torch.zeros(x["image"].shape[-2:], dtype=torch.bool)
        ignore[:, :48] = True
        x["ignore"], item["ignore"] = ignore, ignore
    losses = model(d2_batch, generator=torch.Generator().manual_seed(2))
    expected = plain(plain_batch, generator=torch.Generator().manual_seed(2))
    for key in expected:
        torch.testing.assert_close(losses[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.isclose(losses["loss_mask"], without["loss_mask"])
