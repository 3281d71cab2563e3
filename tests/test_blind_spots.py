"""Small, realistic bugs the rest of the suite let through (issue 24, group 13). Each test pins one of them: the
docstring names the mutation it was checked against (applied once, the test failed, reverted).

They live together because each guards a different module against the same kind of failure, a test whose
fixture happened to agree with the bug (names already in alphabetical order, a crop that removed only the last
instances, a batch whose empty image had company, no value that only a prediction used)."""
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

import workbench as wb
from workbench.config import AttributeSpec, DataConfig, RunConfig
from workbench.harness.synthetic import synthetic_batch

PATTERN = AttributeSpec("pattern", ("stripes", "dots", "outline"), kind="multi")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


# ---- the restricted unpickler checks (module, name) pairs, not modules ----
class _Eval:
    """Pickles as `builtins.eval(code)`: builtins is an allowed module (dict, list), eval is not an allowed name."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


class _Getattr:
    """Pickles as `builtins.getattr(obj, name)`: the usual first step of a pickle that reaches os.system."""

    def __reduce__(self):
        return getattr, (dict, "fromkeys")


def test_unpickler_refuses_a_disallowed_name_of_an_allowed_module(tmp_path):
    """Mutation caught: find_class checking `module in {m for m, _ in ALLOWED_GLOBALS}` (the flag file appears)."""
    from workbench.pretrained import read_checkpoint
    from workbench.pretrained.safe_pickle import RefusedPickleError, load_numpy_pickle

    flag = tmp_path / "ran.txt"
    path = tmp_path / "model_final_evil.pkl"
    code = f"open({str(flag)!r}, 'w').write('the pickle ran code')"
    # protocol 2 spells the module `__builtin__` (as Python 2 wrote the model zoo), later ones `builtins`
    for protocol, module in ((2, "__builtin__"), (pickle.DEFAULT_PROTOCOL, "builtins")):
        with open(path, "wb") as f:
            pickle.dump({"model": {"w": np.zeros(2)}, "payload": _Eval(code)}, f, protocol=protocol)
        with pytest.raises(RefusedPickleError, match=rf"model_final_evil\.pkl.*refused.* {module}\.eval"):
            read_checkpoint(path)
        with pytest.raises(RefusedPickleError, match=rf" {module}\.eval"):
            load_numpy_pickle(path)
        assert not flag.exists()
        with open(path, "wb") as f:
            pickle.dump({"model": {"w": np.zeros(2)}, "payload": _Getattr()}, f, protocol=protocol)
        with pytest.raises(RefusedPickleError, match=rf" {module}\.getattr"):
            load_numpy_pickle(path)


# ---- export-weights keeps the class order ----
def _resnet_run(root, categories_json, train_json=None):
    """A run folder as `workbench train` leaves it (config.yaml, model_final.pt), with a ResNet-50 trunk so it
    exports to transformers; class names from categories.json (when given) or from data.train."""
    from workbench.config_file import dump_yaml, to_dict
    from workbench.engine.checkpoint import save_checkpoint
    from workbench.engine.run_categories import save_category_names

    torch.manual_seed(0)
    cfg = wb.ModelConfig.tiny(num_classes=3, backbone="resnet50", num_queries=4)
    run = RunConfig(model=cfg, device="cpu", data=DataConfig(train=str(train_json) if train_json else ""))
    root.mkdir()
    save_checkpoint(root / "model_final.pt", {"model": wb.build_model(cfg).state_dict(), "config": to_dict(run)})
    dump_yaml(run, root / "config.yaml")
    if categories_json:
        save_category_names(root, categories_json, "test")
    return root


@pytest.mark.parametrize("source", ["categories.json", "data.train"])
def test_export_weights_keeps_the_class_order_not_the_alphabet(tmp_path, source, capsys):
    """Mutation caught: `enumerate(sorted(class_names))` in to_config_dict (bicycle would become class 0)."""
    from workbench.cli import main

    names = ["person", "bicycle", "car"]  # COCO's order: not alphabetical
    train = tmp_path / "train.json"
    train.write_text(json.dumps({"images": [], "annotations": [],
                                 "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}))
    run = _resnet_run(tmp_path / "run", names if source == "categories.json" else None, train)
    if source == "categories.json":
        train.unlink()  # the names must come from the run itself
    assert main(["export-weights", str(run), "--format", "transformers", str(tmp_path / "hub")]) == 0, \
        capsys.readouterr().err
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert config["id2label"] == {"0": "person", "1": "bicycle", "2": "car"}
    assert config["label2id"] == {"person": 0, "bicycle": 1, "car": 2}


# ---- a crop keeps each instance's attributes with its mask ----
def _three_instances(tmp_path):
    """One 32x32 image; instance i is an 8x8 square at column 10 i with colour i and its own pattern set;
    instance 1's pattern is unlabeled."""
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    patterns = [[0], -1, [1, 2]]
    anns = []
    for i, p in enumerate(patterns):
        m = np.zeros((32, 32), bool)
        m[4:12, 10 * i: 10 * i + 8] = True
        anns.append({"id": i + 1, "image_id": 1, "category_id": i + 1, "iscrowd": 0, "bbox": [10 * i, 4, 8, 8],
                     "area": 64.0, "segmentation": rle(m), "attributes": {"color": i, "pattern": p}})
    data = {"images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 32}], "annotations": anns,
            "categories": [{"id": i + 1, "name": f"c{i}"} for i in range(3)],
            "attributes": [{"name": "color", "values": [{"id": i, "name": f"v{i}"} for i in range(3)]},
                           {"name": "pattern", "kind": "multi",
                            "values": [{"id": k, "name": n} for k, n in enumerate(PATTERN.values)]}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("dropped", [0, 1], ids=["leading", "middle"])
def test_a_crop_keeps_attributes_aligned_with_their_masks(tmp_path, dropped):
    """Mutations caught: `attributes[n][:keep.sum()]` and `v[:keep.sum()]` (the first rows instead of the kept
    rows) in CocoAttributeDataset.__getitem__. The only other crop test removes the last instances, where both
    agree."""
    from workbench.data.dataset import CocoAttributeDataset

    def crop_away(image, masks, rng):  # blank the dropped instance's columns, as a crop that misses it would
        image, masks = image.copy(), masks.copy()
        image[:, 10 * dropped: 10 * dropped + 8] = 0
        masks[:, :, 10 * dropped: 10 * dropped + 8] = False
        return image, masks

    item = CocoAttributeDataset(_three_instances(tmp_path), augmentation=crop_away)[0]["instances"]
    kept = [i for i in range(3) if i != dropped]
    # each kept mask is still at its own columns, and its rows of every target say the same instance
    assert [int(m.any(0).nonzero()[0]) // 10 for m in item["masks"]] == kept
    assert item["labels"].tolist() == kept  # category ids 1..3 -> contiguous 0..2
    assert item["attributes"]["color"].tolist() == kept
    hot = {0: [True, False, False], 1: [False] * 3, 2: [False, True, True]}
    assert item["attributes"]["pattern"].tolist() == [hot[i] for i in kept]
    assert item["attribute_labeled"]["pattern"].tolist() == [i != 1 for i in kept]


# ---- images without instances reach the model and train as negatives ----
def _empty(item):
    h, w = item["image"].shape[1:]
    return {"image": item["image"], "instances": {
        "labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, h, w, dtype=torch.bool),
        "attributes": {n: torch.zeros(0, dtype=torch.long) for n in item["instances"]["attributes"]}}}


def test_an_empty_image_reaches_the_model_in_its_batch(tmp_path, monkeypatch):
    """Mutation caught: `collate` keeping only images with instances (the model then saw 1 image, not 2)."""
    from workbench.config import SolverConfig
    from workbench.engine.trainer import train
    from workbench.model.meta_arch import MultiTaskMask2Former

    items = synthetic_batch(3, {"color": 3}, batch=2, size=64, seed=0)
    items[1] = _empty(items[1])
    seen = []
    forward = MultiTaskMask2Former.forward

    def counting(self, batch, *args, **kwargs):
        if self.training:
            seen.append((len(batch), sum(len(b["instances"]["labels"]) == 0 for b in batch)))
        return forward(self, batch, *args, **kwargs)

    monkeypatch.setattr(MultiTaskMask2Former, "forward", counting)
    model = wb.ModelConfig.tiny(num_classes=3, attributes={"color": ["r", "g", "b"]}, loss=wb.LossConfig(num_points=64))
    cfg = RunConfig(model=model, solver=SolverConfig(batch_size=2, max_iter=2, warmup_iters=0, checkpoint_period=2),
                    device="cpu")
    train(cfg, tmp_path / "run", dataset=items, progress=False)
    assert seen == [(2, 1), (2, 1)]  # every step: 2 images, 1 of them empty


def test_an_all_empty_batch_trains_as_negatives():
    """mmdet's rule, at the whole model: no ground truth gives zero mask/dice losses (every stage) and a finite,
    positive class loss that pushes every query to no-object, with finite gradients. Mutation caught: loss_masks
    without its no-match early return together with num_masks without its floor of 1 (NaN); either alone is
    harmless."""
    torch.manual_seed(0)
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=[AttributeSpec("color", ("r", "g", "b")), PATTERN],
                              loss=wb.LossConfig(num_points=64))
    model = wb.build_model(cfg).train()
    batch = [_empty(b) for b in synthetic_batch(3, {"color": 3}, batch=2, size=64, seed=1)]
    for b in batch:
        b["instances"]["attributes"]["pattern"] = torch.zeros(0, 3, dtype=torch.bool)
        b["instances"]["attribute_labeled"] = {"pattern": torch.zeros(0, dtype=torch.bool)}
    losses = model(batch, generator=gen())
    assert all(torch.isfinite(v) for v in losses.values())
    mask_terms = [k for k in losses if k.startswith(("loss_mask", "loss_dice"))]
    assert len(mask_terms) == 2 * (cfg.dec_layers + 1) and all(losses[k].item() == 0.0 for k in mask_terms)
    assert losses["loss_ce"].item() > 0
    sum(losses.values()).backward()
    grad = model.decoder.class_head.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---- macro F1 counts a value seen only in the predictions ----
def test_macro_f1_counts_a_value_only_predicted(tmp_path):
    """Mutation caught: `occurs = (tp + fn) > 0` in metrics/attributes.multi_label_result (macro F1 1.0 instead of 2/3:
    the value predicted where no GT has it would not count against the model)."""
    from workbench.engine.evaluate import evaluate_predictions

    size, masks = 32, []
    for i in range(2):
        m = np.zeros((size, size), bool)
        m[4:20, 16 * i: 16 * i + 12] = True
        masks.append(m)
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": size, "width": size}],
          "categories": [{"id": 0, "name": "garment"}],
          "attributes": [{"name": "pattern", "kind": "multi",
                          "values": [{"id": k, "name": n} for k, n in enumerate(PATTERN.values)]}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": 0, "iscrowd": 0, "area": float(m.sum()),
                           "bbox": [16 * i, 4, 12, 16], "segmentation": rle(m), "attributes": {"pattern": [i]}}
                          for i, m in enumerate(masks)]}
    sets = np.array([[True, False, False], [False, True, True]])  # "outline" only in a prediction: a pure FP
    pred = {"masks": np.stack(masks), "scores": np.array([0.9, 0.8]), "labels": np.zeros(2, int),
            "class_scores": np.array([0.9, 0.8]), "mask_scores": np.ones(2), "query_index": np.arange(2),
            "attributes": {}, "attribute_scores": {"pattern": np.full(2, 0.9)}, "attribute_no_object": {},
            "attribute_probs": {"pattern": np.where(sets, 0.9, 0.1)}, "attribute_sets": {"pattern": sets}}
    m = evaluate_predictions(gt, {1: pred}).multi_label["pattern"]
    assert {v: (d["tp"], d["fp"], d["fn"]) for v, d in m.per_value.items()} == {
        "stripes": (1, 0, 0), "dots": (1, 0, 0), "outline": (0, 1, 0)}
    assert m.macro["f1"] == pytest.approx(2 / 3)
    assert m.macro["precision"] == pytest.approx(2 / 3) and m.macro["recall"] == pytest.approx(1.0)
    assert m.micro["f1"] == pytest.approx(4 / 5)


