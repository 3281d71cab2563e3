"""Panoptic and semantic runs end to end at toy scale: `workbench demo --task`, `train --config` with a COCO
panoptic file, `eval --run` and `predict` on such a run (the instance pipeline is tests/test_demo.py)."""
import json

import pytest

from workbench.cli import main
from workbench.engine.demo import run_demo


@pytest.fixture(scope="module")
def panoptic_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("pan")
    out, data = root / "run", root / "data"
    assert run_demo(str(out), str(data), device="cpu", max_iter=3, components=False, train_images=8,
                    val_images=3, progress=False, task="panoptic") == 0
    return out, data


def test_panoptic_demo_writes_pq_joint_pq_attributes_and_miou(panoptic_demo, capsys):
    out, data = panoptic_demo
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "panoptic" and metrics["data"]["path"].endswith("panoptic.json")
    pan = metrics["panoptic"]
    assert pan["panoptic"]["images"] == 3 and set(pan["attributes"]) == {"color", "size", "tone"}
    assert pan["panoptic"]["stuff"]["n"] + pan["panoptic"]["things"]["n"] >= 1
    assert metrics["semantic"]["images"] == 3
    assert len(list((out / "overlays").glob("*.png"))) == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"eval/panoptic/PQ", "eval/joint_panoptic/PQ", "eval/semantic/mIoU"} <= set(tags)
    assert events.Scalars("eval/panoptic/PQ")[0].step == 3

    assert main(["eval", "--run", str(out), "--json", "--device", "cpu"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["task"] == "panoptic" and "PQ_st" not in evaluated  # nested as written
    assert evaluated["panoptic"]["panoptic"]["all"] == pan["panoptic"]["all"]
    images = sorted((data / "val").glob("*.png"))[:2]
    assert main(["predict", "--run", str(out), *map(str, images), "--out", str(out.parent / "pred"),
                 "--device", "cpu"]) == 0
    assert len(list((out.parent / "pred").glob("*.png"))) == 2


def test_train_config_on_coco_panoptic_takes_stuff_classes_from_the_data(panoptic_demo, tmp_path):
    _, data = panoptic_demo
    (tmp_path / "cfg.yaml").write_text(
        "model: {preset: tiny, task: panoptic, loss: {num_points: 64}}\n"
        "solver: {batch_size: 2, max_iter: 1, log_period: 1}\n"
        f"data: {{train: {data / 'train' / 'panoptic' / 'panoptic.json'}, "
        f"val: {data / 'val' / 'panoptic' / 'panoptic.json'}}}\n"
        "augment: {image_size: 64, min_scale: 0.9, max_scale: 1.1, test_shortest_edge: 0}\n")
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "run"),
                 "--device", "cpu"]) == 0
    from workbench.engine.inference import load_run

    cfg = load_run(tmp_path / "run").cfg.model
    assert cfg.task == "panoptic" and cfg.num_classes == 5 and cfg.stuff_classes == (3, 4)
    assert cfg.attribute_names == ("color", "size", "tone")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["task"] == "panoptic"


def test_semantic_demo_reports_miou(tmp_path):
    out = tmp_path / "run"
    assert run_demo(str(out), str(tmp_path / "data"), device="cpu", max_iter=2, components=False, train_images=8,
                    val_images=2, progress=False, task="semantic") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "semantic" and metrics["panoptic"] is None
    assert set(metrics["semantic"]["iou"]) == {"circle", "square", "triangle", "sky", "ground"}


def test_demo_prints_attribute_accuracies_as_percent(panoptic_demo, capsys, monkeypatch):
    """The demo's closing line: PQ in %, accuracies (fractions in metrics.json) as % too, not rounded to 1.0."""
    from types import SimpleNamespace

    import workbench.engine.pipeline as pipeline

    out, data = panoptic_demo
    scalars = {"panoptic/PQ": 75.11, "panoptic_attribute_accuracy/size": 0.9697}
    monkeypatch.setattr(pipeline, "train_and_evaluate",
                        lambda *a, **k: (None, SimpleNamespace(scalars=lambda: scalars)))
    assert run_demo(str(out.parent / "again"), str(data), device="cpu", max_iter=1, components=False,
                    train_images=8, val_images=3, progress=False, task="panoptic") == 0
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("[demo]")][-1]
    assert "panoptic/PQ 75.1;" in line and "panoptic_attribute_accuracy/size 97.0%" in line
