"""Ablation grids: expansion and validation, resumable runner, failure recording, tables and their exports."""
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from workbench.ablation import Grid, GridError, load_grid, run_grid, write_tables
from workbench.ablation.fingerprint import environment_fingerprint, ops_backend_used, short_fingerprint
from workbench.ablation.grid import check_path
from workbench.ablation.tables import aggregate, collect_runs, format_table, to_latex
from workbench.config_file import dump_yaml

BASE = {
    "model": {"preset": "tiny", "num_classes": 3, "attributes": {"color": ["r", "g", "b"], "size": ["s", "l"]}},
    "solver": {"batch_size": 2, "max_iter": 2},
    "data": {"train": "train.json", "val": "val.json"},
    "device": "cpu",
}


def grid(axes=None, seeds=2, base=None):
    axes = {"model.num_queries": [5, 10], "eval.scoring": ["main", "product", "mean"]} if axes is None else axes
    return Grid.from_dict({"base": base or BASE, "axes": axes, "seeds": seeds})


# ---- grid expansion ---------------------------------------------------------------------------------------------
def test_cells_are_the_product_of_axes_times_seeds():
    g = grid(seeds=3)
    cells = g.cells()
    assert len(cells) == 2 * 3 * 3
    assert [(c.config.model.num_queries, c.config.eval.scoring, c.seed) for c in cells[:4]] == [
        (5, "main", 0), (5, "main", 1), (5, "main", 2), (5, "product", 0)]
    assert {c.config.seed for c in cells} == {0, 1, 2}
    assert cells[0].name == "num_queries=5__scoring=main/seed0"
    assert len({c.name for c in cells}) == len(cells)
    # untouched fields keep the base's values (preset + overrides)
    assert all(c.config.model.hidden_dim == 32 and c.config.solver.max_iter == 2 for c in cells)


def test_nested_and_bool_axes_reach_the_config():
    g = grid({"model.loss.boundary_weight": [0, 1.5], "solver.scale_lr": [True, False],
              "model.attribute_cost_weight": [0, 1]}, seeds=1)
    cells = g.cells()
    assert len(cells) == 8
    c = next(c for c in cells if c.values == {"model.loss.boundary_weight": 1.5, "solver.scale_lr": False,
                                              "model.attribute_cost_weight": 0})
    assert c.config.model.loss.boundary_weight == 1.5 and c.config.solver.scale_lr is False
    assert c.config.model.attribute_cost_weight == 0.0
    assert c.config.model.loss.num_points == 256  # the tiny preset's loss section survives the partial override
    assert c.key == "boundary_weight=1.5__scale_lr=false__attribute_cost_weight=0"


def test_seeds_default_to_three_and_accept_a_list():
    assert Grid.from_dict({"base": BASE, "axes": {}}).seeds == (0, 1, 2)
    assert grid(seeds=[7, 3]).seeds == (7, 3)
    assert [c.key for c in grid(axes={}, seeds=1).cells()] == ["base"]
    for bad in (0, [1, 1], True, "three"):
        with pytest.raises(GridError, match="seeds"):
            grid(seeds=bad)


@pytest.mark.parametrize("path,match", [
    ("model.num_querys", "unknown config field 'model.num_querys'"),
    ("model.loss.boundary_wieght", "'model.loss.boundary_wieght'"),
    ("solvr.base_lr", "unknown config field 'solvr'"),
    ("solver.base_lr.x", "solver.base_lr is a value"),
    ("model.loss", "whole section"),
    ("seed", "seeds"),
])
def test_unknown_or_wrong_paths_are_errors_naming_the_path(path, match):
    with pytest.raises(GridError, match=re.escape(match)):
        check_path(path)
    with pytest.raises(GridError, match=re.escape(path)):
        grid({path: [1, 2]})


