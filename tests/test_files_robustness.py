"""Issue 24: outputs never replace inputs, files land where the README says, and a run's data is checked before
anything is made. Each test is one reproduction from the issue, on 32-64 px synthetic data."""
import json
import os
from pathlib import Path

import pytest

import workbench as wb
from workbench.cli import main as cli
from workbench.config import AugmentConfig, DataConfig, RunConfig, SolverConfig
from workbench.data.dataset import CocoAttributeDataset
from workbench.data.schema import load_schema
from workbench.data.synthetic import SynthConfig, synthesize


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes), to prove that nothing was created, changed or deleted."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def labelme_folder(tmp_path, n=4, size=32) -> Path:
    folder = tmp_path / "lm"
    synthesize(folder, n, seed=0, cfg=SynthConfig(image_size=size), progress=False)
    return folder


def tiny_run_config(tmp_path, train: Path, val: Path | None = None) -> Path:
    schema = load_schema(train.parent / "schema.yaml") if (train.parent / "schema.yaml").is_file() else None
    fields = schema.model_fields() if schema else {"num_classes": 3}
    run = RunConfig(model=wb.ModelConfig.tiny(**fields, loss=wb.LossConfig(num_points=64)),
                    solver=SolverConfig(base_lr=1e-3, batch_size=2, max_iter=1, warmup_iters=1, checkpoint_period=1,
                                        log_period=1),
                    data=DataConfig(train=str(train), val=str(val or "")), augment=AugmentConfig.synthetic(image_size=32),
                    device="cpu")
    from workbench.config_file import dump_yaml

    path = tmp_path / "run.yaml"
    dump_yaml(run, path)
    return path


# ---- outputs that alias inputs (exit 2, both paths named, nothing written) -------------------------------------
def fashionpedia_source() -> dict:
    return {"images": [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}],
            "categories": [{"id": 0, "name": "shirt", "supercategory": "upperbody"}],
            "attributes": [{"id": 5, "name": "plaid", "supercategory": "textile pattern", "level": 1}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]],
                             "area": 16.0, "bbox": [0, 0, 4, 4], "iscrowd": 0, "attribute_ids": [5]}]}


