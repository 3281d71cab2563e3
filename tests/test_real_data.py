"""Issue 12: real labelme folders and everyday mistakes never crash, overwrite or lose work.

Each test is one reproduction from the issue, on tiny generated data.
"""
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import workbench as wb
from workbench.cli import main as cli
from workbench.config import AugmentConfig, DataConfig, RunConfig, SolverConfig
from workbench.data.dataset import CocoAttributeDataset
from workbench.data.labelme import convert_labelme
from workbench.data.problems import DataError
from workbench.data.schema import load_labels_txt, load_schema
from workbench.data.synthetic import SynthConfig, synthesize
from workbench.data.validate import validate_coco

REPO = Path(__file__).resolve().parents[1]


def labelme_folder(tmp_path, n=4, size=64) -> Path:
    folder = tmp_path / "lm"
    synthesize(folder, n, seed=0, cfg=SynthConfig(image_size=size))
    return folder


def edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def square(label, x0, y0, x1, y1):
    return {"label": label, "points": [[x0, y0], [x1, y1]], "shape_type": "rectangle", "group_id": None, "flags": {}}


def tiny_run_cfg(train, val="", **solver):
    args = dict(base_lr=1e-3, batch_size=2, max_iter=2, warmup_iters=1, checkpoint_period=1, log_period=1)
    args.update(solver)
    schema = load_schema(Path(train).parent / "schema.yaml")
    model = wb.ModelConfig.tiny(**schema.model_fields(), loss=wb.LossConfig(num_points=64))
    return RunConfig(model=model, solver=SolverConfig(**args), data=DataConfig(train=str(train), val=str(val)),
                     augment=AugmentConfig.synthetic(image_size=64), device="cpu")


# ---- 1. images without instances -----------------------------------------------------------------------------
@pytest.fixture
def with_empty_image(tmp_path):
    folder = labelme_folder(tmp_path)
    edit(folder / "shapes_00000.json", lambda d: d.update(shapes=[]))
    convert_labelme(folder, load_schema(folder / "schema.yaml"), out=folder / "coco.json", progress=False)
    return folder / "coco.json"


def test_image_without_instances_trains_and_evaluates(with_empty_image, tmp_path):
    ds = CocoAttributeDataset(with_empty_image)
    empty = next(ds[i] for i in range(len(ds)) if ds.records[i]["file_name"].endswith("shapes_00000.png"))
    assert empty["instances"]["masks"].shape == (0, 64, 64) and empty["instances"]["labels"].shape == (0,)
    assert empty["instances"]["boxes"].shape == (0, 4)
    assert len(CocoAttributeDataset(with_empty_image, keep_empty=False)) == len(ds) - 1
    report = validate_coco(with_empty_image, progress=False)
    assert report.ok and report.num_empty_images == 1 and "1 without instances" in str(report)
    from workbench.engine.pipeline import train_and_evaluate

    cfg = tiny_run_cfg(with_empty_image, with_empty_image, batch_size=4)
    _, metrics = train_and_evaluate(cfg, tmp_path / "run", progress=False, num_overlays=4)
    assert metrics.counts["images"] == 4


# ---- 2. labelme ignore regions -------------------------------------------------------------------------------
@pytest.fixture
def with_ignore_region(tmp_path):
    folder = labelme_folder(tmp_path)
    edit(folder / "shapes_00001.json", lambda d: d["shapes"].append(square("__ignore__", 0, 0, 9, 9)))
    return folder


def test_ignore_shapes_become_crowd_regions_for_every_category(with_ignore_region):
    schema = load_schema(with_ignore_region / "schema.yaml")
    coco = convert_labelme(with_ignore_region, schema, out=with_ignore_region / "coco.json", progress=False)
    crowd = [a for a in coco["annotations"] if a["iscrowd"]]
    assert sorted(a["category_id"] for a in crowd) == [c.id for c in schema.categories]
    assert all(a["area"] == 100 and a["attributes"] == {} for a in crowd)
    report = validate_coco(with_ignore_region / "coco.json", progress=False)
    assert report.ok and report.num_ignore_regions == 3
    assert report.num_annotations == len(coco["annotations"]) - 3
    assert report.summary.loc["total", ("instances", "")] == report.num_annotations
    ds = CocoAttributeDataset(with_ignore_region / "coco.json")
    item = next(ds[i] for i in range(len(ds)) if ds.records[i]["file_name"].endswith("shapes_00001.png"))
    ignore = item["instances"]["ignore"]
    assert ignore.dtype == torch.bool and ignore.shape == (64, 64) and ignore[:10, :10].all() and ignore.sum() == 100
    others = [ds[i]["instances"]["ignore"] for i in range(len(ds)) if ds[i] is not item]
    assert not any(o.any() for o in others[:1])