def test_bad_values_fail_before_anything_runs_naming_cell_and_key():
    with pytest.raises(GridError, match=r"cell scoring=best \(seed 0\): eval: EvalConfig\.scoring"):
        grid({"eval.scoring": ["main", "best"]}).cells()
    with pytest.raises(GridError, match=r"model\.num_queries: expected int"):
        grid({"model.num_queries": [10, "many"]}).cells()
    with pytest.raises(GridError, match="non-empty list"):
        grid({"model.num_queries": []})
    with pytest.raises(GridError, match="twice"):
        grid({"model.num_queries": [10, 10]})
    with pytest.raises(GridError, match="unknown key"):
        Grid.from_dict({"base": BASE, "axis": {}})
    with pytest.raises(GridError, match="synthetic: train_images"):
        Grid.from_dict({"base": BASE, "synthetic": {"train_images": "forty"}})
    with pytest.raises(GridError, match="unknown key.*synthetic.images"):
        Grid.from_dict({"base": BASE, "synthetic": {"images": 40}})
    with pytest.raises(GridError, match="data.val is empty"):
        Grid.from_dict({"base": {**BASE, "data": {"train": "t.json"}}, "axes": {}}).cells()


def test_base_may_be_a_config_file_next_to_the_grid(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "small.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({"base": "configs/small.yaml",
                                                         "axes": {"model.num_queries": [3, 4]}, "seeds": 1}))
    g = load_grid(tmp_path / "grid.yaml")
    assert [c.config.model.num_queries for c in g.cells()] == [3, 4]
    assert Grid.from_dict(g.to_dict()).cells()[1].config == g.cells()[1].config  # grid.yaml round trip
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump({"base": "nope.yaml"}))
    with pytest.raises(GridError, match="nope.yaml not found"):
        load_grid(tmp_path / "missing.yaml")


def test_eval_only_differences_share_a_train_key():
    cells = grid(seeds=1).cells()
    by = {(c.config.model.num_queries, c.config.eval.scoring): c.train_key for c in cells}
    assert by[5, "main"] == by[5, "product"] == by[5, "mean"]
    assert by[5, "main"] != by[10, "main"]
    assert grid(seeds=2).cells()[0].train_key != grid(seeds=2).cells()[1].train_key  # seeds differ


# ---- runner: resume, failures, stale folders -------------------------------------------------------------------
def fake_metrics(ap, color=0.5, size=None):
    return {"segm": {"AP": ap, "AP50": ap + 10}, "joint": {"AP": ap / 2},
            "attributes": {"color": {"accuracy": color}, "size": {"accuracy": size}}}


class FakeCell:
    """Stands in for train + evaluate: writes config.yaml, train.json and metrics.json; fails where told."""

    def __init__(self, fail=(), ap=lambda cell: 10.0 * cell.seed):
        self.calls, self.fail, self.ap = [], set(fail), ap

    def __call__(self, cell, run_dir):
        self.calls.append(cell.name)
        dump_yaml(cell.config, run_dir / "config.yaml")
        if cell.name in self.fail:
            raise RuntimeError(f"boom in {cell.name}")
        (run_dir / "train.json").write_text(json.dumps({"seconds": 1.0 + cell.seed}))
        (run_dir / "metrics.json").write_text(json.dumps(fake_metrics(self.ap(cell))))


def test_resume_skips_finished_cells(tmp_path):
    g = grid(seeds=2)
    first = FakeCell()
    outcomes = run_grid(g, tmp_path, progress=False, cell_fn=first)
    assert [o.status for o in outcomes] == ["done"] * 12 and len(first.calls) == 12
    again = FakeCell()
    assert [o.status for o in run_grid(g, tmp_path, progress=False, cell_fn=again)] == ["skipped"] * 12
    assert again.calls == []
    (tmp_path / "num_queries=10__scoring=mean" / "seed1" / "metrics.json").unlink()
    third = FakeCell()
    outcomes = run_grid(g, tmp_path, progress=False, cell_fn=third)
    assert third.calls == ["num_queries=10__scoring=mean/seed1"]
    assert [o.status for o in outcomes].count("done") == 1
    status = json.loads((tmp_path / "num_queries=10__scoring=mean" / "seed1" / "status.json").read_text())
    assert status["status"] == "done" and status["fingerprint"]["torch"]
    assert load_grid(tmp_path / "grid.yaml").cells()[0].config == g.cells()[0].config