def test_import_fashionpedia_refuses_to_write_over_its_source(tmp_path, capsys):
    src = tmp_path / "fp.json"
    src.write_text(json.dumps(fashionpedia_source()))
    before = snapshot(tmp_path)
    for out in (src, tmp_path / "." / "fp.json"):
        assert cli(["data", "import-fashionpedia", str(src), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"the output {out} is the input {src}" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


def test_import_fashionpedia_errors_name_the_input_not_the_output(tmp_path, capsys):
    data = fashionpedia_source()
    data["annotations"][0]["image_id"] = 7  # an image the file does not have: found by the COCO format check
    src, out = tmp_path / "fp.json", tmp_path / "out" / "coco.json"
    src.write_text(json.dumps(data))
    assert cli(["data", "import-fashionpedia", str(src), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{src}: annotations[0]" in err and str(out) not in err.replace(f"{src}", "")
    assert not out.exists()


def test_convert_refuses_an_output_that_is_one_of_its_inputs(tmp_path, capsys):
    folder = labelme_folder(tmp_path)
    before = snapshot(tmp_path)
    for target in (folder / "shapes_00001.json", folder / "shapes_00001.png"):  # a labelme file, an image
        assert cli(["data", "convert", str(folder), "--schema", str(folder / "schema.yaml"), "--out", str(target)]) == 2
        err = capsys.readouterr().err
        assert str(target) in err and str(folder) in err and "one of the inputs" in err
    assert snapshot(tmp_path) == before
    # an earlier conversion in the folder is an output, not an input: replacing it is what --out asks for
    out = folder / "coco.json"
    for _ in range(2):
        assert cli(["data", "convert", str(folder), "--schema", str(folder / "schema.yaml"), "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["images"]) == 4


# ---- predict: one overlay per input ------------------------------------------------------------------------------
def test_overlay_names_are_unique_across_all_inputs(tmp_path):
    from workbench.engine.pipeline import overlay_names

    names = overlay_names(["a/x.png", "b/x.png", "a/x_1.png", "c/y.jpg", "a/x_2.png", "d/x.png"], tmp_path / "o")
    assert len(set(names)) == 6
    assert [n.name for n in names] == ["x_3.png", "x_4.png", "x_1.png", "y.png", "x_2.png", "x_5.png"]


# ---- data synth never replaces a file it did not write ---------------------------------------------------------
def test_synth_refuses_to_overwrite_edited_files(tmp_path, capsys):
    folder = tmp_path / "s"
    args = ["data", "synth", str(folder), "--images", "3", "--size", "32"]
    assert cli(args) == 0
    assert cli(args) == 0  # untouched: rerunning is free
    assert cli([*args[:-2], "--size", "48", "--seed", "3"]) == 0  # an untouched earlier output, other settings
    edited = folder / "shapes_00001.json"
    doc = json.loads(edited.read_text())
    doc["shapes"] = doc["shapes"][:1]
    edited.write_text(json.dumps(doc))
    (folder / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    assert cli([*args[:-2], "--size", "48", "--seed", "3"]) == 1  # same size and seed as the files: still edited
    err = capsys.readouterr().err
    assert "shapes_00001.json" in err and "--overwrite" in err
    assert snapshot(tmp_path) == before
    assert cli([*args, "--overwrite"]) == 0
    assert json.loads(edited.read_text())["shapes"] != doc["shapes"] and (folder / "notes.txt").read_text() == "mine"


def test_synth_refuses_a_folder_of_files_it_did_not_write(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "shapes_00000.png").write_bytes(b"a user's image")
    assert cli(["data", "synth", str(folder), "--images", "2", "--size", "32"]) == 1
    assert snapshot(folder) == {"shapes_00000.png": b"a user's image"}


# ---- train: --overwrite and --resume ----------------------------------------------------------------------------
def test_overwrite_removes_the_old_runs_overlays_and_nothing_else(tmp_path):
    from workbench.engine.trainer import prepare_run_dir

    run = tmp_path / "run"
    (run / "overlays").mkdir(parents=True)
    for name in ("config.yaml", "metrics.json", "overlays/1.png", "overlays/notes.txt", "mine.png"):
        (run / name).write_text("x")
    prepare_run_dir(run, resume=False, overwrite=True)
    assert sorted(snapshot(run)) == ["mine.png", "overlays/notes.txt"]


def test_resume_of_a_missing_folder_is_an_error_and_creates_nothing(tmp_path, capsys):
    folder = labelme_folder(tmp_path)
    assert cli(["data", "convert", str(folder), "--schema", str(folder / "schema.yaml"),
                "--out", str(folder / "coco.json")]) == 0
    config = tiny_run_config(tmp_path, folder / "coco.json")
    before = snapshot(tmp_path)
    assert cli(["train", "--config", str(config), "--out", str(tmp_path / "nope"), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "nope" in err and "does not exist" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before and not (tmp_path / "nope").exists()


# ---- paths: file_names resolve from the output file ------------------------------------------------------------
def test_convert_elsewhere_writes_names_that_resolve_from_the_output(tmp_path):
    folder = labelme_folder(tmp_path)
    out = tmp_path / "elsewhere" / "deeper" / "coco.json"
    assert cli(["data", "convert", str(folder), "--schema", str(folder / "schema.yaml"), "--out", str(out)]) == 0
    names = [im["file_name"] for im in json.loads(out.read_text())["images"]]
    assert names[0] == "../../lm/shapes_00000.png"
    assert all((out.parent / n).is_file() for n in names)
    dataset = CocoAttributeDataset(out)  # the default image root: the JSON's folder
    assert dataset[0]["image"].shape == (3, 32, 32)
    assert cli(["data", "validate", str(out)]) == 0


def test_train_checks_every_image_before_making_the_run_folder(tmp_path, capsys):
    folder = labelme_folder(tmp_path)
    out = folder / "coco.json"
    assert cli(["data", "convert", str(folder), "--schema", str(folder / "schema.yaml"), "--out", str(out)]) == 0
    coco = json.loads(out.read_text())
    coco["images"][2]["file_name"] = "gone/" + coco["images"][2]["file_name"]
    out.write_text(json.dumps(coco))
    config = tiny_run_config(tmp_path, out)
    before = snapshot(tmp_path)
    assert cli(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert str(out) in err and "gone/shapes_00002.png" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()
