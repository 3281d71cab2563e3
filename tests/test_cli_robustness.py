"""Issue 24, groups 1-7: `workbench train` / `--resume` / `--overwrite` / `--weights` / `predict` / `export-weights`
keep the README's promises under bad input: one `error:` line (no traceback), exit 1 (data, run state) or 2
(config, usage), and nothing created, changed or deleted in the working folder.

Data: the synthetic shapes at 64 px (4 training, 2 validation images; `patterns=True` adds the multi-label
group `pattern`); models: the tiny preset, 1-3 steps. The published weights are a randomly initialised
transformers Mask2Former (ResNet-50, 32 wide heads), built once per module as tests/test_pretrained.py builds it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from workbench.cli import main

REPO = Path(__file__).resolve().parents[1]


# ---- helpers -------------------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes) and every folder (-> b"<dir>")."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


def cli(argv, capsys) -> tuple[int, str]:
    """(exit code, stderr) of `workbench ARGV`, argparse's usage errors included."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def one_error(err: str) -> str:
    """The one `error:` message of a failed command (no traceback), from that line on (a list of problems
    continues on the next lines)."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    starts = [i for i, line in enumerate(lines) if "error:" in line]
    assert len(starts) == 1, err
    return "\n".join(lines[starts[0]:])


def write_config(path: Path, train, val="", model=None, **solver) -> Path:
    model = {"preset": "tiny", "loss": {"num_points": 64}} if model is None else model
    solver = {"batch_size": 2, "max_iter": 2, "warmup_iters": 1, "log_period": 1, "checkpoint_period": 1, **solver}
    path.write_text(json.dumps({"model": model, "solver": solver, "data": {"train": str(train), "val": str(val)},
                                "augment": {"image_size": 64, "min_scale": 0.9, "max_scale": 1.1,
                                            "test_shortest_edge": 0}, "device": "cpu"}))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from workbench.data.synthetic import synthetic_splits

    return synthetic_splits(tmp_path_factory.mktemp("shapes"), 4, 2, image_size=64, progress=False)


@pytest.fixture(scope="module")
def patterned(tmp_path_factory):
    """Data with the multi-label group `pattern`, and its validation file with `pattern` made single-label (as
    a second import without --all-multi would give it)."""
    from workbench.data.synthetic import synthetic_splits

    train, val = synthetic_splits(tmp_path_factory.mktemp("patterns"), 4, 2, image_size=64, progress=False,
                                  patterns=True)
    doc = json.loads(Path(val).read_text())
    for group in doc["attributes"]:
        group.pop("kind", None)  # single
    for ann in doc["annotations"]:
        values = ann["attributes"]["pattern"]
        ann["attributes"]["pattern"] = values[0] if values else -1
    single_val = Path(val).with_name("single.json")
    single_val.write_text(json.dumps(doc))
    return train, val, single_val


@pytest.fixture(scope="module")
def tiny_run(shapes, tmp_path_factory):
    """A finished tiny run (2 steps, both checkpoints kept) and its config."""
    root = tmp_path_factory.mktemp("tiny")
    config = write_config(root / "cfg.yaml", *shapes, max_iter=3)
    from workbench.engine.cli import load_train_config
    from workbench.engine.trainer import train

    train(load_train_config(str(config)), root / "run", progress=False, max_iter=2)
    return root / "run", config


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    pytest.importorskip("transformers", reason="transformers (a dev dependency) writes the published checkpoint")
    from test_pretrained import transformers_model

    path = tmp_path_factory.mktemp("hub") / "m2f"
    transformers_model("resnet50").save_pretrained(path)
    return path


def bad_copy(hf_dir: Path, root: Path, name: str, tensors=None, config=None) -> Path:
    """A copy of the transformers folder with its tensors and/or config.json edited."""
    from safetensors.torch import load_file, save_file

    out = root / name
    out.mkdir(parents=True)
    state = load_file(str(hf_dir / "model.safetensors"))
    doc = json.loads((hf_dir / "config.json").read_text())
    save_file(tensors(state) if tensors else state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config(doc) if config else doc))
    return out


FC1 = "model.transformer_module.decoder.layers.1.fc1.weight"
BAD_WEIGHTS = {  # name: (tensors edit, config.json edit, what the message must say)
    "extra_tensor": (lambda t: {**t, "model.extra.weight": torch.zeros(2)}, None,
                     r"tensor 'model\.extra\.weight' \(2,\) has no place in our model"),
    "missing_tensor": (lambda t: {k: v for k, v in t.items() if k != FC1}, None,
                       r"no tensor for our 'decoder\.ffn\.1\.net\.0\.weight'.*tensors disagree with its own"),
    "wrong_shape": (lambda t: {**t, FC1: torch.zeros(7, 32)}, None,
                    r"fc1\.weight' has shape \(7, 32\).*tensors disagree with its own"),
    "config_json_disagrees": (None, lambda c: {**c, "hidden_dim": 64, "feature_size": 64},
                              r"config\.json disagrees with its own tensors: hidden_dim 64 \(config\.json\) but 32 "
                              r"\(tensors\)"),
    "swin_of_unknown_width": (None, lambda c: {**c, "backbone_config": {
        "model_type": "swin", "embed_dim": 80, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]}},
        r"no Swin variant has embed_dim=80"),
    "id2label_with_a_gap": (None, lambda c: {**c, "id2label": {str(i): f"c{i}" for i in range(81) if i != 4}},
                            r"config\.json id2label has no class 4"),
}


# ---- 1 and 2: bad weights never touch an existing run, and are one message -------------------------------------
@pytest.mark.parametrize("name", list(BAD_WEIGHTS))
def test_overwrite_with_bad_weights_leaves_the_previous_run_byte_identical(name, hf_dir, tiny_run, shapes, tmp_path,
                                                                           capsys):
    tensors, config, says = BAD_WEIGHTS[name]
    weights = bad_copy(hf_dir, tmp_path / "weights", name, tensors, config)
    run = tmp_path / "work" / "run"
    shutil.copytree(tiny_run[0], run)
    cfg = write_config(tmp_path / "work" / "weights.yaml", *shapes, model={"loss": {"num_points": 64}})
    before = snapshot(tmp_path / "work")
    code, err = cli(["train", "--config", cfg, "--out", run, "--overwrite", "--weights", weights], capsys)
    line = one_error(err)
    assert code in (1, 2) and str(weights) in line and re.search(says, line), line
    assert "build it from wb.pretrained_config" not in line
    assert snapshot(tmp_path / "work") == before  # nothing deleted, changed or created
    code, err = cli(["train", "--config", cfg, "--out", tmp_path / "work" / "new", "--weights", weights], capsys)
    assert code in (1, 2) and not (tmp_path / "work" / "new").exists()


@pytest.mark.parametrize("split", ["train", "val"])
def test_overwrite_with_a_missing_image_leaves_the_previous_run_byte_identical(split, tiny_run, shapes, tmp_path,
                                                                              capsys):
    data = tmp_path / "data"
    for name in ("train", "val"):
        shutil.copytree(Path(shapes[0 if name == "train" else 1]).parent, data / name)
    (data / split / "shapes_00001.png").unlink()
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    cfg = write_config(tmp_path / "cfg.yaml", data / "train" / "coco.json", data / "val" / "coco.json")
    before = snapshot(tmp_path)
    code, err = cli(["train", "--config", cfg, "--out", run, "--overwrite"], capsys)
    line = one_error(err)
    assert code == 1 and f"{data / split / 'shapes_00001.png'}: error: no such image file" in line, line
    assert snapshot(tmp_path) == before


# ---- 3: --resume never reads the weights, so they may have moved ----------------------------------------------
@pytest.fixture(scope="module")
def resumed_r50(hf_dir, shapes, tmp_path_factory):
    """A run started from weights (1 step of 2), the weights then moved away, then `train --resume` by the CLI:
    (run folder, exit code, stderr)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from workbench.engine.cli import load_train_config
    from workbench.engine.trainer import train

    root = tmp_path_factory.mktemp("r50")
    weights = root / "hub"
    shutil.copytree(hf_dir, weights)
    config = write_config(root / "cfg.yaml", *shapes, model={"loss": {"num_points": 64}, "weights": str(weights)},
                          keep_checkpoints=1)
    train(load_train_config(str(config)), root / "run", progress=False, max_iter=1)
    weights.rename(root / "moved")
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(["train", "--config", str(config), "--out", str(root / "run"), "--resume", "--no-eval"])
    return root / "run", code, err.getvalue()


