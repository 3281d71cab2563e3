"""TensorBoard events beside metrics.jsonl: read back with TensorBoard's own EventAccumulator."""
import json
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

import workbench as wb
from workbench.config import AugmentConfig, DataConfig, LogConfig, RunConfig, SolverConfig
from workbench.config_file import ConfigError, run_config_from_dict
from workbench.engine.evaluate import AttributeResult, EvalResult, MultiLabelResult
from workbench.engine.tracking import TensorBoardLog

ATTRS = {"color": ["red", "green", "blue"], "size": ["small", "large"]}


def events(run_dir) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def steps(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from workbench.data.synthetic import synthetic_splits

    root = tmp_path_factory.mktemp("shapes")
    train, val = synthetic_splits(root, 4, 2, image_size=64, progress=False)
    return train, val


def small_run(data, **log) -> RunConfig:
    from workbench.data.synthetic import synthetic_schema

    model = wb.ModelConfig.tiny(**synthetic_schema().model_fields(), loss=wb.LossConfig(num_points=64))
    return RunConfig(model=model, solver=SolverConfig(base_lr=1e-3, batch_size=2, max_iter=3, warmup_iters=0,
                                                      log_period=1, checkpoint_period=100),
                     data=DataConfig(train=str(data[0]), val=str(data[1])),
                     augment=AugmentConfig.synthetic(image_size=64), log=LogConfig(**log), device="cpu")


def test_a_run_writes_losses_lr_eval_metrics_and_overlays(tmp_path, data):
    from workbench.engine.pipeline import train_and_evaluate

    run_dir = tmp_path / "run"
    _, metrics = train_and_evaluate(small_run(data), run_dir, progress=False, num_overlays=2)
    assert list(run_dir.glob("events.out.tfevents.*")), "no event files beside metrics.jsonl"
    acc = events(run_dir)
    tags = acc.Tags()["scalars"]
    for tag in ("train/total", "train/lr", "train/loss_ce", "train/loss_mask", "train/loss_dice",
                "train/loss_attr_color", "train/loss_attr_size"):
        assert steps(acc, tag) == [1, 2, 3], tag  # every logged step, numbered as in metrics.jsonl
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("lr", "total", "loss_attr_color"):  # the same numbers as metrics.jsonl
        assert [e.value for e in acc.Scalars(f"train/{key}")] == pytest.approx([r[key] for r in records], rel=1e-6)
    assert steps(acc, "eval/segm/AP") == [3] and steps(acc, "eval/joint/AP") == [3]  # at the last training step
    assert acc.Scalars("eval/segm/AP")[0].value == pytest.approx(metrics.segm["AP"], abs=1e-4)
    for name, result in metrics.attributes.items():  # logged when defined (an untrained model may have no TP)
        assert (f"eval/attribute_accuracy/{name}" in tags) == (result.accuracy is not None)
    images = [t for t in acc.Tags()["images"] if t.startswith("eval/overlay/")]
    assert len(images) == 2
    image = acc.Images(images[0])[0]
    assert image.step == 3 and image.width >= 64 and image.encoded_image_string.startswith(b"\x89PNG")


def test_evaluation_scalars_name_every_attribute_and_skip_undefined_values(tmp_path):
    result = EvalResult(segm={"AP": 12.5, "AP50": None}, joint={"AP": 7.0}, per_category_ap={},
                        attributes={"color": AttributeResult("color", ["r", "g"], 0.75, 3, 4, 0, [[2, 1, 0], [0, 1, 0]]),
                                    "size": AttributeResult("size", ["s"], None, 0, 0, 0, [[0, 0]])},
                        max_dets=100, tp_iou=0.5, counts={}, iou_f1={"AP": 3.0, "AP50": None},
                        multi_label={"pattern": MultiLabelResult("pattern", ["dots", "plain"], 2, 0,
                                                                 micro={"precision": 1.0, "recall": 0.5, "f1": 0.6},
                                                                 macro={"precision": None, "recall": None, "f1": None},
                                                                 per_value={})})
    log = TensorBoardLog(tmp_path)
    log.evaluation(40, result)
    log.close()
    acc = events(tmp_path)
    assert sorted(acc.Tags()["scalars"]) == ["eval/attribute_accuracy/color", "eval/attribute_f1/pattern/micro",
                                             "eval/iou_f1/AP", "eval/joint/AP", "eval/segm/AP"]
    assert [(e.step, e.value) for e in acc.Scalars("eval/attribute_accuracy/color")] == [(40, 0.75)]


def test_tensorboard_off_writes_no_events_and_the_yaml_key_is_checked(tmp_path, data):
    from workbench.engine.trainer import train

    train(small_run(data, tensorboard=False), tmp_path / "off", progress=False)
    assert (tmp_path / "off" / "metrics.jsonl").is_file()
    assert not list((tmp_path / "off").glob("events.out.tfevents.*"))
    cfg = run_config_from_dict({"model": {"preset": "tiny"}, "log": {"tensorboard": False}})
    assert cfg.log.tensorboard is False
    with pytest.raises(ConfigError, match="log.tensorbord"):
        run_config_from_dict({"model": {"preset": "tiny"}, "log": {"tensorbord": False}})


def test_resume_hides_the_steps_an_interrupted_run_logged_after_its_checkpoint(tmp_path, data):
    from workbench.engine.trainer import train

    cfg = small_run(data)
    train(cfg, tmp_path, progress=False, max_iter=2)  # checkpoint (last.pt) at step 2
    shutil.copy(tmp_path / "last.pt", tmp_path / "step2.pt")
    train(cfg, tmp_path, progress=False, resume=True)  # logs step 3 ...
    shutil.copy(tmp_path / "step2.pt", tmp_path / "last.pt")  # ... and is lost before its checkpoint
    train(cfg, tmp_path, progress=False, resume=True)  # so step 3 runs again
    assert steps(events(tmp_path), "train/total") == [1, 2, 3]  # not [1, 2, 3, 3]


def test_ablation_cells_are_separate_tensorboard_runs(tmp_path):
    from workbench.ablation import Grid, run_grid

    base = {"model": {"preset": "tiny", "num_queries": 6, "test_topk": 6, "dec_layers": 1, "loss": {"num_points": 64}},
            "solver": {"batch_size": 2, "max_iter": 2, "warmup_iters": 0, "checkpoint_period": 100, "log_period": 1},
            "augment": {"image_size": 64, "min_scale": 0.9, "max_scale": 1.1, "test_shortest_edge": 0},
            "device": "cpu"}
    g = Grid.from_dict({"base": base, "axes": {"model.num_queries": [4, 6], "eval.scoring": ["main", "product"]},
                        "seeds": 1, "synthetic": {"train_images": 4, "val_images": 2, "image_size": 64}})
    outcomes = run_grid(g, tmp_path, progress=False)
    assert [o.status for o in outcomes] == ["done"] * 4, [o.error for o in outcomes]
    runs = EventMultiplexer().AddRunsFromDirectory(str(tmp_path))  # what `tensorboard --logdir OUT` does
    runs.Reload()
    assert sorted(runs.Runs()) == sorted(o.run_dir.relative_to(tmp_path).as_posix() for o in outcomes)
    for o in outcomes:
        acc = events(o.run_dir)
        assert steps(acc, "eval/segm/AP") == [2]  # each cell's own evaluation, at its training's last step
        trained_here = (o.run_dir / "last.pt").is_file()  # eval-only cells reuse a sibling's weights
        assert ("train/total" in acc.Tags()["scalars"]) == trained_here