def test_labels_txt_is_the_category_list(with_ignore_region, capsys):
    labels = with_ignore_region.parent / "labels.txt"
    labels.write_text("__ignore__\n_background_\ncircle\nsquare\ntriangle\n")
    schema = load_labels_txt(labels)
    assert schema.category_names == ["circle", "square", "triangle"] and schema.ignore_labels == ("__ignore__",)
    for path in with_ignore_region.glob("*.json"):  # plain labelme: a category per shape, no attributes
        edit(path, lambda d: [s.update(label=s["label"].split()[0], flags={}, description="") for s in d["shapes"]])
    out = with_ignore_region / "coco.json"
    assert cli(["data", "convert", str(with_ignore_region), "--labels", str(labels), "--out", str(out)]) == 0
    assert "3 ignore-region annotations" in capsys.readouterr().out
    labels.write_text("__ignore__\n_background_\ncircle\nsquare\n")
    assert cli(["data", "convert", str(with_ignore_region), "--labels", str(labels),
                "--schema", str(with_ignore_region / "schema.yaml"), "--out", str(out)]) == 1
    assert "differ from the schema" in capsys.readouterr().err


def test_ignore_region_reaches_the_loss_targets(with_ignore_region):
    coco = with_ignore_region / "coco.json"
    convert_labelme(with_ignore_region, load_schema(with_ignore_region / "schema.yaml"), out=coco, progress=False)
    ds = CocoAttributeDataset(coco)
    model = wb.build_model(tiny_run_cfg(coco).model)
    targets = model.targets([ds[i] for i in range(len(ds))], (64, 64))
    assert sum(int(t["ignore"].sum()) for t in targets) == 100


# ---- 3. data checks at the boundary --------------------------------------------------------------------------
def test_convert_checks_the_header_size_against_the_image(tmp_path):
    folder = labelme_folder(tmp_path)
    edit(folder / "shapes_00002.json", lambda d: d.update(imageWidth=80))
    with pytest.raises(DataError, match=r"shapes_00002.json.*header says 80x64.*shapes_00002.png is 64x64") as err:
        convert_labelme(folder, load_schema(folder / "schema.yaml"), out=folder / "coco.json", progress=False)
    assert err.value.codes == ["image_size_mismatch"] and not (folder / "coco.json").exists()


def test_missing_bbox_and_area_are_filled_and_reported(with_empty_image):
    edit(with_empty_image, lambda d: [(a.pop("bbox"), a.pop("area")) for a in d["annotations"]])
    report = validate_coco(with_empty_image, progress=False)
    assert report.ok and "missing_bbox_area" in report.codes
    from workbench.data.dataset import detectron2_dicts

    boxes = [a["bbox"] for r in detectron2_dicts(with_empty_image) for a in r["annotations"]]
    assert boxes and all(len(b) == 4 and b[2] > 0 for b in boxes)


def test_unreadable_image_names_the_file_and_the_annotation_file(with_empty_image):
    png = with_empty_image.parent / "shapes_00003.png"
    png.write_bytes(png.read_bytes()[:200])  # truncated
    ds = CocoAttributeDataset(with_empty_image)
    i = next(i for i in range(len(ds)) if ds.records[i]["file_name"].endswith("shapes_00003.png"))
    with pytest.raises(DataError, match=r"shapes_00003.png.*referenced by .*coco.json"):
        ds[i]


# ---- 4. config vs data, before any work ----------------------------------------------------------------------
@pytest.fixture
def coco(tmp_path):
    folder = labelme_folder(tmp_path)
    convert_labelme(folder, load_schema(folder / "schema.yaml"), out=folder / "coco.json", progress=False)
    return folder / "coco.json"