def test_a_failing_cell_is_recorded_and_the_rest_continue(tmp_path):
    g = grid(seeds=2)
    bad = "num_queries=5__scoring=product/seed1"
    fn = FakeCell(fail={bad})
    outcomes = run_grid(g, tmp_path, progress=False, cell_fn=fn)
    assert len(fn.calls) == 12  # every cell was tried
    failed = [o for o in outcomes if o.status == "failed"]
    assert [o.cell.name for o in failed] == [bad] and "boom" in failed[0].error
    record = json.loads((tmp_path / bad / "failed.json").read_text())
    assert record["type"] == "RuntimeError" and "boom in" in record["error"] and "Traceback" in record["traceback"]
    assert json.loads((tmp_path / bad / "status.json").read_text())["status"] == "failed"
    runs = collect_runs(g, tmp_path)
    assert runs.set_index("cell").loc["num_queries=5__scoring=product"].set_index("seed").loc[1, "status"] == "failed"
    # rerun: only the failed cell runs again; success removes failed.json
    fixed = FakeCell()
    run_grid(g, tmp_path, progress=False, cell_fn=fixed)
    assert fixed.calls == [bad] and not (tmp_path / bad / "failed.json").exists()


def test_a_cell_that_writes_no_metrics_is_a_failure(tmp_path):
    outcomes = run_grid(grid({}, seeds=1), tmp_path, progress=False, cell_fn=lambda cell, run_dir: None)
    assert outcomes[0].status == "failed" and "metrics.json" in outcomes[0].error


def test_edited_grid_refuses_to_mix_with_old_results(tmp_path):
    run_grid(grid(seeds=1), tmp_path, progress=False, cell_fn=FakeCell())
    edited = grid(seeds=1, base={**BASE, "solver": {"batch_size": 2, "max_iter": 3}})
    fn = FakeCell()
    with pytest.raises(GridError, match=r"num_queries=5__scoring=main/seed0 \(differs at solver\.max_iter\)") as e:
        run_grid(edited, tmp_path, progress=False, cell_fn=fn)
    assert fn.calls == []
    assert e.value.exit_code == 1  # run state, not usage: the CLI exits 1


# ---- tables -----------------------------------------------------------------------------------------------------
def hand_made(tmp_path):
    """2 cells x 3 seeds with chosen metrics; one seed of the second cell failed."""
    g = grid({"model.loss.boundary_weight": [0, 1]}, seeds=3)
    aps = {("boundary_weight=0", 0): 10.0, ("boundary_weight=0", 1): 20.0, ("boundary_weight=0", 2): 30.0,
           ("boundary_weight=1", 0): 40.0, ("boundary_weight=1", 1): 44.0}
    fn = FakeCell(fail={"boundary_weight=1/seed2"}, ap=lambda cell: aps[cell.key, cell.seed])
    run_grid(g, tmp_path, progress=False, cell_fn=fn)
    return g