# ---- a multi-label value is predicted where its probability exceeds the threshold, strictly ----
@pytest.mark.parametrize("threshold", [0.5, 0.25])
def test_a_probability_equal_to_the_threshold_is_not_predicted(threshold):
    """Decided: `p > threshold` (strict), as the config, README, inspector and postprocess say and as masks are
    binarised (logit > 0, i.e. sigmoid > 0.5). Mutation caught: `>=` in instance_inference. Logits of exactly
    logit(threshold) (0 for 0.5) give p == threshold in float32; 1e-5 above is predicted."""
    from workbench.model.postprocess import instance_inference

    at = torch.logit(torch.tensor(threshold))
    assert torch.sigmoid(at).item() == threshold  # the boundary is hit exactly
    above = at + 1e-5
    attribute_logits = {"pattern": torch.stack([at.repeat(3), torch.stack([at, above, at])])}  # (Q=2, K=3)
    class_logits = torch.tensor([[4.0, -4.0], [3.0, -4.0]])
    out = instance_inference(class_logits, attribute_logits, torch.ones(2, 8, 8), (32, 32), (32, 32), topk=2,
                             multi_label={"pattern": threshold})
    sets = {int(q): s.tolist() for q, s in zip(out["query_index"], out["attribute_sets"]["pattern"])}
    assert sets == {0: [False, False, False], 1: [False, True, False]}