@pytest.mark.parametrize("change,message", [
    (dict(attributes={"colour": ["red", "green", "blue"], "size": ["small", "medium", "large"]}),
     r"model.attributes.colour: .*the data has `color`; the config says `colour`"),
    (dict(attributes={"color": ["red", "green", "blue"], "size": ["small", "medium", "large"], "texture": ["a"]}),
     r"model.attributes.texture: no such attribute in the data"),
    (dict(attributes={"color": ["red", "blue", "green"], "size": ["small", "medium", "large"]}),
     r"model.attributes.color: values \['red', 'blue', 'green'\] differ"),
    (dict(attributes={"color": ["red", "green", "blue"]}), r"the data has attribute `size`"),
    (dict(num_classes=2), r"model.num_classes is 2 but the data has 3 categories"),
])
def test_config_that_does_not_fit_the_data_fails_before_training(coco, tmp_path, change, message):
    from workbench.config_file import ConfigError
    from workbench.engine.trainer import train

    cfg = tiny_run_cfg(coco)
    cfg = RunConfig(**{**cfg.__dict__, "model": cfg.model.replace(**change)})
    with pytest.raises(ConfigError, match=message):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_yaml_numbers_without_a_dot_are_floats_and_zero_queries_names_the_field(coco, tmp_path):
    from workbench.config_file import ConfigError
    from workbench.engine.cli import load_train_config

    path = tmp_path / "cfg.yaml"
    path.write_text(f"model: {{preset: tiny}}\nsolver: {{base_lr: 2e-3, weight_decay: 1E-4}}\ndata: {{train: {coco}}}\n")
    cfg = load_train_config(path)
    assert cfg.solver.base_lr == 0.002 and cfg.solver.weight_decay == 1e-4
    path.write_text(f"model: {{preset: tiny, num_queries: 0}}\ndata: {{train: {coco}}}\n")
    with pytest.raises(ConfigError, match="model: num_queries must be > 0"):
        load_train_config(path)
    path.write_text("solver: {base_lr: fast}\nmodel: {preset: tiny, num_classes: 1}\n")
    with pytest.raises(ConfigError, match="solver.base_lr: expected float, got str 'fast'"):
        load_train_config(path)


# ---- 5/6. run directories and checkpoints --------------------------------------------------------------------
def engine_cfg(**solver):
    args = dict(base_lr=1e-3, batch_size=2, max_iter=4, warmup_iters=1, checkpoint_period=1, log_period=1)
    args.update(solver)
    model = wb.ModelConfig.tiny(num_classes=3, attributes={"color": ["r", "g", "b"]}, loss=wb.LossConfig(num_points=32))
    return RunConfig(model=model, solver=SolverConfig(**args), device="cpu")


def engine_data(n=4):
    from workbench.harness.synthetic import synthetic_batch

    return synthetic_batch(3, {"color": 3}, batch=n, size=64, seed=0)


def test_existing_run_is_refused_unless_resume_or_overwrite(tmp_path, capsys):
    from workbench.engine.trainer import RunDirectoryError, train

    run = tmp_path / "run"
    train(engine_cfg(max_iter=1), run, dataset=engine_data(), progress=False)
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(RunDirectoryError, match=r"already holds a run .*--resume .*--overwrite"):
        train(engine_cfg(max_iter=1), run, dataset=engine_data(), progress=False)
    assert (run / "metrics.jsonl").read_text() == before
    (run / "notes.txt").write_text("mine")
    (run / ".last.pt.abc123.tmp").write_bytes(b"partial")
    old_events = sorted(run.glob("events.out.tfevents.*"))
    assert old_events  # the first run's TensorBoard events: a restarted run must not mix its curves with them
    train(engine_cfg(max_iter=2), run, dataset=engine_data(), progress=False, overwrite=True)
    assert (run / "notes.txt").read_text() == "mine" and not list(run.glob(".*.tmp"))
    assert not any(p.exists() for p in old_events) and list(run.glob("events.out.tfevents.*"))
    assert ".last.pt.abc123.tmp" in capsys.readouterr().out


