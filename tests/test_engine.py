"""Trainer, schedule, checkpoints and config files."""
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import workbench as wb
from workbench.config import DataConfig, RunConfig, SolverConfig
from workbench.config_file import ConfigError, read_yaml, run_config_from_dict
from workbench.engine.checkpoint import load_checkpoint, save_checkpoint
from workbench.engine.schedule import lr_factor, scaled_lr
from workbench.engine.optim import param_groups
from workbench.engine.trainer import NonFiniteLossError, train
from workbench.harness.synthetic import synthetic_batch

ATTRS = {"color": ["r", "g", "b"], "size": ["s", "m", "l"]}


def run_cfg(**solver):
    args = dict(base_lr=1e-3, batch_size=2, max_iter=4, warmup_iters=2, checkpoint_period=2, log_period=1)
    args.update(solver)
    model = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS, loss=wb.LossConfig(num_points=64))
    return RunConfig(model=model, solver=SolverConfig(**args), device="cpu")


def dataset(n=6):
    return synthetic_batch(3, {"color": 3, "size": 3}, batch=n, size=64, seed=0)


# ---- lr scaling and schedule ----
@pytest.mark.parametrize("batch,expected", [(16, 1e-4), (2, 1.25e-5), (32, 2e-4)])
def test_linear_scaling_rule(batch, expected):
    s = scaled_lr(SolverConfig(base_lr=1e-4, batch_size=batch, reference_batch=16))
    assert s.lr == pytest.approx(expected)
    assert f"batch {batch} / reference 16" in s.message


def test_scaling_can_be_turned_off():
    s = scaled_lr(SolverConfig(base_lr=1e-4, batch_size=2, scale_lr=False))
    assert s.lr == 1e-4 and "off" in s.message


def test_warmup_then_poly_and_step():
    poly = SolverConfig(max_iter=100, warmup_iters=10, warmup_factor=0.1, poly_power=0.9)
    assert lr_factor(poly, 0) == pytest.approx(0.1)
    assert lr_factor(poly, 10) == pytest.approx((1 - 10 / 100) ** 0.9)
    assert lr_factor(poly, 100) == 0.0
    step = SolverConfig(schedule="step", steps=(5, 8), gamma=0.1, warmup_iters=0)
    assert [round(lr_factor(step, s), 6) for s in (4, 5, 8)] == [1.0, 0.1, 0.01]


def test_trainer_applies_and_prints_the_scaled_lr(tmp_path, capsys):
    result = train(run_cfg(max_iter=1), tmp_path / "run", dataset=dataset(), progress=False)
    assert result.lr == pytest.approx(1e-3 * 2 / 16)
    assert "linear scaling rule" in capsys.readouterr().out