def test_aggregation_is_exact_mean_and_sample_std(tmp_path):
    g = hand_made(tmp_path)
    runs = collect_runs(g, tmp_path)
    assert list(runs["status"]) == ["done"] * 5 + ["failed"]
    table = aggregate(runs, ["boundary_weight"]).set_index("boundary_weight")
    assert list(table["seeds"]) == [3, 2] and list(table["failed"]) == [0, 1]
    assert table.loc[0, "AP mean"] == pytest.approx(20.0) and table.loc[0, "AP std"] == pytest.approx(10.0)
    assert table.loc[1, "AP mean"] == pytest.approx(42.0) and table.loc[1, "AP std"] == pytest.approx(8 ** 0.5)
    assert table.loc[0, "AP50 mean"] == pytest.approx(30.0) and table.loc[0, "joint AP mean"] == pytest.approx(10.0)
    assert table.loc[0, "color acc mean"] == pytest.approx(50.0) and table.loc[0, "color acc std"] == 0.0
    assert pd.isna(table.loc[0, "size acc mean"])  # undefined accuracy stays undefined, never 0
    assert table.loc[0, "train time (s) mean"] == pytest.approx(2.0)  # 1 + seed over seeds 0, 1, 2
    shown = format_table(table.reset_index(), ["boundary_weight"], ["AP", "size acc"])
    assert list(shown["AP"]) == ["20.0 ± 10.0", "42.0 ± 2.8"]
    assert list(shown["seeds"]) == ["3", "2 (1 failed)"] and list(shown["size acc"]) == ["–", "–"]
    assert list(table["size acc n"]) == [0, 0] and list(table["AP n"]) == [3, 2]


def test_a_metric_defined_for_fewer_seeds_says_so(tmp_path):
    g = grid({"model.num_queries": [5]}, seeds=3)

    class SomeWithoutTP(FakeCell):  # seed 2 had no true positive: its accuracies are undefined (None)
        def __call__(self, cell, run_dir):
            super().__call__(cell, run_dir)
            (run_dir / "metrics.json").write_text(json.dumps(fake_metrics(5.0, color=None if cell.seed == 2 else 0.25 * (1 + cell.seed))))

    run_grid(g, tmp_path, progress=False, cell_fn=SomeWithoutTP())
    table = aggregate(collect_runs(g, tmp_path), ["num_queries"])
    assert table.loc[0, "color acc n"] == 2 and table.loc[0, "color acc mean"] == pytest.approx(37.5)
    shown = format_table(table, ["num_queries"], ["AP", "color acc"])
    assert shown.loc[0, "color acc"] == "37.5 ± 17.7 (n=2)" and shown.loc[0, "AP"] == "5.0 ± 0.0"