def test_keep_checkpoints_and_fall_back_loudly_when_the_newest_is_corrupt(tmp_path, capsys):
    from workbench.engine.trainer import train

    data = engine_data()
    straight = train(engine_cfg(), tmp_path / "a", dataset=data, progress=False).model.state_dict()
    run = tmp_path / "b"
    train(engine_cfg(keep_checkpoints=2), run, dataset=data, progress=False, max_iter=3)
    assert sorted(p.name for p in run.glob("last*.pt")) == ["last.pt", "last_step2.pt", "last_step3.pt"]
    assert os.path.samefile(run / "last.pt", run / "last_step3.pt")  # a link, not a second copy
    with open(run / "last.pt", "r+b") as f:  # damaged on disk (the step-3 file shares its bytes)
        f.truncate(os.path.getsize(run / "last.pt") // 3)
    capsys.readouterr()
    resumed = train(engine_cfg(), run, dataset=data, progress=False, resume=True).model.state_dict()
    err = capsys.readouterr().err
    assert "falling back" in err and "last.pt: corrupt or truncated" in err and "last_step2.pt (step 2)" in err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # cut back to the checkpoint's step, then continued: no 3 twice
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_corrupt_and_unsafe_checkpoints_are_told_apart(tmp_path):
    import pickle

    from workbench.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(1000)})
    whole = path.read_bytes()
    for data in (b"", whole[:100], whole[: len(whole) // 2]):
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{path}: corrupt or truncated checkpoint \({len(data)} bytes"):
            load_checkpoint(path)
    torch.save({"hook": pickle.Pickler}, path)
    with pytest.raises(CheckpointError, match="refused to load: it holds objects other than tensors") as err:
        load_checkpoint(path)
    assert "corrupt or truncated" not in str(err.value) and "pickle.Pickler" in str(err.value)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 1-step run on generated data, with an image without instances and a validation file."""
    tmp = tmp_path_factory.mktemp("trained")
    folder = labelme_folder(tmp)
    edit(folder / "shapes_00000.json", lambda d: d.update(shapes=[]))
    convert_labelme(folder, load_schema(folder / "schema.yaml"), out=folder / "coco.json", progress=False)
    from workbench.engine.trainer import train

    train(tiny_run_cfg(folder / "coco.json", folder / "coco.json", max_iter=1), tmp / "run", progress=False)
    return tmp / "run", folder


def test_eval_on_other_data_never_replaces_the_runs_metrics(trained_run, tmp_path, capsys):
    run, folder = trained_run
    (run / "metrics.json").write_text('{"mine": 1}')
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    assert cli(["eval", "--run", str(run), "--data", str(other / "coco.json"), "--json"]) == 0
    assert (run / "metrics.json").read_text() == '{"mine": 1}'
    written = json.loads((run / "metrics_coco.json").read_text())
    assert written["data"]["path"] == str((other / "coco.json").resolve()) and len(written["data"]["sha256"]) == 64
    third = tmp_path / "third"  # same file name, other folder: its own file
    shutil.copytree(folder, third)
    assert cli(["eval", "--run", str(run), "--data", str(third / "coco.json"), "--json"]) == 0
    assert json.loads((run / "metrics_coco.json").read_text())["data"]["path"] == written["data"]["path"]
    assert len(list(run.glob("metrics_coco-*.json"))) == 1


def test_predict_any_size_keeps_going_and_never_overwrites(trained_run, tmp_path, capsys):
    run, _ = trained_run
    inputs = tmp_path / "in"
    (inputs / "b").mkdir(parents=True)
    for name, size in (("one.png", (1, 1)), ("s32.png", (32, 32)), ("odd.png", (50, 70)), ("b/odd.png", (7, 3))):
        Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(inputs / name)
    (inputs / "broken.png").write_bytes((inputs / "s32.png").read_bytes()[:60])
    names = ["one.png", "broken.png", "s32.png", "odd.png", "b/odd.png"]
    out = tmp_path / "out"
    code = cli(["predict", "--run", str(run), *[str(inputs / n) for n in names], "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and "broken.png" in captured.err and "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["odd_1.png", "odd_2.png", "one.png", "s32.png"]
    before = (inputs / "one.png").read_bytes()
    assert cli(["predict", "--run", str(run), str(inputs / "one.png"), "--out", str(inputs)]) == 1
    assert "holds input image" in capsys.readouterr().err and (inputs / "one.png").read_bytes() == before


def test_ablation_refuses_cells_scored_on_different_data(tmp_path):
    from workbench.ablation.tables import check_same_data
    from workbench.errors import WorkbenchError

    for i, digest in enumerate(["aa" * 32, "aa" * 32, "bb" * 32]):
        (tmp_path / f"cell{i}").mkdir()
        (tmp_path / f"cell{i}" / "metrics.json").write_text(json.dumps({"data": {"path": "v.json", "sha256": digest}}))
    check_same_data(tmp_path, [tmp_path / "cell0", tmp_path / "cell1"])
    with pytest.raises(WorkbenchError, match=r"different validation data .*cell2"):
        check_same_data(tmp_path, [tmp_path / f"cell{i}" for i in range(3)])


# ---- 8. CLI errors: the message alone ------------------------------------------------------------------------
def test_cli_errors_are_one_message_and_debug_shows_the_traceback(coco, tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: {{preset: tiny, num_classes: 2}}\ndata: {{train: {coco}}}\n")
    assert cli(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the config does not fit the data") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2
    from workbench.config_file import ConfigError

    with pytest.raises(ConfigError):
        cli(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--debug"])
    monkeypatch.setenv("WORKBENCH_DEBUG", "1")
    with pytest.raises(ConfigError):
        cli(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    monkeypatch.delenv("WORKBENCH_DEBUG")
    assert cli(["eval", "--run", str(tmp_path / "nothing")]) == 1
    assert "not a run directory" in capsys.readouterr().err


# ---- 10. realistic mistakes the suite must catch ----------------------------------------------------------------
def test_attribute_accuracy_counts_true_positives_only_not_a_duplicate_false_positive():
    from test_evaluate import CIRCLE, RED, BLUE, SMALL, box_mask, inst, make_gt, make_pred
    from workbench.engine.evaluate import evaluate_predictions

    gt = make_gt({1: [(CIRCLE, box_mask(5, 5, 25, 25), {"color": RED, "size": SMALL})]})
    right = inst(box_mask(5, 5, 25, 25), 0, 0.9, RED, SMALL)
    duplicate = inst(box_mask(5, 5, 24, 25), 0, 0.6, BLUE, SMALL)  # best IoU with the same GT, but a FP
    result = evaluate_predictions(gt, {1: make_pred([right, duplicate])})
    assert result.counts["true_positives"] == 1
    color = result.attributes["color"]
    assert (color.correct, color.count, color.accuracy) == (1, 1, 1.0)
    assert color.confusion[RED][BLUE] == 0


def test_train_honours_its_device_argument(monkeypatch, tmp_path):
    import workbench.device
    from workbench.engine.trainer import train

    asked = []
    real = workbench.device.resolve_device

    def recording(spec=None):
        asked.append(spec)
        return real("cpu")

    monkeypatch.setattr(workbench.device, "resolve_device", recording)
    cfg = dataclasses.replace(engine_cfg(max_iter=1), device="cuda:7")  # a device that must not be used
    train(cfg, tmp_path / "run", dataset=engine_data(), device="cpu", progress=False)
    assert asked == ["cpu"]


def test_unknown_bare_flag_is_reported(tmp_path):
    folder = labelme_folder(tmp_path, n=1)
    edit(folder / "shapes_00000.json", lambda d: d["shapes"][0].update(flags={"rde": True}))
    with pytest.raises(DataError, match=r"flag 'rde' is not an attribute value") as err:
        convert_labelme(folder, load_schema(folder / "schema.yaml"), progress=False)
    assert err.value.codes == ["unknown_attribute_value"]


def test_inspector_and_evaluation_take_empty_images_and_crowd_regions(with_empty_image):
    from test_evaluate import CIRCLE, RED, SMALL, box_mask, inst, make_gt, make_pred
    from workbench.engine.evaluate import evaluate_predictions
    from workbench.inspect.figures import annotation_grid, query_figure
    from workbench.inspect.queries import inspect_item, query_table
    from workbench.inspect.tables import instances_table

    ds = CocoAttributeDataset(with_empty_image)
    item = next(ds[i] for i in range(len(ds)) if len(ds[i]["instances"]["labels"]) == 0)
    model = wb.build_model(tiny_run_cfg(with_empty_image).model)
    names = ds.schema.category_names
    q = inspect_item(model, item, categories=names)
    assert len(query_table(q)) == model.cfg.num_queries and np.isnan(q.matched_iou).all()
    query_figure(q, 0)
    assert len(instances_table(item, names, ds.schema.model_attributes())) == 0
    annotation_grid([item], names, ds.schema.model_attributes())
    # a detection on a crowd region is neither a TP nor a FP; joint AP and accuracy agree
    gt = make_gt({1: [(CIRCLE, box_mask(0, 0, 10, 10), {"color": RED, "size": SMALL})]})
    gt["annotations"].append(dict(gt["annotations"][0], id=2, segmentation=make_gt(
        {1: [(CIRCLE, box_mask(20, 20, 40, 40), {})]})["annotations"][0]["segmentation"], iscrowd=1, attributes={}))
    on_crowd = inst(box_mask(22, 22, 38, 38), 0, 0.95, RED, SMALL)
    right = inst(box_mask(0, 0, 10, 10), 0, 0.9, RED, SMALL)
    result = evaluate_predictions(gt, {1: make_pred([on_crowd, right])})
    assert result.segm["AP"] == pytest.approx(100.0) and result.joint["AP"] == pytest.approx(100.0)
    assert result.counts["ground_truth"] == 1 and result.attributes["color"].count == 1


def test_convert_removes_temp_files_a_killed_conversion_left(tmp_path):
    folder = labelme_folder(tmp_path, n=1)
    (folder / ".coco.json.x1y2.tmp").write_text("half")
    (folder / ".other.json.x1y2.tmp").write_text("not ours")
    convert_labelme(folder, load_schema(folder / "schema.yaml"), out=folder / "coco.json", progress=False)
    assert sorted(p.name for p in folder.glob(".*.tmp")) == [".other.json.x1y2.tmp"]


def test_an_image_with_only_an_ignore_region_is_an_empty_image_with_an_ignore_map(tmp_path):
    folder = labelme_folder(tmp_path, n=2)
    edit(folder / "shapes_00000.json", lambda d: d.update(shapes=[square("__ignore__", 5, 5, 14, 14)]))
    convert_labelme(folder, load_schema(folder / "schema.yaml"), out=folder / "coco.json", progress=False)
    report = validate_coco(folder / "coco.json", progress=False)
    assert report.ok and report.num_empty_images == 1 and report.num_ignore_regions == 3
    ds = CocoAttributeDataset(folder / "coco.json")
    item = next(ds[i] for i in range(len(ds)) if ds.records[i]["file_name"].endswith("shapes_00000.png"))
    assert len(item["instances"]["labels"]) == 0 and int(item["instances"]["ignore"].sum()) == 100
    model = wb.build_model(tiny_run_cfg(folder / "coco.json").model).train()
    losses = model([ds[0], ds[1]], generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in losses.values())


def test_a_run_names_its_classes_after_the_training_data_moved(trained_run, tmp_path):
    """The run keeps its category names (categories.json): export-weights wrote id2label class0..classN-1 and
    predict drew class0.. in silence once data.train had moved."""
    from workbench.engine.inference import load_run
    from workbench.engine.pipeline import _schema_names
    from workbench.engine.run_categories import run_category_names

    run, folder = trained_run
    names = load_schema(folder / "schema.yaml").category_names
    assert json.loads((run / "categories.json").read_text())["categories"] == names
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    cfg_text = (moved / "config.yaml").read_text()
    (moved / "config.yaml").write_text(cfg_text.replace(str(folder / "coco.json"), str(tmp_path / "gone.json")))
    loaded = load_run(moved)
    assert run_category_names(moved, loaded.cfg) == (names, str(moved / "categories.json"))
    assert _schema_names(loaded)[0] == names
    (moved / "categories.json").unlink()
    assert run_category_names(moved, loaded.cfg) is None
    assert _schema_names(loaded)[0] == [f"class{i}" for i in range(len(names))]


def test_export_to_transformers_of_a_backbone_it_lacks_is_a_usage_error(trained_run, tmp_path, capsys):
    run, _ = trained_run
    assert cli(["export-weights", str(run), "--format", "transformers", str(tmp_path / "hub")]) == 2
    assert "backbone 'tiny' has no transformers equivalent" in capsys.readouterr().err
    assert not (tmp_path / "hub").exists()