def test_backbone_gets_lower_lr_and_norms_no_decay():
    cfg = run_cfg()
    model = wb.build_model(cfg.model)
    groups = param_groups(model, cfg.solver, 1.0)
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    for g in groups:
        in_backbone = {id(p) in backbone_ids for p in g["params"]}
        assert len(in_backbone) == 1
        assert g["lr"] == (0.1 if in_backbone.pop() else 1.0)
    norm_weight = model.decoder.decoder_norm.weight
    assert next(g for g in groups if any(p is norm_weight for p in g["params"]))["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_swin_position_bias_tables_and_level_embeds_get_no_weight_decay():
    """As upstream's build_optimizer: relative_position_bias_table is an embedding in all but type."""
    from workbench.config import SolverConfig

    model = wb.build_model(wb.ModelConfig.tiny(backbone="swin_t"))
    decay_of = {id(p): g["weight_decay"] for g in param_groups(model, SolverConfig(), 1.0) for p in g["params"]}
    tables = [p for n, p in model.named_parameters() if n.endswith("relative_position_bias_table")]
    assert len(tables) == 12 and all(decay_of[id(p)] == 0.0 for p in tables)
    assert decay_of[id(model.pixel_decoder.level_embed)] == 0.0
    assert decay_of[id(model.decoder.class_head.weight)] == SolverConfig().weight_decay


# ---- resume, NaN guard, checkpoints ----
def test_resume_is_bit_for_bit(tmp_path):
    data = dataset()
    straight = train(run_cfg(), tmp_path / "a", dataset=data, progress=False).model.state_dict()
    train(run_cfg(), tmp_path / "b", dataset=data, progress=False, max_iter=2)
    resumed = train(run_cfg(), tmp_path / "b", dataset=data, progress=False, resume=True).model.state_dict()
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


def test_metrics_record_the_time_spent_waiting_for_data(tmp_path, monkeypatch):
    """metrics.jsonl's data_time (as detectron2's): mean seconds per step spent getting the batch since the
    previous record. On the trainer's clock, replaced by a counter that only the dataset (1 s per item, 2 per
    batch) and the model (10 s per forward) advance, data_time is exactly 2 s: the model's time is not in it.
    No real time is measured."""
    import types

    import workbench.engine.trainer as trainer_module
    from workbench.model import MultiTaskMask2Former

    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    forward = MultiTaskMask2Former.forward

    def slow_forward(self, *args, **kwargs):
        clock[0] += 10.0
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(MultiTaskMask2Former, "forward", slow_forward)

    class Counted(list):
        def __getitem__(self, i):
            clock[0] += 1.0
            return list.__getitem__(self, i)

    train(run_cfg(log_period=2), tmp_path / "run", dataset=Counted(dataset()), progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert [r["data_time"] for r in records] == [2.0, 2.0]


def test_resume_refuses_a_different_model(tmp_path):
    train(run_cfg(max_iter=2), tmp_path / "r", dataset=dataset(), progress=False)
    other = run_cfg()
    other = RunConfig(model=other.model.replace(num_queries=7), solver=other.solver, device="cpu")
    with pytest.raises(ValueError, match="differs"):
        train(other, tmp_path / "r", dataset=dataset(), progress=False, resume=True)


def test_nan_loss_names_step_term_and_images_and_saves_the_batch(tmp_path, monkeypatch):
    data = dataset()
    for i, item in enumerate(data):
        item["image_id"] = 100 + i
    real_forward = wb.model.MultiTaskMask2Former.forward
    calls = {"n": 0}

    def poisoned(self, batch, generator=None, **kwargs):
        losses = real_forward(self, batch, generator, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            losses["loss_dice"] = losses["loss_dice"] * float("nan")
        return losses

    monkeypatch.setattr(wb.model.MultiTaskMask2Former, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"step 1: terms \['loss_dice'\]; image ids \[\d+, \d+\]") as err:
        train(run_cfg(), tmp_path / "n", dataset=data, progress=False)
    saved = load_checkpoint(tmp_path / "n" / "nan_batch_step1.pt")
    assert saved["terms"] == ["loss_dice"] and str(saved["image_ids"][0]) in str(err.value)
    assert saved["batch"][0]["image"].dtype == torch.uint8


def test_checkpoint_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "hook": pickle.Pickler}, path)  # a class: needs unpickling code to load
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(path)


def test_failed_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})

    def crash(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # temp file cleaned up


def test_kill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    """The child announces when it is inside the second save (its temp file written, not yet renamed) and
    waits there; the kill lands at that point for sure, with no timing guess."""
    path = tmp_path / "last.pt"
    script = textwrap.dedent(f"""
        import sys, torch
        from workbench.engine.checkpoint import save_checkpoint
        real_save = torch.save
        def save_then_wait(obj, f, *args, **kwargs):
            real_save(obj, f, *args, **kwargs)
            if obj["step"] == 2:
                print("inside save", flush=True)
                sys.stdin.read()  # blocks until killed
        torch.save = save_then_wait
        big = torch.randn(1_000_000)
        save_checkpoint({str(path)!r}, {{"step": 1, "w": big}})
        save_checkpoint({str(path)!r}, {{"step": 2, "w": big}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "inside save"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 1 and ckpt["w"].numel() == 1_000_000
    assert [p.name for p in tmp_path.glob(".last.pt.*.tmp")]  # the killed write's leftover (removed on start)


# ---- config files ----
def test_yaml_config_round_trip_and_unknown_keys(tmp_path):
    text = """
model: {preset: tiny, num_classes: 3, attributes: {color: [r, g, b]}, loss: {num_points: 64}}
solver: {batch_size: 2, base_lr: 0.001}
data: {train: t.json}
"""
    (tmp_path / "c.yaml").write_text(text)
    cfg = run_config_from_dict(read_yaml(tmp_path / "c.yaml"))
    assert cfg.model.hidden_dim == wb.ModelConfig.tiny().hidden_dim and cfg.model.loss.num_points == 64
    assert cfg.model.attribute("color").values == ("r", "g", "b")
    assert cfg.solver.batch_size == 2 and cfg.data == DataConfig(train="t.json")
    with pytest.raises(ConfigError, match=r"model\.loss\.num_pointz"):
        run_config_from_dict({"model": {"num_classes": 3, "loss": {"num_pointz": 3}}})
    with pytest.raises(ConfigError, match=r"solver\.bach_size"):
        run_config_from_dict({"model": {"num_classes": 3}, "solver": {"bach_size": 3}})
    with pytest.raises(ConfigError, match=r"solver\.batch_size: expected int"):
        run_config_from_dict({"model": {"num_classes": 3}, "solver": {"batch_size": "two"}})


def test_yaml_syntax_error_names_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  num_classes: [3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+:\d+"):
        read_yaml(tmp_path / "bad.yaml")


def test_model_defaults_come_from_the_data():
    cfg = run_config_from_dict({"model": {"preset": "tiny"}},
                               model_defaults={"num_classes": 4, "attributes": {"size": ["s", "l"]}})
    assert cfg.model.num_classes == 4 and cfg.model.attribute_names == ("size",)


def test_epoch_batches_cover_each_epoch_once_and_restart_anywhere():
    from workbench.engine.trainer import DistInfo, EpochBatches

    b = EpochBatches(dataset_len=10, batch_size=3, seed=1, dist_info=DistInfo())
    epoch0 = [i for s in range(3) for i in b.indices(s)]
    assert len(set(epoch0)) == 9  # 3 full batches, no repeats; the 10th image waits for another epoch
    assert b.indices(3) != b.indices(0) or b.indices(4) != b.indices(1)  # a new permutation next epoch
    fresh = EpochBatches(dataset_len=10, batch_size=3, seed=1, dist_info=DistInfo())
    assert fresh.indices(4) == b.indices(4)  # resuming at step 4 gives the same batch
    two = [EpochBatches(10, 4, 1, DistInfo(rank=r, world_size=2)).indices(0) for r in (0, 1)]
    assert sorted(two[0] + two[1]) == sorted(EpochBatches(10, 4, 1, DistInfo()).indices(0))


def test_example_config_is_the_demo_config():
    """data/train_shapes.yaml (README example) trains exactly what `make demo` trains."""
    import pathlib

    from workbench.engine.demo import demo_config

    root = pathlib.Path(__file__).resolve().parents[1]
    demo = demo_config(pathlib.Path("data/generated/demo"))
    cfg = run_config_from_dict(read_yaml(root / "data" / "train_shapes.yaml"),
                               model_defaults={"num_classes": demo.model.num_classes,
                                               "attributes": {a.name: list(a.values) for a in demo.model.attributes}})
    assert cfg.model == demo.model and cfg.solver == demo.solver and cfg.augment == demo.augment
    assert cfg.data == demo.data and cfg.eval == demo.eval


@pytest.mark.parametrize("argv, says", [
    (["eval"], "--run RUN_DIR is required"),
    (["eval", "--fashionpedia-results", "results.json"], "needs --data"),
    (["export", "runs/x", "--format", "onnx", "model.txt"], "should end in .onnx"),
])
def test_usage_errors_print_one_message_and_exit_2(argv, says, capsys):
    """A command line that cannot run as given exits 2 with one `error:` line, as argparse's own usage errors
    do (these were SystemExit(message), exit 1, and a bare print returning 1)."""
    from workbench.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and "Traceback" not in err


# ---- user-fixable mistakes: one message, the right exit code, nothing written ----
@pytest.mark.parametrize("text, says", [
    ("model: tiny\n", "model: expected a mapping"),
    ("model: {preset: tiny}\ndata: [a, b]\n", "data: expected a mapping"),
    ("model: {preset: tiny, loss: 5}\n", "model.loss: expected a mapping"),
    ("model: {preset: tiny}\nsolver: 5\n", "solver: expected a mapping"),
    ("model: []\n", "model: expected a mapping"),
    ("model: {preset: tiny, loss: []}\n", "model.loss: expected a mapping"),
])
def test_config_sections_of_the_wrong_type_are_config_errors(tmp_path, capsys, text, says):
    from workbench.cli import main

    (tmp_path / "c.yaml").write_text(text)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err
    assert not (tmp_path / "run").exists()


def test_an_empty_section_takes_its_defaults():
    cfg = run_config_from_dict({"model": {"preset": "tiny", "num_classes": 3}, "solver": None})
    assert cfg.solver == SolverConfig()


def test_fewer_images_than_one_batch_is_a_config_error_before_the_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="3 training images, fewer than one batch of solver.batch_size 4"):
        train(run_cfg(batch_size=4), tmp_path / "run", dataset=dataset(3), progress=False)
    assert not (tmp_path / "run").exists()


def _run_dir(root, hidden_dim=32):
    from workbench.config_file import dump_yaml, to_dict

    torch.manual_seed(0)
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS)
    model = wb.build_model(cfg)
    run = RunConfig(model=cfg, device="cpu")
    root.mkdir()
    save_checkpoint(root / "model_final.pt", {"model": model.state_dict(), "config": to_dict(run)})
    edited = RunConfig(model=wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS, hidden_dim=hidden_dim),
                       device="cpu")
    dump_yaml(edited, root / "config.yaml")
    return root


def test_a_run_whose_config_no_longer_fits_its_weights_names_both(tmp_path):
    from workbench.engine.checkpoint import CheckpointError
    from workbench.engine.inference import load_run

    tiny = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS)
    assert load_run(_run_dir(tmp_path / "same", tiny.hidden_dim)).model.cfg == tiny
    with pytest.raises(CheckpointError, match=r"model_final\.pt does not fit the model .*config\.yaml describes .*"
                                              r"tensors of another shape.*config\.yaml edited"):
        load_run(_run_dir(tmp_path / "edited", tiny.hidden_dim * 2))
    save_checkpoint(tmp_path / "same" / "model_final.pt", {"step": 1})
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        load_run(tmp_path / "same")


def test_eval_option_out_of_range_exits_2(tmp_path, capsys):
    from workbench.cli import main

    tiny = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS)
    run = _run_dir(tmp_path / "run", tiny.hidden_dim)
    assert main(["eval", "--run", str(run), "--dedupe-iou", "5"]) == 2
    assert "dedupe_iou" in capsys.readouterr().err


def test_resume_drops_a_log_line_cut_short_and_names_a_damaged_one(tmp_path, capsys):
    from workbench.data.problems import DataError
    from workbench.engine.trainer import truncate_jsonl

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"ste')  # killed while appending step 4
    truncate_jsonl(log, 2)
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'
    assert "metrics.jsonl:4: dropped a line cut short" in capsys.readouterr().out
    log.write_text('{"step": 1}\n{"st\n{"step": 2}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2.*not a JSON record"):
        truncate_jsonl(log, 2)


def test_paths_of_the_wrong_kind_are_named_not_traced(tmp_path, capsys):
    from workbench.cli import main

    (tmp_path / "folder").mkdir()
    assert main(["train", "--config", str(tmp_path / "folder"), "--out", str(tmp_path / "run")]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00model")
    assert main(["train", "--config", str(tmp_path / "binary.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "binary.yaml: not a YAML text file" in capsys.readouterr().err
    assert main(["data", "synth", str(tmp_path / "s"), "--size", "8"]) == 2
    assert "--size" in capsys.readouterr().err and not (tmp_path / "s").exists()
    assert not (tmp_path / "run").exists()
    (tmp_path / "afile").write_text("not a folder")
    assert main(["data", "synth", str(tmp_path / "afile"), "--images", "1"]) == 1  # an OSError naming the path
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "afile" in err and "Traceback" not in err


def test_overwrite_removes_the_runs_category_names(tmp_path):
    """categories.json is a run file: --overwrite deletes it (a new run on data without a schema must not inherit
    the old names), and it does not make a folder count as holding a run."""
    from workbench.engine.trainer import prepare_run_dir

    run = tmp_path / "run"
    run.mkdir()
    (run / "categories.json").write_text('{"categories": ["old"]}')
    (run / "notes.txt").write_text("mine")
    prepare_run_dir(run, resume=False, overwrite=False)  # not a run: no error
    (run / "config.yaml").write_text("model: {}")
    prepare_run_dir(run, resume=False, overwrite=True)
    assert not (run / "categories.json").exists() and (run / "notes.txt").exists()
