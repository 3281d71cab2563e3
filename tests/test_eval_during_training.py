"""Evaluation during training (solver.eval_period): metrics at each period in metrics.jsonl, TensorBoard and the
progress bar; best.pt kept by solver.best_metric (also across a resume); eval/predict --checkpoint best|last;
metrics.json says which weights it scored."""
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import workbench as wb
import workbench.engine.inference as inference
import workbench.engine.pipeline as pipeline
from workbench.cli import main
from workbench.config import AugmentConfig, DataConfig, RunConfig, SolverConfig
from workbench.config_file import ConfigError
from workbench.engine.checkpoint import load_checkpoint
from workbench.engine.evaluate import EvalResult, read_metrics_json
from workbench.engine.pipeline import train_and_evaluate


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from workbench.data.synthetic import synthetic_splits

    return synthetic_splits(tmp_path_factory.mktemp("shapes"), 4, 2, image_size=64, progress=False)


def run_cfg(data, **solver) -> RunConfig:
    from workbench.data.synthetic import synthetic_schema

    args = dict(base_lr=1e-3, batch_size=2, max_iter=6, warmup_iters=0, log_period=1, checkpoint_period=2,
                keep_checkpoints=3, eval_period=2)
    args.update(solver)
    model = wb.ModelConfig.tiny(**synthetic_schema().model_fields(), loss=wb.LossConfig(num_points=64))
    return RunConfig(model=model, solver=SolverConfig(**args), data=DataConfig(train=str(data[0]), val=str(data[1])),
                     augment=AugmentConfig.synthetic(image_size=64), device="cpu")


def fake_result(ap: float) -> EvalResult:
    return EvalResult(segm={"AP": ap, "AP50": ap + 1}, joint={"AP": ap / 2}, per_category_ap={}, attributes={},
                      max_dets=100, tp_iou=0.5, counts={})


@pytest.fixture
def scripted_ap(monkeypatch):
    """evaluate_model returns segm AP from `script` in turn (real training, scripted scores)."""
    script, calls = [], []

    def evaluate(model, coco_path, dataset, eval_cfg, progress=True, batch_size=4):
        calls.append({k: v.clone() for k, v in model.state_dict().items()})
        return fake_result(script.pop(0))

    monkeypatch.setattr(inference, "evaluate_model", evaluate)
    monkeypatch.setattr(pipeline, "evaluate_model", evaluate)
    return script, calls


def test_each_period_is_logged_and_best_pt_holds_the_best_step(tmp_path, data, scripted_ap, monkeypatch):
    script, calls = scripted_ap
    script += [10.0, 30.0, 20.0]
    postfixes = []
    import workbench.engine.trainer as trainer

    class RecordingBar(trainer.tqdm):
        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            postfixes.append(dict(ordered_dict))
            return super().set_postfix(ordered_dict, refresh=refresh, **kwargs)

    monkeypatch.setattr(trainer, "tqdm", RecordingBar)
    run = tmp_path / "run"
    result, metrics = train_and_evaluate(run_cfg(data), run, progress=False, num_overlays=1)
    assert len(calls) == 3  # steps 2, 4, 6; the final evaluation reuses step 4's
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval" in r]
    assert [(r["step"], r["eval"]["segm/AP"]) for r in evals] == [(2, 10.0), (4, 30.0), (6, 20.0)]
    assert [r["best"]["step"] for r in evals] == [2, 4, 4]
    best = load_checkpoint(run / "best.pt")
    assert (best["step"], best["metric"], best["value"]) == (4, "segm/AP", 30.0)
    at_step4 = load_checkpoint(run / "last_step4.pt")["model"]
    assert all(torch.equal(best["model"][k], at_step4[k]) for k in at_step4)  # the weights evaluated at step 4
    assert all(torch.equal(calls[1][k], at_step4[k]) for k in at_step4)
    saved = read_metrics_json(run / "metrics.json")
    assert saved.segm["AP"] == 30.0 and saved.checkpoint == {"file": "best.pt", "step": 4, "metric": "segm/AP",
                                                             "value": 30.0}
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("eval/segm/AP")] == [(2, 10.0), (4, 30.0), (6, 20.0)]
    assert {e.step for e in acc.Images(acc.Tags()["images"][0])} == {4}  # the overlays are best.pt's
    assert postfixes[-1]["segm/AP"] == "20" and postfixes[-1]["best"] == "30@4"
    assert (run / "loss_curve.png").is_file()  # the curve skips the evaluation records


