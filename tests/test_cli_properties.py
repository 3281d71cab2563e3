"""Every `workbench` command under bad input: one `error:` line, exit 1 (data, run state) or 2 (config, usage), no
traceback, and the working folder byte-identical afterwards (nothing created, changed or deleted).

The matrix is a table: one row per case, (argv template, fixture name). The working folder (a tiny trained run,
a labelme folder from `data synth` with its COCO file, a config, an image, a Fashionpedia file and results, a
grid) is built once per module; each case gets a fresh copy as its current directory, the fixture named in the
row damages or adds what the case needs, the folder is snapshotted (every path, its kind, size, sha256 and mode),
`workbench.cli.main(argv)` runs in-process, and the snapshot must not change. A new command joins with a line:
a row naming its argv and an existing (or new) fixture.

Cases that fail today because of another group of issue 24 are marked xfail(strict=True) with that group: when
the group is fixed, the mark must go (strict: the case then passes, and pytest reports an unexpected pass).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.cli import build_parser, main

EXIT_CODES = (1, 2)


# ---- the working folder every case starts from ----
TRAIN_YAML = {
    "model": {"preset": "tiny", "num_queries": 4, "loss": {"num_points": 64}},
    "solver": {"batch_size": 2, "max_iter": 2, "log_period": 1, "checkpoint_period": 2, "warmup_iters": 0},
    "data": {"train": "shapes/coco.json"},  # no val: a case that wrongly trains does not evaluate too
    "augment": {"image_size": 48, "min_scale": 0.9, "max_scale": 1.1, "test_shortest_edge": 0},
    "log": {"tensorboard": False},
    "device": "cpu",
}


def fashionpedia_source() -> dict:
    """A Fashionpedia annotation file in miniature (two attribute supercategories, one image)."""
    seg = [[0, 0, 8, 0, 8, 8, 0, 8]]
    attributes = [{"id": 115, "name": "above-the-hip (length)", "supercategory": "length", "level": 1},
                  {"id": 116, "name": "maxi (length)", "supercategory": "length", "level": 1},
                  {"id": 300, "name": "plaid", "supercategory": "textile pattern", "level": 1},
                  {"id": 301, "name": "floral", "supercategory": "textile pattern", "level": 1}]
    anns = [{"id": i + 1, "image_id": 1, "category_id": 0, "segmentation": seg, "area": 64.0, "bbox": [0, 0, 8, 8],
             "iscrowd": 0, "attribute_ids": ids} for i, ids in enumerate([[115, 300, 301], [116]])]
    return {"info": {"year": 2020}, "images": [{"id": 1, "file_name": "a.jpg", "height": 16, "width": 16}],
            "categories": [{"id": 0, "name": "shirt, blouse", "supercategory": "upperbody"}],
            "annotations": anns, "attributes": attributes}


def fashionpedia_results() -> list:
    from pycocotools import mask as mask_utils

    m = np.zeros((16, 16), np.uint8)
    m[0:8, 0:8] = 1
    r = mask_utils.encode(np.asfortranarray(m))
    r["counts"] = r["counts"].decode("ascii")
    return [{"image_id": 1, "category_id": 0, "segmentation": r, "score": 0.9, "attribute_ids": [115, 300]}]


def build_workspace(root: Path) -> None:
    """run/ (trained 2 steps, tiny preset, 48 px), shapes/ (labelme + schema.yaml + coco.json), train.yaml,
    image.png, fashionpedia.json, results.json, grid.yaml. Paths inside are relative: copies stay self-contained."""
    old = os.getcwd()
    os.chdir(root)
    try:
        assert main(["data", "synth", "shapes", "--images", "4", "--size", "48", "--seed", "0"]) == 0
        assert main(["data", "convert", "shapes", "--schema", "shapes/schema.yaml", "--out", "shapes/coco.json"]) == 0
        Path("train.yaml").write_text(json.dumps(TRAIN_YAML, indent=1))  # JSON is YAML
        torch.manual_seed(0)
        assert main(["train", "--config", "train.yaml", "--out", "run", "--device", "cpu", "--no-eval"]) == 0
        config = Path("run/config.yaml")  # the run names its data by absolute path: make it the copy's
        config.write_text(config.read_text().replace(f"{Path.cwd()}/", ""))
        shutil.copyfile("shapes/shapes_00000.png", "image.png")
        Path("fashionpedia.json").write_text(json.dumps(fashionpedia_source()))
        Path("results.json").write_text(json.dumps(fashionpedia_results()))
        Path("grid.yaml").write_text(json.dumps({"base": "train.yaml", "axes": {"model.num_queries": [4]},
                                                 "seeds": 1}))
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    build_workspace(root)
    return root


# ---- fixtures: each damages or adds what one kind of case needs, in the case's own copy ----
def _yaml(name: str, edit):
    """A copy of train.yaml with `edit(doc)` applied, as NAME (JSON is YAML)."""
    def make(wd: Path) -> None:
        doc = json.loads(json.dumps(TRAIN_YAML))
        edit(doc)
        (wd / name).write_text(json.dumps(doc))
    return make


def _set(section: str, key: str, value):
    return lambda doc: doc[section].__setitem__(key, value)


def _truncate(path: str, keep: float = 0.5):
    def make(wd: Path) -> None:
        p = wd / path
        p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])
    return make


def _text(path: str, text: str):
    return lambda wd: (wd / path).write_text(text)


def _copy(src: str, dst: str):
    def make(wd: Path) -> None:
        (wd / dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wd / src, wd / dst)
    return make


def _all(*makers):
    def make(wd: Path) -> None:
        for m in makers:
            m(wd)
    return make


def _truncated_run(wd: Path) -> None:
    """run_cut/: a copy of the run whose every checkpoint is cut to 20 KB (a disk that filled up)."""
    shutil.copytree(wd / "run", wd / "run_cut")
    for p in (wd / "run_cut").glob("*.pt"):
        p.write_bytes(p.read_bytes()[:20_000])


def _results(edit):
    def make(wd: Path) -> None:
        results = fashionpedia_results()
        edit(results[0])
        (wd / "bad_results.json").write_text(json.dumps(results))
    return make


def _partial_pkl(wd: Path) -> None:
    """An upstream-style .pkl of numpy arrays that is not a whole Mask2Former (two tensors)."""
    import pickle

    tensors = {"sem_seg_head.predictor.class_embed.weight": np.zeros((81, 32), np.float32),
               "backbone.stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}
    with open(wd / "partial.pkl", "wb") as f:
        pickle.dump({"model": tensors, "__author__": "test"}, f, protocol=2)


def _trunkless_pkl(wd: Path) -> None:
    """An upstream .pkl whose head tensors give a whole architecture (ResNet-50 by its 6 res4 blocks, hidden 32,
    4 queries) but whose trunk is absent: it reads, and fails only when loaded into the built model."""
    import pickle

    def z(*shape):
        return np.zeros(shape, np.float32)

    pr, pd = "sem_seg_head.predictor", "sem_seg_head.pixel_decoder"
    tensors = {f"backbone.res4.{i}.conv1.weight": z(1) for i in range(6)}
    tensors.update({f"{pr}.class_embed.weight": z(81, 32), f"{pr}.query_feat.weight": z(4, 32),
                    f"{pd}.input_proj.0.0.weight": z(32, 2048, 1, 1), f"{pd}.mask_features.weight": z(32, 32, 1, 1),
                    f"{pr}.transformer_ffn_layers.0.linear1.weight": z(64, 32),
                    f"{pr}.transformer_self_attention_layers.0.self_attn.in_proj_weight": z(96, 32),
                    f"{pd}.transformer.encoder.layers.0.self_attn.attention_weights.weight": z(48, 32),
                    f"{pd}.transformer.encoder.layers.0.linear1.weight": z(64, 32)})
    with open(wd / "trunkless.pkl", "wb") as f:
        pickle.dump({"model": tensors, "__author__": "test"}, f, protocol=2)


def _labelme_only(wd: Path) -> None:
    """lm/: the labelme folder without its coco.json (so an --out inside it is the only odd file)."""
    shutil.copytree(wd / "shapes", wd / "lm")
    (wd / "lm" / "coco.json").unlink()


def _patterns_as_single(wd: Path) -> None:
    """pat/: data with the multi-label group `pattern`; bad.yaml declares it single-label."""
    from workbench.data.labelme import convert_labelme
    from workbench.data.schema import load_schema
    from workbench.data.synthetic import SynthConfig, synthesize

    synthesize(wd / "pat", 4, seed=0, cfg=SynthConfig(image_size=48, patterns=True), progress=False)
    convert_labelme(wd / "pat", load_schema(wd / "pat" / "schema.yaml"), out=wd / "pat" / "coco.json",
                    progress=False)
    doc = json.loads(json.dumps(TRAIN_YAML))
    doc["data"] = {"train": "pat/coco.json", "val": "pat/coco.json"}
    doc["model"]["attributes"] = {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"],
                                  "pattern": ["stripes", "dots", "outline"]}
    (wd / "bad.yaml").write_text(json.dumps(doc))


FIXTURES = {
    "none": lambda wd: None,
    "truncated_json": _all(_copy("shapes/coco.json", "cut.json"), _truncate("cut.json", 0.5)),
    "png_as_yaml": _copy("image.png", "config.yaml"),
    "png_as_json": _copy("image.png", "data.json"),
    "empty_yaml": _text("empty.yaml", ""),
    "yaml_syntax": _text("broken.yaml", "model: {preset: tiny\nsolver: [\n"),
    "yaml_list": _text("list.yaml", "- model\n- solver\n"),
    "batch_size_text": _yaml("bad.yaml", _set("solver", "batch_size", "two")),
    "batch_size_bool": _yaml("bad.yaml", _set("solver", "batch_size", True)),
    "batch_size_zero": _yaml("bad.yaml", _set("solver", "batch_size", 0)),
    "base_lr_nan": _text("bad.yaml", json.dumps(TRAIN_YAML).replace('"solver": {', '"solver": {"base_lr": .nan, ')),
    "warmup_negative": _yaml("bad.yaml", _set("solver", "warmup_iters", -1)),
    "max_iter_negative": _yaml("bad.yaml", _set("solver", "max_iter", -5)),
    "num_queries_zero": _yaml("bad.yaml", _set("model", "num_queries", 0)),
    "unknown_backbone": _yaml("bad.yaml", _set("model", "backbone", "resnet18")),
    "unknown_key": _yaml("bad.yaml", _set("solver", "learning_rate", 0.1)),
    "device_tpu": _yaml("bad.yaml", lambda doc: doc.__setitem__("device", "tpu")),
    "num_classes_wrong": _yaml("bad.yaml", _set("model", "num_classes", 7)),
    "attribute_renamed": _yaml("bad.yaml", _set("model", "attributes", {"colour": ["red", "green", "blue"],
                                                                       "size": ["small", "medium", "large"]})),
    "kinds_disagree": _patterns_as_single,
    "data_missing": _yaml("bad.yaml", _set("data", "train", "nowhere/coco.json")),
    "data_png": _yaml("bad.yaml", _set("data", "train", "image.png")),
    "data_elsewhere": _all(_copy("shapes/coco.json", "other/coco.json"),
                           _yaml("bad.yaml", lambda doc: doc.__setitem__(
                               "data", {"train": "other/coco.json", "val": "other/coco.json"}))),
    "weights_missing": _yaml("bad.yaml", _set("model", "weights", "nowhere.pkl")),
    "weights_png": _copy("image.png", "weights.safetensors"),
    "weights_pkl_text": _text("weights.pkl", "not a pickle"),
    "weights_partial_pkl": _partial_pkl,
    "weights_trunkless_pkl": _trunkless_pkl,
    "truncated_run": _truncated_run,
    "onnx_exists": _text("model.onnx", "an older export"),
    "hub_not_empty": _all(lambda wd: (wd / "hub").mkdir(), _text("hub/notes.txt", "mine")),
    "schema_wrong_types": _text("schema_bad.yaml", "categories: 5\nattributes: [1, 2]\n"),
    "labels_png": _copy("image.png", "labels.txt"),
    "labelme_only": _labelme_only,
    "grid_png": _copy("image.png", "grid_bad.yaml"),
    "grid_unknown_axis": _text("grid_bad.yaml", json.dumps({"base": "train.yaml", "axes": {"model.nope": [1, 2]}})),
    "grid_axis_not_list": _text("grid_bad.yaml", json.dumps({"base": "train.yaml", "axes": {"model.num_queries": 4}})),
    "results_nan": _results(lambda r: r.__setitem__("score", float("nan"))),
    "results_bool_ids": _results(lambda r: r.__setitem__("attribute_ids", [True])),
    "results_bad_rle": _results(lambda r: r["segmentation"].__setitem__("counts", "!!garbage!!")),
    "results_png": _copy("image.png", "bad_results.json"),
    "truncated_png": _all(_copy("image.png", "cut.png"), _truncate("cut.png", 0.3)),
    "text_as_png": _text("fake.png", "not an image"),
    "synth_edited": lambda wd: (wd / "shapes" / "shapes_00001.json").write_text(
        (wd / "shapes" / "shapes_00001.json").read_text().replace('"circle', '"square')),
}


# ---- the matrix: (argv template, fixture name) ----
def case(argv: str, fixture: str = "none", form: str = "error", xfail: str | None = None):
    """form "error": one `error:` line (ours) or argparse's usage error; "report": a command whose output is a
    report of findings (validate, doctor, predict's unreadable images) names each on its own line."""
    marks = [pytest.mark.xfail(strict=True, reason=f"issue 24 {xfail}")] if xfail else []
    return pytest.param(argv, fixture, form, marks=marks, id=f"{argv} [{fixture}]")


CASES = [
    case("components --seed abc"),
    case("doctor --device tpu", form="report"),
    case("doctor --json extra"),
    # data synth
    case("data synth new --size 8"),
    case("data synth new --images -1"),
    case("data synth new --images many"),
    case("data synth image.png --images 1"),
    case("data synth shapes --images 4 --size 48 --seed 0", "synth_edited"),
    # data convert
    case("data convert nowhere --schema shapes/schema.yaml --out out.json"),
    case("data convert shapes --out shapes/coco.json"),
    case("data convert shapes --schema nowhere.yaml --out shapes/coco.json"),
    case("data convert shapes --schema config.yaml --out shapes/coco.json", "png_as_yaml"),
    case("data convert shapes --schema schema_bad.yaml --out shapes/coco.json", "schema_wrong_types"),
    case("data convert shapes --labels labels.txt --out shapes/coco.json", "labels_png"),
    case("data convert shapes --schema shapes/schema.yaml --out shapes"),
    case("data convert lm --schema lm/schema.yaml --out lm/shapes_00000.json", "labelme_only"),
    case("data convert lm --schema lm/schema.yaml --out lm/shapes_00000.png", "labelme_only"),
    # data import-fashionpedia
    case("data import-fashionpedia nowhere.json --out out.json"),
    case("data import-fashionpedia cut.json --out out.json", "truncated_json"),
    case("data import-fashionpedia data.json --out out.json", "png_as_json"),
    case("data import-fashionpedia shapes/coco.json --out out.json"),
    case("data import-fashionpedia fashionpedia.json --out fashionpedia.json"),
    case("data import-fashionpedia fashionpedia.json --out shapes"),
    # data validate: a report, one line per problem
    case("data validate nowhere.json", form="report"),
    case("data validate cut.json", "truncated_json", form="report"),
    case("data validate data.json", "png_as_json", form="report"),
    case("data validate shapes/coco.json --images nowhere", form="report"),
    case("data validate shapes/coco.json --schema schema_bad.yaml", "schema_wrong_types"),
    # train: config files
    case("train --config nowhere.yaml --out new"),
    case("train --config config.yaml --out new", "png_as_yaml"),
    case("train --config shapes --out new"),
    case("train --config empty.yaml --out new", "empty_yaml"),
    case("train --config broken.yaml --out new", "yaml_syntax"),
    case("train --config list.yaml --out new", "yaml_list"),
    case("train --config bad.yaml --out new", "batch_size_text"),
    case("train --config bad.yaml --out new", "batch_size_bool"),
    case("train --config bad.yaml --out new", "batch_size_zero"),
    case("train --config bad.yaml --out new", "base_lr_nan"),
    case("train --config bad.yaml --out new", "warmup_negative"),
    case("train --config bad.yaml --out new", "max_iter_negative"),
    case("train --config bad.yaml --out new", "num_queries_zero"),
    case("train --config bad.yaml --out new", "unknown_backbone"),
    case("train --config bad.yaml --out new", "unknown_key"),
    case("train --config bad.yaml --out new", "device_tpu"),
    case("train --config train.yaml --out new --device tpu"),
    case("train --config train.yaml --out new --device cpu:0"),
    # train: config against data
    case("train --config bad.yaml --out new", "num_classes_wrong"),
    case("train --config bad.yaml --out new", "attribute_renamed"),
    case("train --config bad.yaml --out new", "kinds_disagree"),
    case("train --config bad.yaml --out new", "data_missing"),
    case("train --config bad.yaml --out new", "data_png"),
    case("train --config bad.yaml --out new", "data_elsewhere"),
    # train: weights
    case("train --config bad.yaml --out new", "weights_missing"),
    case("train --config train.yaml --out new --weights nowhere.pkl"),
    case("train --config train.yaml --out new --weights weights.safetensors", "weights_png"),
    case("train --config train.yaml --out new --weights weights.pkl", "weights_pkl_text"),
    case("train --config train.yaml --out new --weights partial.pkl", "weights_partial_pkl"),
    case("train --config train.yaml --out run --overwrite --weights partial.pkl", "weights_partial_pkl"),
    case("train --config train.yaml --out run --overwrite --weights trunkless.pkl", "weights_trunkless_pkl"),  # deletes the run, then fails on the weights
    # train: the run folder
    case("train --config train.yaml --out run"),
    case("train --config train.yaml --out run --resume --overwrite"),
    case("train --config train.yaml --out nowhere --resume"),
    case("train --config train.yaml --out image.png"),
    case("train --config train.yaml --out run_cut --resume", "truncated_run"),
    # eval
    case("eval"),
    case("eval --run nowhere"),
    case("eval --run shapes"),
    case("eval --run run_cut", "truncated_run"),
    case("eval --run run --data nowhere.json"),
    case("eval --run run --data cut.json", "truncated_json"),
    case("eval --run run --data data.json", "png_as_json"),
    case("eval --run run --data fashionpedia.json"),
    case("eval --run run --dedupe-iou 5"),
    case("eval --run run --scoring best"),
    case("eval --run run --device tpu"),
    case("eval --fashionpedia-results results.json"),
    case("eval --fashionpedia-results nowhere.json --data fashionpedia.json"),
    case("eval --fashionpedia-results bad_results.json --data fashionpedia.json", "results_png"),
    case("eval --fashionpedia-results bad_results.json --data fashionpedia.json", "results_nan"),
    case("eval --fashionpedia-results bad_results.json --data fashionpedia.json", "results_bool_ids"),
    case("eval --fashionpedia-results bad_results.json --data fashionpedia.json", "results_bad_rle"),
    case("eval --fashionpedia-results results.json --data cut.json", "truncated_json"),
    # predict
    case("predict --run nowhere image.png --out out"),
    case("predict --run run_cut image.png --out out", "truncated_run"),
    case("predict --run run nowhere.png --out out", form="report"),
    case("predict --run run cut.png --out out", "truncated_png", form="report"),
    case("predict --run run fake.png --out out", "text_as_png", form="report"),
    case("predict --run run image.png --out ."),
    case("predict --run run image.png --out image.png"),
    case("predict --run run image.png --out out --device tpu"),
    # export (ONNX)
    case("export nowhere --format onnx out.onnx"),
    case("export run --format onnx out.txt"),
    case("export run --format tflite out.onnx"),
    case("export run --format onnx out.onnx --example-size 7 7"),
    case("export run --format onnx model.onnx", "onnx_exists"),
    case("export run_cut --format onnx out.onnx", "truncated_run"),
    # export-weights (transformers)
    case("export-weights nowhere --format transformers hub"),
    case("export-weights run --format transformers hub"),  # the tiny backbone has no transformers equivalent
    case("export-weights run --format transformers hub", "hub_not_empty"),
    case("export-weights run_cut --format transformers hub", "truncated_run"),
    # ablate
    case("ablate nowhere.yaml --out abl"),
    case("ablate grid_bad.yaml --out abl", "grid_png"),
    case("ablate grid_bad.yaml --out abl", "grid_unknown_axis"),
    case("ablate grid_bad.yaml --out abl", "grid_axis_not_list"),
    case("ablate grid.yaml --out abl --seeds 0"),
    case("ablate grid.yaml --out abl --threads 0"),
    case("ablate grid.yaml --out image.png"),
    # demo: refused before its components, data and training start (the tripwires below)
    case("demo --max-iter 0 --out new --data-dir new_data"),
    case("demo --max-iter -1 --out new --data-dir new_data"),
    case("demo --out new --data-dir image.png --max-iter 1"),
    case("demo --out image.png --data-dir new_data --max-iter 1"),
    case("demo --out new --data-dir new_data --max-iter 1 --device tpu"),
    case("demo --seed -1 --out new --data-dir new_data --max-iter 1"),
]


# ---- the property ----
def snapshot(root: Path) -> dict[str, tuple]:
    """{relative path: (kind, size, sha256, mode)} of everything under root (folders too)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISDIR(st.st_mode):
                out[str(p.relative_to(root))] = ("dir", 0, "", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
                out[str(p.relative_to(root))] = ("file", st.st_size, digest, stat.S_IMODE(st.st_mode))
    return out


def run_cli(argv: list[str], capsys) -> tuple[int | None, str, str]:
    """(exit code, stdout, stderr) of `workbench ARGV` in-process: main's return value or argparse's SystemExit;
    None with the traceback appended to stderr when an exception escaped main (a bug, by the README's rule)."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - the property under test: nothing escapes
        captured = capsys.readouterr()
        return None, captured.out, captured.err + traceback.format_exc()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(stderr: str) -> list[str]:
    """Lines that report an error: ours start with `error: `; argparse's usage errors end their `usage:` block
    with `workbench <command>: error: ...`."""
    return [line for line in stderr.splitlines()
            if line.startswith("error: ") or (line.startswith("workbench") and ": error: " in line)]


def finding_lines(text: str) -> list[str]:
    """A report's findings: `<where>: error: ...` (validate, predict) or `fix: ...` (doctor)."""
    return [line for line in text.splitlines() if ": error: " in line or line.strip().startswith("fix: ")]


class Tripwire(AssertionError):
    """Expensive work started although the input was bad (it must be refused before)."""


@pytest.fixture
def tripwires(monkeypatch):
    """The demo's component report and the ONNX exporter raise: a bad input must be refused before them (and
    a case that wrongly reached them stays fast)."""
    import workbench.harness.runners as runners

    def trip(what):
        def raise_(*args, **kwargs):
            raise Tripwire(f"{what} started although the input was bad")
        return raise_

    monkeypatch.setattr(runners, "run_all", trip("the component report"))
    monkeypatch.setattr(torch.onnx, "export", trip("torch.onnx.export"))


@pytest.mark.parametrize("argv, fixture, form", CASES)
def test_bad_input_gives_one_error_and_changes_nothing(workspace, tmp_path, monkeypatch, capsys, tripwires,
                                                       argv, fixture, form):
    wd = tmp_path / "wd"
    shutil.copytree(workspace, wd, symlinks=True)
    FIXTURES[fixture](wd)
    monkeypatch.chdir(wd)
    monkeypatch.delenv("WORKBENCH_DEBUG", raising=False)
    before = snapshot(wd)
    capsys.readouterr()
    code, out, err = run_cli(argv.split(), capsys)
    after = snapshot(wd)
    assert "Traceback" not in err, err
    assert code in EXIT_CODES, f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    if form == "error":
        lines = error_lines(err)
        assert len(lines) == 1, f"error lines {lines}\nstderr: {err[-2000:]}"
    else:
        lines = finding_lines(out + err)
        assert code == 1 and lines and not error_lines(err), f"findings {lines}\n{out[-2000:]}\n{err[-2000:]}"
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the command changed the working folder: {changed[:10]} (exit {code}, {lines})"


def test_every_command_is_in_the_matrix():
    """A new subcommand must join the table (one row at least)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = {c for c in sub.choices if c != "data"}
    data = next(a for a in sub.choices["data"]._actions if a.dest == "data_command")
    commands |= {f"data {c}" for c in data.choices}
    covered = set()
    for p in CASES:
        words = p.values[0].split()
        covered.add(" ".join(words[:2]) if words[0] == "data" else words[0])
    assert commands <= covered, f"commands without a row in CASES: {sorted(commands - covered)}"
