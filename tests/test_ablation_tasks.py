"""`workbench ablate` over tasks: `model.task` as an axis or in the base, each cell on its task's data, and the
tables' metric columns chosen by task (segm AP for instance; PQ all / things / stuff, joint PQ, mIoU and the
attributes on matched segments for panoptic; mIoU, fwIoU, mACC, pACC for semantic)."""
import json

import pandas as pd
import pytest

from workbench.ablation import Grid, GridError, collect_runs, run_grid, write_tables
from workbench.ablation.tables import metric_columns
from workbench.config_file import dump_yaml
from workbench.engine.evaluate_segments import SegmentationEvalResult
from workbench.metrics.attributes import AttributeResult
from workbench.metrics.panoptic import PanopticResult, PQGroup
from workbench.metrics.panoptic_attributes import PanopticAttributeResult
from workbench.metrics.semantic import SemanticResult

BASE = {"model": {"preset": "tiny", "num_queries": 6, "test_topk": 6, "dec_layers": 1, "loss": {"num_points": 64}},
        "solver": {"batch_size": 2, "max_iter": 2, "warmup_iters": 0, "checkpoint_period": 100, "log_period": 1},
        "augment": {"image_size": 64, "min_scale": 0.9, "max_scale": 1.1, "test_shortest_edge": 0},
        "device": "cpu"}
SYNTHETIC = {"train_images": 4, "val_images": 2, "image_size": 64}


def task_grid(axes, base=BASE, seeds=1):
    return Grid.from_dict({"base": base, "axes": axes, "seeds": seeds, "synthetic": SYNTHETIC})


def test_task_axis_gives_each_cell_its_task_data_and_classes(tmp_path):
    cells = task_grid({"model.task": ["instance", "panoptic", "semantic"]}).cells(tmp_path)
    by = {c.config.model.task: c.config for c in cells}
    assert [c.key for c in cells] == ["task=instance", "task=panoptic", "task=semantic"]
    assert by["instance"].data.train == str(tmp_path / "data" / "train" / "coco.json")
    assert by["instance"].model.num_classes == 3 and by["instance"].model.stuff_classes == ()
    for task in ("panoptic", "semantic"):  # the shapes in front of sky / ground, one data set for both
        cfg = by[task]
        assert cfg.data.train == str(tmp_path / "data" / "stuff" / "train" / "panoptic" / "panoptic.json")
        assert cfg.data.val == str(tmp_path / "data" / "stuff" / "val" / "panoptic" / "panoptic.json")
        assert cfg.model.num_classes == 5 and cfg.model.stuff_classes == (3, 4)
        assert "tone" in cfg.model.attribute_names
    assert by["panoptic"].solver.best_metric == "panoptic/PQ" and by["semantic"].solver.best_metric == "semantic/mIoU"
    # or in the base: every cell is panoptic
    base = {**BASE, "model": {**BASE["model"], "task": "panoptic"}}
    assert {c.config.model.task for c in task_grid({"model.num_queries": [4, 6]}, base=base).cells(tmp_path)} == \
        {"panoptic"}
    with pytest.raises(GridError, match=r"cell task=depth: model.task 'depth'"):
        task_grid({"model.task": ["panoptic", "depth"]}).cells(tmp_path)


def pq(value, things, stuff, tag="eval/panoptic"):
    return PanopticResult(PQGroup(value, 80.0, 50.0, 5), PQGroup(things, 80.0, 50.0, 3), PQGroup(stuff, 80.0, 50.0, 2),
                          {}, images=2, tag=tag)


def segment_metrics(task, seed):
    """A metrics.json of a panoptic or semantic cell, made by the evaluation's own result types."""
    semantic = SemanticResult(60.0 + seed, 70.0, 65.0, 80.0 + seed, {}, {}, [], images=2)
    panoptic = None
    if task == "panoptic":
        color = AttributeResult("color", ["r", "g", "b"], 0.5 + 0.25 * seed, 2, 4, 0, [])
        panoptic = PanopticAttributeResult(pq(40.0 + 10 * seed, 30.0, 55.0), pq(20.0, 10.0, 35.0, "eval/joint_panoptic"),
                                           {"color": color}, {}, matched=4)
    return SegmentationEvalResult(task, panoptic, semantic, data={"sha256": task}).to_dict()