def test_resume_keeps_the_best_so_far(tmp_path, data, scripted_ap):
    script, _ = scripted_ap
    run = tmp_path / "run"
    script += [10.0, 30.0]
    train_and_evaluate(run_cfg(data, max_iter=4), run, progress=False, num_overlays=0)
    script += [20.0, 30.0]  # step 6 after the resume (worse), then the final evaluation of best.pt (step 4)
    result, metrics = train_and_evaluate(run_cfg(data), run, progress=False, num_overlays=0, resume=True)
    assert result.best.step == 4 and result.best.value == 30.0
    assert load_checkpoint(run / "best.pt")["step"] == 4
    assert read_metrics_json(run / "metrics.json").checkpoint["step"] == 4


def test_best_metric_can_be_joint_ap(tmp_path, data, scripted_ap):
    script, _ = scripted_ap
    script += [10.0, 8.0, 40.0]  # joint AP = segm AP / 2 in fake_result
    result, _ = train_and_evaluate(run_cfg(data, best_metric="joint/AP"), tmp_path / "run", progress=False,
                                   num_overlays=0)
    assert (result.best.step, result.best.metric, result.best.value) == (6, "joint/AP", 20.0)


@pytest.mark.parametrize("name", ["attribute_accuracy/colour", "segm/AP99", "attribute_f1/color/micro"])
def test_an_unknown_best_metric_names_the_field_before_the_run_folder(tmp_path, data, name):
    with pytest.raises(ConfigError, match=r"solver.best_metric") as err:
        train_and_evaluate(run_cfg(data, best_metric=name), tmp_path / "run", progress=False)
    assert "'attribute_accuracy/color'" in str(err.value) and "'joint/AP'" in str(err.value)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"solver.best_metric must be '<group>/<name>'"):
        SolverConfig(best_metric="segm")


def test_eval_period_without_validation_data_is_a_config_error(tmp_path, data):
    import dataclasses

    cfg = run_cfg(data)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val=""))
    with pytest.raises(ConfigError, match=r"solver.eval_period 2 evaluates on data.val, which is empty"):
        train_and_evaluate(cfg, tmp_path / "run", progress=False)


def test_real_evaluations_and_the_cli_take_best_or_last(tmp_path, data, capsys):
    run = tmp_path / "run"
    result, metrics = train_and_evaluate(run_cfg(data, max_iter=3), run, progress=False, num_overlays=0)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval" in r] == [2, 3]  # each period and the last step
    assert result.best is not None and result.best.step in (2, 3)
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--checkpoint", "best", "--json"]) == 0
    out = capsys.readouterr()
    assert f"evaluating best.pt (step {result.best.step}, segm/AP" in out.err
    assert json.loads(out.out)["checkpoint"]["file"] == "best.pt"
    assert json.loads(out.out)["segm"] == metrics.segm  # what the pipeline wrote for best.pt
    image = str(next(data[1].parent.glob("**/*.png")))
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "o"), image]) == 0
    assert "predicting with model_final.pt (step 3)" in capsys.readouterr().err
    assert main(["predict", "--run", str(run), "--checkpoint", "best", "--out", str(tmp_path / "o"), image]) == 0
    assert f"predicting with best.pt (step {result.best.step}" in capsys.readouterr().err


def test_an_undefined_value_never_becomes_best():
    from workbench.engine.best import Best, improved

    undefined = fake_result(5.0)
    assert improved(None, "attribute_accuracy/color", undefined, 2) is None  # no true positive: no accuracy
    assert improved(None, "segm/AP", undefined, 2) == Best("segm/AP", 5.0, 2)
    assert improved(Best("segm/AP", 5.0, 2), "segm/AP", undefined, 4) is None  # a tie keeps the earlier step


def test_eval_best_of_a_run_without_periodic_evaluation_exits_1(tmp_path, data, capsys):
    run = tmp_path / "run"
    train_and_evaluate(run_cfg(data, max_iter=1, eval_period=0), run, progress=False, num_overlays=0)
    assert read_metrics_json(run / "metrics.json").checkpoint == {"file": "model_final.pt", "step": 1}
    capsys.readouterr()
    assert main(["eval", "--run", str(run), "--checkpoint", "best"]) == 1
    err = capsys.readouterr().err
    assert "no best checkpoint" in err and "solver.eval_period" in err
    assert main(["eval", "--run", str(run), "--checkpoint", "last", "--json"]) == 0
    assert "evaluating model_final.pt (step 1)" in capsys.readouterr().err