def test_resume_does_not_need_the_weights_where_they_were(resumed_r50, hf_dir):
    from workbench.pretrained import read_checkpoint
    from workbench.pretrained.load import CHECKPOINT_FIELDS, checkpoint_fields

    run, code, err = resumed_r50
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    # what the resumed run takes from its config.yaml covers every field the weights would give
    assert set(checkpoint_fields(read_checkpoint(hf_dir))) <= set(CHECKPOINT_FIELDS)


# ---- 4: one train at a time in a run folder ---------------------------------------------------------------------
def test_a_second_train_into_a_locked_run_folder_exits_1_and_touches_nothing(tiny_run, shapes, tmp_path, capsys):
    from workbench.engine.run_folder import LOCK_FILE

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from workbench.engine.run_folder import lock_run_dir
            lock_run_dir(Path({str(run)!r}))
            print("locked", flush=True)
            sys.stdin.read()  # held until the test closes stdin
        """)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(tmp_path)
        for flag in ("--resume", "--overwrite"):
            code, err = cli(["train", "--config", tiny_run[1], "--out", run, flag, "--no-eval"], capsys)
            line = one_error(err)
            assert code == 1 and str(run) in line and f"pid {holder.pid}" in line and "in use" in line, line
            assert snapshot(tmp_path) == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # the holder ended: its lock went with it; a train in this process releases its own when it returns
    config = write_config(tmp_path / "cfg.yaml", *shapes, max_iter=1)
    assert cli(["train", "--config", config, "--out", run, "--overwrite", "--no-eval"], capsys)[0] == 0
    assert (run / LOCK_FILE).is_file()
    probe = subprocess.run([sys.executable, "-c", f"from pathlib import Path; from workbench.engine.run_folder import "
                            f"lock_run_dir; lock_run_dir(Path({str(run)!r}))"], cwd=REPO, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert probe.returncode == 0, probe.stderr


def test_a_train_that_fails_in_this_process_releases_its_lock(tiny_run, shapes, tmp_path, monkeypatch):
    """A notebook whose run raised must not keep the folder locked."""
    import workbench.engine.trainer as trainer
    from workbench.engine.cli import load_train_config
    from workbench.engine.run_folder import lock_run_dir

    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure after the lock")

    monkeypatch.setattr(trainer, "freeze_parameters", fail)
    cfg = load_train_config(str(write_config(tmp_path / "cfg.yaml", *shapes, max_iter=1)))
    with pytest.raises(RuntimeError, match="simulated"):
        trainer.train(cfg, tmp_path / "run", progress=False)
    lock_run_dir(tmp_path / "run").close()  # raises RunLockedError while anything in this process holds it


# ---- 5: user errors in the config or on the command line: one message, exit 2, nothing created -------------------
CONFIG_ERRORS = {  # name: (edit of the config dict, what the message names)
    "unknown_backbone": (lambda c: c["model"].update(backbone="resnet18"), "backbone 'resnet18' is not one of"),
    "device_tpu": (lambda c: c.update(device="tpu"), "device: 'tpu': expected 'auto', 'cpu', 'cuda' or 'cuda:N'"),
    "base_lr_nan": (lambda c: c["solver"].update(base_lr=float("nan")), "solver.base_lr: expected a finite number"),
    "batch_size_true": (lambda c: c["solver"].update(batch_size=True), "solver.batch_size: expected int, got bool"),
    "warmup_negative": (lambda c: c["solver"].update(warmup_iters=-1), "solver.warmup_iters and solver.num_workers "
                                                                       "must be >= 0, got -1"),
}


@pytest.mark.parametrize("name", list(CONFIG_ERRORS))
def test_config_errors_are_one_message_and_exit_2(name, shapes, tmp_path, capsys):
    edit, says = CONFIG_ERRORS[name]
    path = write_config(tmp_path / "cfg.yaml", *shapes)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc).replace("NaN", ".nan"))  # YAML's spelling
    code, err = cli(["train", "--config", path, "--out", tmp_path / "run"], capsys)
    assert code == 2 and says in one_error(err)
    assert not (tmp_path / "run").exists()


def test_an_empty_config_file_says_what_it_needs(tmp_path, capsys):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    code, err = cli(["train", "--config", tmp_path / "empty.yaml", "--out", tmp_path / "run"], capsys)
    line = one_error(err)
    assert code == 2 and "empty.yaml: the config is empty" in line and "data: {train:" in line, line
    assert "__init__" not in line and not (tmp_path / "run").exists()


@pytest.mark.parametrize("device", ["tpu", "cpu:0", "cuda", "cuda:3"])
@pytest.mark.parametrize("command", ["train", "predict"])
def test_device_errors_are_one_message_and_exit_2(command, device, tiny_run, shapes, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "out"
    argv = (["train", "--config", tiny_run[1], "--out", out] if command == "train" else
            ["predict", "--run", tiny_run[0], str(Path(shapes[1]).parent / "shapes_00000.png"), "--out", out])
    before = snapshot(tiny_run[0])
    code, err = cli([*argv, "--device", device], capsys)
    line = one_error(err)
    assert code == 2 and repr(device) in line, line
    assert ("CUDA is unavailable" if device.startswith("cuda") else "expected 'auto', 'cpu', 'cuda'") in line
    assert not out.exists() and snapshot(tiny_run[0]) == before


def test_config_backbones_are_the_models():
    from workbench.config import BACKBONES
    from workbench.model.backbones import BACKBONE_NAMES

    assert BACKBONES == BACKBONE_NAMES


# ---- 6: attribute group kinds are checked before any folder is made ---------------------------------------------
def test_a_single_label_head_on_multi_label_data_is_a_config_error(patterned, tmp_path, capsys):
    train, val, _ = patterned
    from workbench.data.schema import schema_of_coco

    attributes = {**schema_of_coco(train).model_attributes(),
                  "pattern": {"values": ["stripes", "dots", "outline"], "kind": "single"}}
    model = {"preset": "tiny", "loss": {"num_points": 64}, "attributes": attributes}
    code, err = cli(["train", "--config", write_config(tmp_path / "cfg.yaml", train, val, model=model),
                     "--out", tmp_path / "run"], capsys)
    line = one_error(err)
    assert code == 2 and "model.attributes.pattern.kind is single" in line and "multi-label" in line, line
    assert not (tmp_path / "run").exists()


def test_train_and_val_that_disagree_on_a_kind_are_a_config_error(patterned, tmp_path, capsys):
    train, _, single_val = patterned
    code, err = cli(["train", "--config", write_config(tmp_path / "cfg.yaml", train, single_val),
                     "--out", tmp_path / "run"], capsys)
    line = one_error(err)
    assert code == 2 and "`pattern` is multi in" in line and f"but single in {single_val}" in line, line
    assert not (tmp_path / "run").exists()


def test_eval_data_of_another_kind_than_the_runs_training_data_is_refused(patterned, tmp_path, capsys):
    train, val, single_val = patterned
    config = write_config(tmp_path / "cfg.yaml", train, val, max_iter=1)
    assert cli(["train", "--config", config, "--out", tmp_path / "run", "--no-eval"], capsys)[0] == 0
    before = snapshot(tmp_path / "run")
    code, err = cli(["eval", "--run", tmp_path / "run", "--data", single_val, "--device", "cpu"], capsys)
    line = one_error(err)
    assert code == 2 and "`pattern` is multi in" in line and "single in" in line, line
    assert snapshot(tmp_path / "run") == before  # no metrics_single.json scored as accuracy


# ---- 7: a checkpoint cut short at any size is "corrupt", and the older intact one is used ------------------------
def test_every_truncation_of_a_checkpoint_is_named_corrupt(tiny_run, tmp_path):
    from workbench.engine.checkpoint import CheckpointError, load_checkpoint

    data = (tiny_run[0] / "last_step1.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    for kb in range(1, 201):
        cut.write_bytes(data[:kb * 1024])
        with pytest.raises(CheckpointError, match=rf"cut\.pt: corrupt or truncated checkpoint \({kb * 1024} bytes"):
            load_checkpoint(cut)


SIZES_KB = [5, 20, 45, 67, 150]  # 5-67 KB of this checkpoint raised OSError [Errno 22] in torch.load; 150: a control


@pytest.mark.parametrize("kb", SIZES_KB)
def test_resume_falls_back_past_a_truncated_newest_checkpoint(kb, tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)  # copies: last.pt is no longer last_step2.pt's hard link
    for name in ("last.pt", "last_step2.pt"):
        (run / name).write_bytes((run / name).read_bytes()[:kb * 1024])
    code, err = cli(["train", "--config", tiny_run[1], "--out", run, "--resume", "--no-eval"], capsys)
    assert code == 0, err
    assert "falling back to an older checkpoint" in err and "corrupt or truncated" in err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # resumed from step 1: step 2 retrained, then 3


@pytest.mark.parametrize("kb", SIZES_KB)
def test_predict_falls_back_past_a_truncated_final_model(kb, tiny_run, shapes, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    (run / "model_final.pt").write_bytes((run / "model_final.pt").read_bytes()[:kb * 1024])
    image = Path(shapes[1]).parent / "shapes_00000.png"
    code, err = cli(["predict", "--run", run, image, "--out", tmp_path / "overlays", "--device", "cpu"], capsys)
    assert code == 0, err
    assert "model_final.pt: corrupt or truncated" in err and (tmp_path / "overlays" / "shapes_00000.png").is_file()


@pytest.mark.parametrize("kb", [5, 67])
def test_export_falls_back_past_a_truncated_final_model(kb, resumed_r50, tmp_path, capsys):
    run = resumed_r50[0]
    final = run / "model_final.pt"
    intact = final.read_bytes()
    try:
        final.unlink()  # a new file, not the run's other links
        final.write_bytes(intact[:kb * 1024])
        code, err = cli(["export-weights", run, "--format", "transformers", tmp_path / "hub"], capsys)
    finally:
        final.write_bytes(intact)
    assert code == 0, err
    assert "model_final.pt: corrupt or truncated" in err and (tmp_path / "hub" / "model.safetensors").is_file()