def test_export_metadata_states_the_same_threshold_rule(tmp_path):
    """The attribute heads' metadata (for readers outside the workbench) says `> threshold`, as inference does."""
    from safetensors import safe_open

    from workbench.pretrained import export_transformers

    cfg = wb.ModelConfig.tiny(num_classes=2, backbone="resnet50", num_queries=4, attributes=[PATTERN])
    out = export_transformers(wb.build_model(cfg).eval(), tmp_path / "export", ["cat", "dog"])
    with safe_open(str(out / "attribute_heads.safetensors"), "pt") as f:
        about = f.metadata()["about"]
    assert "> threshold" in about and ">= threshold" not in about


# ---- the focal loss takes alpha and gamma in their places ----
def test_attribute_focal_loss_equals_torchvisions_on_the_matched_rows():
    """Mutation caught: focal_alpha and focal_gamma swapped between LossConfig, build_criterion and
    multilabel_loss. alpha 0.7 / gamma 0.5 are both valid either way round, so torchvision does not reject the
    swap; the value differs."""
    from torchvision.ops import sigmoid_focal_loss

    from workbench.harness import synthetic
    from workbench.model.meta_arch import build_criterion

    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=[PATTERN],
                              loss=wb.LossConfig(num_points=64, multi_label_loss="focal", focal_alpha=0.7,
                                                 focal_gamma=0.5))
    p = synthetic.planted_problem(num_classes=3, num_queries=8, num_targets=3, seed=0, confidence=6.0)
    g = gen(1)
    for t in p.targets:
        t["attributes"] = {"pattern": (torch.rand(3, 3, generator=g) > 0.5)}
        t["attribute_labeled"] = {"pattern": torch.tensor([True, False, True])}
    p.outputs.attribute_logits = {"pattern": torch.randn(2, 8, 3, generator=g) * 2}
    criterion = build_criterion(cfg)
    ours = criterion(p.outputs, p.targets, generator=gen())["loss_attr_pattern"]
    indices = criterion.matcher(p.outputs, p.targets, generator=gen())
    logits, targets = [], []
    for b, (src, tgt) in enumerate(indices):
        labeled = p.targets[b]["attribute_labeled"]["pattern"][tgt]
        logits.append(p.outputs.attribute_logits["pattern"][b, src][labeled])
        targets.append(p.targets[b]["attributes"]["pattern"][tgt][labeled].float())
    logits, targets = torch.cat(logits), torch.cat(targets)
    assert len(logits) == 4  # 2 labeled instances per image
    expected = sigmoid_focal_loss(logits, targets, alpha=0.7, gamma=0.5, reduction="mean")
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)
    assert ours.item() != pytest.approx(sigmoid_focal_loss(logits, targets, alpha=0.5, gamma=0.7,
                                                           reduction="mean").item(), rel=1e-3)