def fake_cell(cell, run_dir):
    dump_yaml(cell.config, run_dir / "config.yaml")
    (run_dir / "train.json").write_text(json.dumps({"seconds": 1.0}))
    task = cell.config.model.task
    metrics = segment_metrics(task, cell.seed) if task != "instance" else {
        "segm": {"AP": 30.0, "AP50": 50.0}, "joint": {"AP": 20.0}, "attributes": {"color": {"accuracy": 0.9}},
        "data": {"sha256": "instance"}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_tables_report_each_task_in_its_own_columns(tmp_path):
    g = task_grid({"model.task": ["instance", "panoptic", "semantic"]}, seeds=2)
    run_grid(g, tmp_path, progress=False, cell_fn=fake_cell)  # each task scored on its own data: no mix-up error
    runs = collect_runs(g, tmp_path)
    assert metric_columns(runs) == ["AP", "AP50", "joint AP", "PQ", "PQ things", "PQ stuff", "joint PQ", "mIoU",
                                    "fwIoU", "mACC", "pACC", "color acc", "train time (s)"]
    paths = write_tables(g, tmp_path)
    table = pd.read_csv(paths["csv"]).set_index("task")
    assert table.loc["panoptic", "PQ mean"] == pytest.approx(45.0) and table.loc["panoptic", "PQ std"] > 0
    assert table.loc["panoptic", "PQ things mean"] == 30.0 and table.loc["panoptic", "PQ stuff mean"] == 55.0
    assert table.loc["panoptic", "joint PQ mean"] == 20.0 and table.loc["panoptic", "mIoU mean"] == 60.5
    assert table.loc["panoptic", "color acc mean"] == pytest.approx(62.5)  # matched segments, in %
    assert table.loc["semantic", "pACC mean"] == pytest.approx(80.5) and pd.isna(table.loc["semantic", "PQ mean"])
    assert pd.isna(table.loc["semantic", "color acc mean"])  # semantic scores no attributes
    assert table.loc["instance", "AP mean"] == 30.0 and pd.isna(table.loc["instance", "mIoU mean"])
    header = [c.strip() for c in paths["markdown"].read_text().splitlines()[1].strip("|").split("|")]
    assert header[:4] == ["task", "seeds", "AP", "AP50"] and {"PQ", "joint PQ", "mIoU", "pACC"} <= set(header)
    meta = json.loads(paths["metadata"].read_text())
    assert meta["tasks"] == ["instance", "panoptic", "semantic"]
    assert "panoptic: PQ (all / things / stuff), joint PQ" in meta["caption"] and "semantic: mIoU" in meta["caption"]
    tex = paths["latex"].read_text()
    assert "joint PQ" in tex and "PQ things" in tex


def test_a_panoptic_only_grid_shows_no_instance_columns(tmp_path):
    base = {**BASE, "model": {**BASE["model"], "task": "panoptic"}}
    g = task_grid({"model.num_queries": [4, 6]}, base=base)
    run_grid(g, tmp_path, progress=False, cell_fn=fake_cell)
    paths = write_tables(g, tmp_path)
    header = [c.strip() for c in paths["markdown"].read_text().splitlines()[1].strip("|").split("|")]
    assert header == ["num_queries", "seeds", "PQ", "PQ things", "PQ stuff", "joint PQ", "mIoU", "color acc",
                      "train time (s)"]
    assert "AP, AP50" not in json.loads(paths["metadata"].read_text())["caption"]


def test_real_panoptic_and_semantic_cells_train_and_fill_their_columns(tmp_path):
    g = task_grid({"model.task": ["panoptic", "semantic"]})
    outcomes = run_grid(g, tmp_path, progress=False)
    assert [o.status for o in outcomes] == ["done", "done"], [o.error for o in outcomes]
    assert not (tmp_path / "data" / "train").exists()  # no instance cell: no instance data made
    pan, sem = (json.loads((o.run_dir / "metrics.json").read_text()) for o in outcomes)
    assert pan["task"] == "panoptic" and sem["task"] == "semantic" and sem["panoptic"] is None
    table = pd.read_csv(write_tables(g, tmp_path)["csv"]).set_index("task")
    assert table.loc["panoptic", "PQ mean"] == pytest.approx(pan["panoptic"]["panoptic"]["all"]["PQ"])
    assert table.loc["panoptic", "joint PQ mean"] == pytest.approx(pan["panoptic"]["joint"]["all"]["PQ"])
    assert table.loc["panoptic", "mIoU mean"] == pytest.approx(pan["semantic"]["mIoU"])
    assert table.loc["semantic", "mIoU mean"] == pytest.approx(sem["semantic"]["mIoU"])
    assert table.loc["semantic", "fwIoU mean"] == pytest.approx(sem["semantic"]["fwIoU"])
    tone = pan["panoptic"]["attributes"]["tone"]["accuracy"]
    assert (pd.isna(table.loc["panoptic", "tone acc mean"]) if tone is None
            else table.loc["panoptic", "tone acc mean"] == pytest.approx(100 * tone))
    assert (tmp_path / "plot_task.png").is_file()
