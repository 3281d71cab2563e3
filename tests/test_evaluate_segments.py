"""Panoptic and semantic evaluation of a model over a data set (engine/evaluate_segments.py): an oracle that
predicts the ground truth scores 100, and a wrong attribute costs joint PQ and accuracy but not PQ."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.data.segmentation import open_dataset
from workbench.data.synthetic import synthetic_splits
from workbench.engine.evaluate_segments import _ground_truth, evaluate_segments


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return {task: synthetic_splits(root / task, 2, 3, image_size=64, progress=False, task=task)[1]
            for task in ("panoptic", "semantic")}


class Oracle:
    """Predicts each image's ground truth (optionally with every `tone` attribute wrong)."""

    def __init__(self, dataset, wrong_tone=False):
        self.dataset, self.wrong_tone = dataset, wrong_tone
        self.cfg = SimpleNamespace(attributes=dataset.schema.attributes)

    def eval(self):
        return self

    def predict(self, items, tasks):
        out = []
        for item in items:
            index = next(i for i, r in enumerate(self.dataset.records) if r["image_id"] == item["image_id"])
            ids, segments, labels = _ground_truth(self.dataset, index)
            pred = {}
            if "panoptic" in tasks:
                keep = [dict(s, score=1.0) for s in segments if not s["iscrowd"]]
                if self.wrong_tone:
                    for s in keep:
                        if s["attributes"].get("tone", -1) >= 0:
                            s["attributes"] = dict(s["attributes"], tone=1 - s["attributes"]["tone"])
                pred.update(panoptic_seg=torch.from_numpy(ids), segments_info=keep)
            if "semantic" in tasks:
                c = self.dataset.schema.num_classes
                one_hot = np.zeros((c, *labels.shape), np.float32)
                for k in range(c):
                    one_hot[k][labels == k] = 1
                pred["sem_seg"] = torch.from_numpy(one_hot)
            out.append(pred)
        return out


def test_oracle_scores_100(splits):
    pan = open_dataset(splits["panoptic"], "panoptic")
    result = evaluate_segments(Oracle(pan), pan, "panoptic", progress=False, semantic=True)
    scalars = result.scalars()
    assert scalars["panoptic/PQ"] == pytest.approx(100) and scalars["joint_panoptic/PQ"] == pytest.approx(100)
    assert scalars["panoptic/PQ_st"] == pytest.approx(100) and result.panoptic.panoptic.stuff.n == 2
    assert scalars["semantic/mIoU"] == pytest.approx(100)
    assert scalars["panoptic_attribute_accuracy/tone"] == pytest.approx(1.0)
    assert result.panoptic.attributes["tone"].count > 0
    sem = open_dataset(splits["semantic"], "semantic")
    result = evaluate_segments(Oracle(sem), sem, "semantic", progress=False)
    assert result.panoptic is None and result.scalars()["semantic/mIoU"] == pytest.approx(100)
    assert set(result.table()["metric"]) == {"mIoU", "fwIoU", "mACC", "pACC"}


def test_wrong_attributes_cost_joint_pq_not_pq(splits):
    pan = open_dataset(splits["panoptic"], "panoptic")
    scalars = evaluate_segments(Oracle(pan, wrong_tone=True), pan, "panoptic", progress=False).scalars()
    assert scalars["panoptic/PQ"] == pytest.approx(100)
    assert scalars["panoptic_attribute_accuracy/tone"] == 0
    assert scalars["joint_panoptic/PQ_st"] == 0 and scalars["joint_panoptic/PQ_th"] == pytest.approx(100)


def test_a_model_runs_through_both_tasks(splits):
    pan = open_dataset(splits["panoptic"], "panoptic")
    torch.manual_seed(0)
    model = wb.build_model(wb.ModelConfig.tiny(**pan.schema.model_fields(), task="panoptic"))
    result = evaluate_segments(model, pan, "panoptic", progress=False, semantic=True)
    assert result.panoptic.panoptic.images == 3 and result.semantic.images == 3
    with pytest.raises(ValueError, match="semantic label maps"):
        evaluate_segments(model, open_dataset(splits["semantic"], "semantic"), "panoptic", progress=False)


def test_semantic_ground_truth_of_panoptic_data_equals_the_semantic_converters(splits):
    """The same labelme folder (same seed) converted both ways: the label map the evaluation derives from the
    panoptic PNG equals the one labelme -> semantic wrote."""
    pan = open_dataset(splits["panoptic"], "panoptic")
    sem = open_dataset(splits["semantic"], "semantic")
    assert len(pan) == len(sem) == 3
    for i in range(3):
        from_panoptic, from_semantic = _ground_truth(pan, i)[2], _ground_truth(sem, i)[2]
        assert np.array_equal(from_panoptic, from_semantic) and (from_semantic != 255).any()


def test_per_class_table_joins_pq_and_iou_by_class_name():
    """Notebook 03's per-class view of a panoptic evaluation: PQ / SQ / RQ with counts and the class's IoU."""
    from workbench.engine.evaluate_segments import SegmentationEvalResult
    from workbench.metrics.panoptic import PanopticResult, PQClass, PQGroup
    from workbench.metrics.panoptic_attributes import PanopticAttributeResult
    from workbench.metrics.semantic import SemanticResult

    group = PQGroup(50.0, 80.0, 62.5, 2)
    per_class = {"circle": PQClass(60.0, 80.0, 75.0, 3, 1, 1, True), "sky": PQClass(None, None, None, 0, 0, 0, False)}
    pq = PanopticResult(group, group, group, per_class, images=2)
    panoptic = PanopticAttributeResult(pq, pq, {}, {}, matched=3)
    semantic = SemanticResult(70.0, 70.0, 80.0, 90.0, {"circle": 65.0, "sky": 75.0}, {"circle": 85.0, "sky": 75.0},
                              [], images=2)
    table = SegmentationEvalResult("panoptic", panoptic, semantic).per_class_table()
    assert list(table.index) == ["circle", "sky"]
    assert table.loc["circle", ["PQ", "TP", "FP", "FN", "IoU", "ACC"]].tolist() == [60.0, 3, 1, 1, 65.0, 85.0]
    assert table.loc["sky", "kind"] == "stuff" and np.isnan(table.loc["sky", "PQ"]) and table.loc["sky", "IoU"] == 75.0
    only = SegmentationEvalResult("semantic", None, semantic).per_class_table()
    assert list(only.columns) == ["IoU", "ACC"] and only.loc["sky", "ACC"] == 75.0
