"""Published panoptic and semantic checkpoints: upstream's COCO panoptic (133 classes: 80 things, 53 stuff) and
ADE20K semantic (150) class heads, and transformers' `*-coco-panoptic` / `*-ade-semantic` folders, carry their
class rows over by name as the instance checkpoints do (tests/test_pretrained.py)."""
import pickle

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.pretrained.ade20k import ADE20K_CLASSES, ade20k_short_name
from workbench.pretrained.architecture import upstream_class_names
from workbench.pretrained.coco import COCO_INSTANCE_CLASSES, COCO_PANOPTIC_CLASSES, COCO_PANOPTIC_STUFF

pytest.importorskip("transformers", reason="transformers (a dev dependency) builds the reference checkpoints")
from test_pretrained import as_upstream, transformers_model  # noqa: E402  (the instance tests' builders)


def test_class_lists_are_upstreams():
    assert len(COCO_PANOPTIC_CLASSES) == 133 and COCO_PANOPTIC_CLASSES[:80] == COCO_INSTANCE_CLASSES
    assert [COCO_PANOPTIC_CLASSES[i] for i in (80, 100, 132)] == ["banner", "road", "rug-merged"]
    assert COCO_PANOPTIC_STUFF == tuple(range(80, 133)) and len(set(COCO_PANOPTIC_CLASSES)) == 133
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert [ade20k_short_name(ADE20K_CLASSES[i]) for i in (0, 6, 8, 12, 149)] == [
        "wall", "road", "window", "person", "flag"]
    assert upstream_class_names(133) is COCO_PANOPTIC_CLASSES and upstream_class_names(150) is ADE20K_CLASSES
    assert upstream_class_names(80) is COCO_INSTANCE_CLASSES and upstream_class_names(81) is None


def _upstream_pkl(path, num_classes, seed):
    """A random-init model with `num_classes` rows saved as upstream's model zoo .pkl."""
    from workbench.config import ModelConfig

    torch.manual_seed(seed)
    cfg = ModelConfig.coco_r50(num_classes=num_classes, hidden_dim=32, mask_dim=32, dim_feedforward=64,
                               enc_dim_feedforward=64, enc_layers=1, dec_layers=2, nheads=4, num_queries=6,
                               pretrained_backbone=False, backbone_norm="frozen_bn")
    source = wb.build_model(cfg).eval()
    state = as_upstream(source)
    state["criterion.empty_weight"] = np.ones(num_classes + 1, np.float32)
    with open(path, "wb") as f:
        pickle.dump({"model": state, "__author__": "test"}, f, protocol=2)
    return source


@pytest.mark.parametrize("num_classes, names", [
    (133, {"road": 100, "person": 0, "sky-other-merged": 119, "wall-brick": 109}),
    (150, {"road": 6, "wall": 0, "person": 12, "road, route": 6}),  # ADE20K: the first synonym or the whole list
])
def test_upstream_panoptic_and_semantic_heads_carry_rows_by_name(tmp_path, num_classes, names):
    pkl = tmp_path / "model_final_test.pkl"
    source = _upstream_pkl(pkl, num_classes, seed=num_classes)
    categories = list(names) + ["unicorn"]
    cfg = wb.pretrained_config(pkl, num_classes=len(categories), attributes={"tone": ["dry", "wet"]})
    assert cfg.num_queries == 6 and cfg.dec_layers == 2
    torch.manual_seed(0)
    model = wb.build_model(cfg)
    fresh = model.decoder.class_head.weight.detach().clone()
    report = wb.load_pretrained(model, pkl, categories=categories)
    theirs, ours = source.decoder.class_head.weight, model.decoder.class_head.weight
    for row, (name, their_row) in enumerate(names.items()):
        assert torch.equal(ours[row], theirs[their_row]), name
    assert torch.equal(ours[len(names)], fresh[len(names)])  # unicorn: as initialised
    assert torch.equal(ours[-1], theirs[-1])  # no object
    assert report.class_rows.new == ("unicorn",) and report.class_rows.matched_by == "name"
    assert len(report.class_rows.dropped) == num_classes - len(set(names.values()))


def test_transformers_ade_semantic_folder_carries_rows_by_id2label(tmp_path):
    """transformers' ADE20K folders name rows by their first synonym ('road'); ours may use either form."""
    id2label = {i: ade20k_short_name(n) for i, n in enumerate(ADE20K_CLASSES)}
    hf = transformers_model(num_labels=150, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    hf.save_pretrained(tmp_path / "ade")
    cfg = wb.pretrained_config(tmp_path / "ade", num_classes=3)
    model = wb.build_model(cfg)
    report = wb.load_pretrained(model, tmp_path / "ade", categories=["sky", "road", "flag"])
    assert report.class_rows.carried == {"sky": "sky", "road": "road", "flag": "flag"}
    theirs = hf.class_predictor.weight
    for row, their_row in enumerate((2, 6, 149)):
        assert torch.equal(model.decoder.class_head.weight[row], theirs[their_row])