def test_exports_parse_back(tmp_path):
    g = hand_made(tmp_path)
    paths = write_tables(g, tmp_path)
    table = aggregate(collect_runs(g, tmp_path), ["boundary_weight"])
    back = pd.read_csv(paths["csv"])
    assert list(back.columns) == list(table.columns)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    runs_back = pd.read_csv(paths["runs_csv"])
    assert len(runs_back) == 6 and runs_back["error"].notna().sum() == 1

    md = paths["markdown"].read_text().splitlines()
    rows = [line for line in md if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[:3] == ["boundary_weight", "seeds", "AP"] and "train time (s)" in header
    assert len(rows) == 2 + 2 and all(r.count("|") == len(header) + 1 for r in rows)
    assert "20.0 ± 10.0" in rows[2] and md[0].startswith("<!-- workbench ablate; environment")
    assert '"ops_backend_used"' in md[0] and '"git_commit"' in md[0]

    meta = json.loads(paths["metadata"].read_text())
    assert meta["consistent_environment"] and meta["runs"] == {"done": 5, "failed": 1, "missing": 0}
    fp = meta["fingerprints"][0]
    assert {"torch", "cuda", "ops_backend", "git_commit", "device"} <= set(fp)
    assert short_fingerprint(fp) in meta["caption"]
    assert paths["plot_boundary_weight"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_latex(paths["latex"].read_text(), ncols=len(header), nrows=2, tmp_path=tmp_path)


def check_latex(tex, ncols, nrows, tmp_path):
    if shutil.which("pdflatex"):
        doc = tmp_path / "doc.tex"
        doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex + "\\end{document}\n")
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]
        return
    lines = [line for line in tex.splitlines() if not line.startswith("%")]
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", tex).group(1)
    assert len(spec) == ncols
    order = [lines.index(r) for r in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert order == sorted(order) and all(tex.count(r) == 1 for r in (r"\toprule", r"\midrule", r"\bottomrule"))
    body = lines[order[1] + 1 : order[2]]
    assert len(body) == nrows
    for row in [lines[order[0] + 1], *body]:
        assert row.endswith(r"\\") and len(re.findall(r"(?<!\\)&", row)) == ncols - 1
    assert "boundary\\_weight" in tex and r"$\pm$" in tex and "±" not in "\n".join(lines)


def test_latex_escapes_special_characters():
    shown = pd.DataFrame({"a_b": ["x&y", "50%"], "AP": ["1.0 $\\pm$ 0.5", "–"]})
    tex = to_latex(shown, caption="c_1", metrics=["AP"])
    assert r"a\_b" in tex and r"x\&y" in tex and r"50\%" in tex and r"1.0 $\pm$ 0.5" in tex
    assert r"\begin{tabular}{lr}" in tex and r"\caption{c\_1}" in tex
    assert "–" not in tex and tex.splitlines()[7] == r"50\% & -- \\"  # en dash as LaTeX's --


def test_backend_used_follows_the_device_and_the_build():
    import torch

    built = {"compiled": True, "backends": ["cpu", "reference"]}
    assert ops_backend_used(built, torch.device("cpu")) == "cpu"
    assert ops_backend_used(built, torch.device("cuda")) == "reference"  # built without CUDA kernels
    assert ops_backend_used({**built, "backends": ["cpu", "cuda", "reference"]}, torch.device("cuda")) == "cuda"
    assert ops_backend_used({"compiled": False, "backends": ["reference"]}, torch.device("cpu")) == "reference"


def test_fingerprint_names_versions_backend_commit_and_device():
    fp = environment_fingerprint("cpu")
    assert fp["device"] == "cpu" and fp["torch"] and "ops_backend" in fp
    assert fp["ops_backend_used"] in ("cpu", "reference")
    assert fp["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", fp["git_commit"])
    line = short_fingerprint(fp)
    assert "torch" in line and "CUDA" in line and "ops backend" in line and "device cpu" in line


# ---- the command ------------------------------------------------------------------------------------------------
def test_cli_dry_run_lists_cells_and_errors_name_the_path(tmp_path, capsys):
    from workbench.cli import main

    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": BASE, "axes": {"model.num_queries": [5, 10]}, "seeds": 3}))
    assert main(["ablate", str(path), "--out", str(tmp_path / "out"), "--dry-run", "--seeds", "2"]) == 0
    assert "4 cells (2 configurations x 2 seeds)" in capsys.readouterr().out
    path.write_text(yaml.safe_dump({"base": BASE, "axes": {"model.num_querys": [5]}}))
    capsys.readouterr()
    # a grid the user can fix: one message naming the field, exit 2 (config/usage), no traceback
    assert main(["ablate", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "model.num_querys" in err and "Traceback" not in err
    with pytest.raises(GridError, match="model.num_querys"):  # --debug: the traceback
        main(["ablate", str(path), "--out", str(tmp_path / "out"), "--dry-run", "--debug"])
    path.write_text(yaml.safe_dump({"base": BASE, "axes": {"model.num_queries": [5]}}))
    assert main(["ablate", str(path), "--out", str(tmp_path / "never_run"), "--tables-only"]) == 2
    assert "never_run is not a folder" in capsys.readouterr().err


def test_example_grid_file_is_valid():
    import pathlib

    g = load_grid(pathlib.Path(__file__).parents[1] / "data" / "ablation_grid.yaml")
    assert len(g.seeds) >= 3 and g.synthetic is not None
    assert any(a.path == "model.loss.boundary_weight" for a in g.axes)
    assert len(g.cells("/nonexistent")) == len(g.seeds) * 8


# ---- the real thing, small: train once, evaluate under two scorings ---------------------------------------------
def test_real_cells_train_once_per_model_and_evaluate_each_eval_setting(tmp_path):
    base = {"model": {"preset": "tiny", "num_queries": 6, "test_topk": 6, "dec_layers": 1,
                      "loss": {"num_points": 64, "boundary_weight": 1.0}},
            "solver": {"batch_size": 2, "max_iter": 2, "warmup_iters": 0, "checkpoint_period": 100, "log_period": 1},
            "augment": {"image_size": 64, "min_scale": 0.9, "max_scale": 1.1, "test_shortest_edge": 0},
            "device": "cpu"}
    g = Grid.from_dict({"base": base, "axes": {"eval.scoring": ["main", "product"]}, "seeds": 1,
                        "synthetic": {"train_images": 4, "val_images": 2, "image_size": 64}})
    outcomes = run_grid(g, tmp_path, progress=False)
    assert [o.status for o in outcomes] == ["done", "done"], [o.error for o in outcomes]
    main_dir, product_dir = (o.run_dir for o in outcomes)
    for d in (main_dir, product_dir):  # normal run directories
        assert {"config.yaml", "model_final.pt", "metrics.json", "train.json", "status.json"} <= {p.name for p in d.iterdir()}
    assert json.loads((product_dir / "train.json").read_text())["trained_in"] == "../../scoring=main/seed0"
    assert not (product_dir / "last.pt").exists()  # not trained again
    assert "loss_boundary" in (main_dir / "metrics.jsonl").read_text()
    assert json.loads((product_dir / "metrics.json").read_text())["config"]["scoring"] == "product"
    paths = write_tables(g, tmp_path)
    table = pd.read_csv(paths["csv"])
    assert list(table["scoring"]) == ["main", "product"] and list(table["seeds"]) == [1, 1]
    assert table["train time (s) mean"].nunique() == 1  # the one training, reported for both rows


def test_cli_records_real_failures_writes_tables_and_exits_nonzero(tmp_path, capsys):
    from workbench.cli import main

    path = tmp_path / "grid.yaml"  # the training file does not exist: every cell fails in the real trainer
    path.write_text(yaml.safe_dump({"base": {**BASE, "data": {"train": str(tmp_path / "missing.json"),
                                                              "val": str(tmp_path / "missing.json")}},
                                    "axes": {"model.num_queries": [5, 10]}, "seeds": 1}))
    out = tmp_path / "out"
    assert main(["ablate", str(path), "--out", str(out)]) == 1
    for key in ("num_queries=5", "num_queries=10"):
        assert "missing.json" in json.loads((out / key / "seed0" / "failed.json").read_text())["error"]
    assert "2 failed" in capsys.readouterr().out
    assert main(["ablate", str(path), "--out", str(out), "--tables-only"]) == 0
    table = pd.read_csv(out / "ablation.csv")
    assert list(table["failed"]) == [1, 1] and list(table["seeds"]) == [0, 0]


def test_stale_check_accepts_runs_whose_data_paths_were_stored_resolved(tmp_path, monkeypatch):
    """The trainer stores data paths resolved; a rerun with the same relative paths is not an edited grid,
    but a rerun pointing at other data is."""
    import workbench as wb
    from workbench.ablation.grid import Cell, GridError
    from workbench.ablation.runner import check_stale
    from workbench.config import DataConfig, RunConfig
    from workbench.config_file import dump_yaml
    from workbench.engine.trainer import absolute_data_paths

    monkeypatch.chdir(tmp_path)
    cfg = RunConfig(model=wb.ModelConfig.tiny(), data=DataConfig(train="d/train.json", val="d/val.json"))
    cell = Cell(key="base", values={}, seed=0, config=cfg)
    (tmp_path / "out" / cell.name).mkdir(parents=True)
    dump_yaml(absolute_data_paths(cfg), tmp_path / "out" / cell.name / "config.yaml")
    check_stale([cell], tmp_path / "out")  # same data: no error
    other = Cell(key="base", values={}, seed=0,
                 config=RunConfig(model=cfg.model, data=DataConfig(train="e/train.json", val="d/val.json")))
    with pytest.raises(GridError, match="data.train"):
        check_stale([other], tmp_path / "out")