# ---- Fashionpedia: which categories are scored with attribute F1 ----
def test_only_categories_with_attributes_are_scored_with_f1():
    """The rule itself (FPEval's catsWithAttributes): a category whose GT carries attribute ids is matched on IoU
    and F1, any other on IoU alone, so wrong attribute ids cost AP only in the first. Mutations caught:
    `if not a.get("attribute_ids")` in categories_with_attributes, `catId in self.attributed` in
    _IouF1Eval.evaluateImg, `category_id not in attributed` in iou_f1_ap's mean over F1 thresholds."""
    from workbench.metrics.fashionpedia import (FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES, categories_with_attributes,
                                                default_attributed, iou_f1_ap)

    size, vocabulary = 32, [101, 102, 103, 104]
    masks = []
    for i in range(2):
        m = np.zeros((size, size), bool)
        m[2:14, 16 * i: 16 * i + 12] = True
        masks.append(m)
    # category 1 has attributes in the GT, category 2 none
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": size, "width": size}],
          "categories": [{"id": 1, "name": "shirt"}, {"id": 2, "name": "glasses"}],
          "annotations": [{"id": i + 1, "image_id": 1, "category_id": i + 1, "iscrowd": 0, "area": float(m.sum()),
                           "bbox": [16 * i, 2, 12, 12], "segmentation": rle(m),
                           "attribute_ids": [101, 102] if i == 0 else []} for i, m in enumerate(masks)]}
    assert categories_with_attributes(gt) == {1}
    assert set(default_attributed({"categories": [{"id": i} for i in range(46)]})) == \
        set(FASHIONPEDIA_CATEGORIES_WITH_ATTRIBUTES)

    def ap(category, attribute_ids):
        det = [{"image_id": 1, "category_id": category, "segmentation": rle(masks[category - 1]), "score": 0.9,
                "attribute_ids": attribute_ids}]
        only = dict(gt, annotations=[a for a in gt["annotations"] if a["category_id"] == category],
                    categories=[c for c in gt["categories"] if c["id"] == category])
        return iou_f1_ap(only, det, vocabulary, attributed=categories_with_attributes(gt))["AP"]

    assert ap(1, [101, 102]) == pytest.approx(100.0)
    assert ap(1, [103, 104]) == 0.0  # attribute F1 (0 + 1/2) / 2 < 0.5: no match at any F1 threshold
    assert ap(1, [101]) == pytest.approx(50.0)  # F1 (2/3 + 4/5) / 2 = 0.73: a match at 5 of the 10 F1 thresholds
    assert ap(2, []) == pytest.approx(100.0)
    assert ap(2, [103, 104]) == pytest.approx(100.0)  # IoU alone: its attribute ids do not count
