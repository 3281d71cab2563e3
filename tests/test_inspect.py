"""The inspector's logic (inspect/queries.py, components.py, tables.py, figures.py) and its widget, driven from
Python: set widget values, check the model state and the rendered outputs change as they should."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.config import EvalConfig
from workbench.engine.scoring import ranking_scores, select_instances
from workbench.harness.runners import DEFAULT_ATTRIBUTES, default_config
from workbench.harness.synthetic import planted_problem, synthetic_batch
from workbench.inspect.components import criterion_losses, matcher_cost_terms, seed_bug_table, seed_bugs
from workbench.inspect.figures import cost_matrix_figure, kept_instances_image, query_figure, to_png
from workbench.inspect.queries import (
    NO_OBJECT,
    attention_masks,
    distributions,
    duplicate_flags,
    inspect_item,
    layer_masks,
    query_prediction,
    query_table,
)
from workbench.inspect.tables import instances_table, labelme_shapes_table
from workbench.model.meta_arch import build_matcher

PNG = b"\x89PNG\r\n\x1a\n"
K = {"color": 3, "size": 3}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return wb.build_model(wb.ModelConfig.tiny(num_classes=3, attributes=DEFAULT_ATTRIBUTES)).eval()


@pytest.fixture(scope="module")
def items():
    return synthetic_batch(3, K, batch=3, size=64, seed=1)


@pytest.fixture(scope="module")
def inspection(model, items):
    return inspect_item(model, items[0])


# ---- plain functions ------------------------------------------------------------------------------------------
def test_inspection_shapes_and_probabilities(inspection, model):
    cfg = model.cfg
    q = inspection
    assert q.class_probs.shape == (cfg.num_queries, cfg.num_classes + 1)
    np.testing.assert_allclose(q.class_probs.sum(1), 1, atol=1e-5)
    for a in cfg.attributes:
        assert q.attribute_probs[a.name].shape == (cfg.num_queries, a.num_values + 1)
        np.testing.assert_allclose(q.attribute_probs[a.name].sum(1), 1, atol=1e-5)
    assert q.stage_mask_logits.shape == (cfg.dec_layers + 1, cfg.num_queries, 64, 64)
    assert layer_masks(q, 3).shape == (cfg.dec_layers + 1, 64, 64)
    allowed = attention_masks(q, 3)
    assert len(allowed) == cfg.dec_layers + 1 and all(a is not None and a.dtype == bool for a in allowed)


def test_final_masks_and_scores_match_the_models_predictions(model, items, inspection):
    with torch.no_grad():
        pred = model([items[0]])[0]
    for i, query in enumerate(pred["query_index"].tolist()):
        np.testing.assert_array_equal(inspection.masks[query], pred["masks"][i].numpy())
        assert inspection.mask_scores[query] == pytest.approx(float(pred["mask_scores"][i]), abs=1e-5)
        label = int(pred["labels"][i])
        assert inspection.class_probs[query, label] == pytest.approx(float(pred["class_scores"][i]), abs=1e-5)


def test_attribute_probabilities_come_from_each_image(model, items):
    a, b = inspect_item(model, items[0]), inspect_item(model, items[1])
    for name in a.attribute_probs:
        assert not np.allclose(a.attribute_probs[name], b.attribute_probs[name])


def test_matching_assigns_every_target_once_and_iou_is_measured(inspection, items):
    t = len(items[0]["instances"]["labels"])
    matched = inspection.matched_gt
    assert sorted(matched[matched >= 0].tolist()) == list(range(t))
    iou = inspection.matched_iou
    for q in np.flatnonzero(matched >= 0):
        pm, gm = inspection.masks[q], inspection.gt["masks"][matched[q]]
        expected = (pm & gm).sum() / max((pm | gm).sum(), 1)
        assert iou[q] == pytest.approx(expected, abs=1e-6)
    assert np.isnan(iou[matched < 0]).all()


def test_no_instances_means_no_matching(model, items):
    item = {"image": items[0]["image"]}
    q = inspect_item(model, item)
    assert q.gt is None and q.matched_gt is None
    table = query_table(q)
    assert (table["matched_gt"] == -1).all() and table["iou"].isna().all()


def test_inspect_restores_training_mode(model, items):
    model.train()
    try:
        inspect_item(model, items[0])
        assert model.training
    finally:
        model.eval()


def test_query_table_columns_ranking_and_kept_set(inspection):
    q = inspection
    table = query_table(q, scoring="mean", score_threshold=0.0, duplicate_iou=0.8)
    assert list(table["rank"]) == list(range(1, q.num_queries + 1))
    assert (np.diff(table["combined"].to_numpy()) <= 1e-12).all()
    by_query = table.sort_index()
    np.testing.assert_allclose(by_query["p_no_object"], q.class_probs[:, -1])
    np.testing.assert_allclose(by_query["p_color_no_object"], q.attribute_probs["color"][:, -1])
    np.testing.assert_allclose(by_query["p_class"], q.class_probs[:, :-1].max(1))
    assert set(by_query["color"]) <= {"red", "green", "blue"}
    pred = query_prediction(q)
    np.testing.assert_allclose(by_query["combined"], ranking_scores(pred, "mean", ["color", "size"]))
    np.testing.assert_allclose(by_query["score"], by_query["p_class"] * by_query["mask_score"])
    kept = select_instances(pred, EvalConfig(scoring="mean", dedupe_iou=0.8, max_dets=q.num_queries),
                            ["color", "size"]).index
    assert sorted(table.index[table["kept"]]) == sorted(kept.tolist())


def test_threshold_and_dedupe_shrink_the_kept_set(inspection):
    everything = query_table(inspection, score_threshold=0.0, duplicate_iou=None)
    assert everything["kept"].all() and not everything["duplicate"].any()
    assert not query_table(inspection, score_threshold=1.0)["kept"].any()
    loose = query_table(inspection, score_threshold=0.0, duplicate_iou=0.05)
    assert loose["kept"].sum() < len(loose)  # untrained masks overlap: low IoU threshold suppresses some
    assert (loose.loc[loose["duplicate"], "overlap"] >= 0.05).all()


def test_duplicate_flags_known_answer():
    iou = np.array([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.2, 1.0]])
    scores = np.array([0.5, 0.9, 0.1])  # ranking: 1, 0, 2
    dup_of, overlap = duplicate_flags(iou, scores, 0.5)
    assert dup_of.tolist() == [1, -1, -1]
    np.testing.assert_allclose(overlap, [0.9, 0.0, 0.2])


def test_distributions_include_no_object(inspection):
    d = distributions(inspection, 0)
    assert list(d) == ["class", "color", "size"]
    assert d["class"].index[-1] == NO_OBJECT and d["color"].index.tolist() == ["red", "green", "blue", NO_OBJECT]
    assert d["size"].sum() == pytest.approx(1.0)


def test_wrong_names_are_rejected(model, items):
    with pytest.raises(ValueError, match="num_classes"):
        inspect_item(model, items[0], categories=["only one"])
    with pytest.raises(ValueError, match="color"):
        inspect_item(model, items[0], attribute_values={"color": ["red"], "size": ["s", "m", "l"]})


def test_figures(inspection):
    q = inspection
    table = query_table(q)
    fig = query_figure(q, 2, table.loc[2])
    assert len(fig.axes) == 1 + 3 + 2 * q.num_stages  # overlay, 3 distributions, masks + attention per stage
    assert to_png(fig).startswith(PNG)
    none_kept = kept_instances_image(q, query_table(q, score_threshold=1.0))
    all_kept = kept_instances_image(q, query_table(q, score_threshold=0.0, duplicate_iou=None))
    assert none_kept.shape == all_kept.shape and none_kept.shape[0] >= 256
    assert not np.array_equal(none_kept, all_kept)
    cost = np.arange(6.0).reshape(3, 2)
    fig = cost_matrix_figure({"total": cost}, {"total": ([0, 2], [1, 0])})
    assert len(fig.axes[0].collections) == 1  # the ringed assignment


# ---- notebook 02 helpers ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ignore", [False, True])
def test_matcher_cost_terms_add_up_to_the_matchers_cost(ignore):
    cfg = default_config()
    p = planted_problem(num_queries=cfg.num_queries, num_classes=cfg.num_classes, attributes=K)
    if ignore:  # the matcher's mask costs skip ignored points: so do the terms shown
        p.targets[0]["ignore"] = torch.zeros(p.targets[0]["masks"].shape[-2:], dtype=torch.bool)
        p.targets[0]["ignore"][:, :12] = True
    terms = matcher_cost_terms(build_matcher(cfg), p.outputs, p.targets)
    assert set(terms) == {"class", "attr color", "attr size", "mask (BCE)", "dice", "total"}
    parts = sum(v for k, v in terms.items() if k != "total")
    np.testing.assert_allclose(parts, terms["total"], atol=1e-5)


def test_criterion_losses_confident_below_uncertain():
    confident, uncertain = criterion_losses(default_config())
    assert set(confident) >= {"loss_ce", "loss_attr_color", "loss_attr_size", "loss_mask", "loss_dice"}
    assert all(confident[k] < uncertain[k] for k in confident)


def test_seed_bugs_show_the_difference(model):
    bugs = seed_bugs(default_config(), model)
    table = seed_bug_table(bugs)
    assert len(table) == 4
    training, k_head, matcher, query_feat = bugs
    assert "RuntimeError" in training.evidence["seed_error"]
    assert all(shape == () for shape in training.evidence["loss_shapes"].values())
    assert "K+1" in k_head.evidence["message"]
    assert matcher.evidence["assignment"]["attribute cost on"] == [0, 1]
    assert matcher.evidence["assignment"]["attribute cost off (seed)"] == [1, 0]
    assert all(v > 0 for v in query_feat.evidence["our_diff"].values())
    assert all(v.dim() == 2 for v in query_feat.evidence["seed_logits"].values())  # no batch dim: same for all


# ---- tables -----------------------------------------------------------------------------------------------------
def test_labelme_shapes_table(tmp_path):
    doc = {"shapes": [{"label": "circle red", "shape_type": "circle", "points": [[1, 1], [3, 3]],
                       "flags": {"small": True, "large": False}, "description": "color=red"}]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(doc))
    table = labelme_shapes_table(path)
    assert table.loc[0, "flags"] == "small" and table.loc[0, "description"] == "color=red"
    assert table.loc[0, "points"] == 2


def test_instances_table_marks_unlabeled(items):
    item = {"instances": {**items[0]["instances"], "attributes": {
        "color": torch.tensor([-1, 0, 2]), "size": torch.tensor([1, 1, 1])}}}
    table = instances_table(item, ["a", "b", "c"], {"color": ["red", "green", "blue"], "size": ["s", "m", "l"]})
    assert table["color"].tolist() == ["unlabeled", "red", "blue"]
    assert (table["area"] > 0).all()


# ---- the widget -------------------------------------------------------------------------------------------------
widgets = pytest.importorskip("ipywidgets", reason="notebook extra not installed: pip install -e .[notebooks]")


@pytest.fixture
def inspector(model, items):
    from workbench.inspect.widgets import QueryInspector

    return QueryInspector(model, items, score_threshold=0.0, duplicate_iou=0.8)


def test_widget_starts_rendered(inspector):
    assert bytes(inspector.query_view.value).startswith(PNG)
    assert bytes(inspector.kept_view.value).startswith(PNG)
    assert "wb-query-table" in inspector.table_view.value
    assert inspector.selected == int(inspector.table.index[0])  # the best-ranked query
    assert f"kept {len(inspector.kept)} of" in inspector.summary.value
    assert inspector.renders == 1


def test_selecting_a_query_redraws_its_view(inspector):
    before_fig, before_table = inspector.query_view.value, inspector.table_view.value
    other = int(inspector.table.index[-1])
    inspector.query.value = other
    assert inspector.selected == other
    assert inspector.query_view.value != before_fig
    assert inspector.table_view.value != before_table
    assert f'<tr class="wb-row-selected" style="background:#ffe08a;font-weight:bold"><td>q{other}</td>' \
        in inspector.table_view.value


def test_threshold_slider_updates_the_kept_set_live(inspector):
    assert inspector.kept  # threshold 0: something is kept to begin with
    kept_image, summary = inspector.kept_view.value, inspector.summary.value
    selected = inspector.selected
    inspector.threshold.value = 1.0
    assert inspector.kept == []
    assert "kept 0 of" in inspector.summary.value and inspector.summary.value != summary
    assert inspector.kept_view.value != kept_image
    assert inspector.selected == selected  # the selection survives a rule change
    assert "wb-row-kept" not in inspector.table_view.value


def test_duplicate_slider_flags_and_suppresses(inspector):
    inspector.threshold.value = 0.0
    inspector.duplicate_iou.value = 1.0
    strict = len(inspector.kept)
    inspector.duplicate_iou.value = 0.05
    assert inspector.table["duplicate"].sum() > 0
    assert len(inspector.kept) < strict
    assert "dup of q" in " ".join(label for label, _ in inspector.query.options)


def test_image_selector_switches_the_inspection(inspector, items):
    first = inspector.inspection
    fig = inspector.query_view.value
    inspector.image.value = 2
    assert inspector.inspection is not first
    np.testing.assert_array_equal(inspector.inspection.image, items[2]["image"].permute(1, 2, 0).numpy())
    assert inspector.query_view.value != fig
    inspector.image.value = 0
    assert inspector.inspection is first  # cached


def test_sorting_reorders_the_query_list(inspector):
    inspector.sort_by.value = "mask_area"
    inspector.ascending.value = True
    order = [q for _, q in inspector.query.options]
    areas = inspector.table.loc[order, "mask_area"].to_numpy()
    assert (np.diff(areas) >= 0).all()
    inspector.ascending.value = False
    descending = [q for _, q in inspector.query.options]
    assert (np.diff(inspector.table.loc[descending, "mask_area"].to_numpy()) <= 0).all()
    assert descending != order


def test_scoring_and_no_object_controls_change_the_table(inspector):
    combined = inspector.table.sort_index()["combined"].to_numpy()
    inspector.scoring.value = "main"
    np.testing.assert_allclose(inspector.table.sort_index()["combined"], inspector.table.sort_index()["score"])
    assert not np.allclose(inspector.table.sort_index()["combined"], combined)
    inspector.drop_no_object.value = True
    assert "no-object dropped" in inspector.summary.value


def test_widget_from_a_run_directory(tmp_path, model, items):
    from workbench.config import RunConfig
    from workbench.config_file import dump_yaml, to_dict
    from workbench.engine.checkpoint import save_checkpoint
    from workbench.inspect.widgets import QueryInspector

    cfg = RunConfig(model=model.cfg, eval=EvalConfig(scoring="product", score_threshold=0.2, dedupe_iou=0.6))
    dump_yaml(cfg, tmp_path / "config.yaml")
    save_checkpoint(tmp_path / "model_final.pt", {"model": model.state_dict(), "config": to_dict(cfg)})
    inspector = QueryInspector.from_run(tmp_path, dataset=items)
    assert inspector.scoring.value == "product"
    assert inspector.threshold.value == pytest.approx(0.2) and inspector.duplicate_iou.value == pytest.approx(0.6)
    assert inspector.model is not model
    np.testing.assert_allclose(inspector.inspection.class_probs, inspect_item(model, items[0]).class_probs, atol=1e-6)


def test_widget_needs_items(model):
    from workbench.inspect.widgets import QueryInspector

    with pytest.raises(ValueError, match="at least one item"):
        QueryInspector(model, [])


# ---- notebook helpers -------------------------------------------------------------------------------------------
def test_train_live_in_chunks_gives_the_same_weights_as_one_run(tmp_path, monkeypatch):
    import workbench.engine.trainer as trainer
    from workbench.engine.trainer import train
    from workbench.inspect.notebook import small_run_config, small_shapes_data, train_live

    train_json, val_json = small_shapes_data(tmp_path / "data", train_images=4, val_images=1, image_size=64)
    cfg = small_run_config(train_json, val_json, max_iter=2, batch_size=2)
    assert cfg.model.num_classes == 3 and cfg.model.attribute_names == ("color", "size")
    calls = []

    def recording_train(*args, **kwargs):
        calls.append((kwargs["resume"], kwargs["max_iter"]))
        return train(*args, **kwargs)

    monkeypatch.setattr(trainer, "train", recording_train)
    live = train_live(cfg, tmp_path / "live", chunks=2, progress=False)
    monkeypatch.undo()
    assert calls == [(False, 1), (True, 2)]  # each piece resumes the previous one
    once = train(cfg, tmp_path / "once", progress=False)
    assert live.steps == once.steps == 2
    for key, value in once.model.state_dict().items():
        torch.testing.assert_close(live.model.state_dict()[key], value, msg=key)
    records = [json.loads(line) for line in (tmp_path / "live" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # the first piece's record survives the resume


def test_train_live_continues_a_run_up_to_max_iter(tmp_path, monkeypatch):
    import workbench.engine.trainer as trainer
    from workbench.engine.trainer import train
    from workbench.inspect.notebook import small_run_config, small_shapes_data, train_live

    train_json, val_json = small_shapes_data(tmp_path / "data", train_images=4, val_images=1, image_size=64)
    cfg = small_run_config(train_json, val_json, max_iter=4, batch_size=2)
    train(cfg, tmp_path / "run", progress=False, max_iter=2)  # an earlier session stopped at step 2
    calls = []

    def recording_train(*args, **kwargs):
        calls.append((kwargs["resume"], kwargs["max_iter"]))
        return train(*args, **kwargs)

    monkeypatch.setattr(trainer, "train", recording_train)
    result = train_live(cfg, tmp_path / "run", chunks=2, progress=False, resume=True)
    assert calls == [(True, 3), (True, 4)] and result.steps == 4  # only the steps it lacked
    calls.clear()
    again = train_live(cfg, tmp_path / "run", chunks=5, progress=False, resume=True)  # already there: no step
    assert calls == [(True, 4)] and again.steps == 4
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key, value in result.model.state_dict().items():
        torch.testing.assert_close(again.model.state_dict()[key], value, msg=key)


# ---- interactive speed: what a click reuses, and that reusing it changes nothing (issue 27) ------------------------
def test_pairwise_mask_iou_equals_pycocotools_to_the_last_bit(inspection):
    from workbench.engine.scoring import encode_masks, mask_iou, pairwise_mask_iou

    rng = np.random.default_rng(0)
    masks = rng.random((12, 37, 53)) < rng.random((12, 1, 1))  # fragmented, some nearly empty
    masks[3] = False  # empty: IoU 0 with everything, itself included (as pycocotools)
    masks[4] = masks[5]
    for m in (masks, inspection.masks):
        rles = encode_masks(m)
        np.testing.assert_array_equal(pairwise_mask_iou(m), mask_iou(rles, rles))


def test_select_instances_with_precomputed_rles_and_iou_keeps_the_same(inspection):
    q = inspection
    pred = query_prediction(q)
    scores = ranking_scores(pred, "mean", ["color", "size"])
    suppressed = 0
    for threshold in (0.0, float(np.median(scores))):  # all queries, then a subset of them
        for iou in (0.05, 0.2, 0.5, 0.8):
            cfg = EvalConfig(scoring="mean", dedupe_iou=iou, score_threshold=threshold, max_dets=q.num_queries)
            plain = select_instances(pred, cfg, ["color", "size"])
            cached = select_instances(pred, cfg, ["color", "size"], rles=q.rles, pairwise_iou=q.pairwise_iou)
            np.testing.assert_array_equal(plain.index, cached.index)
            assert plain.rles == cached.rles and plain.removed == cached.removed
            suppressed += plain.removed["duplicate"]
    assert suppressed > 0  # the cases exercise duplicate suppression


def test_png_bytes_round_trip():
    from workbench.inspect.panels import png_bytes

    array = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_png_array(png_bytes(array)), array)


def _png_array(data) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


def _state(inspector) -> dict:
    return {"image": inspector.image.value, "selected": inspector.selected, "kept": inspector.kept,
            "options": list(inspector.query.options), "summary": inspector.summary.value,
            "table": inspector.table_view.value, "query_png": _png_array(inspector.query_view.value),
            "kept_png": _png_array(inspector.kept_view.value)}


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_clicks_and_rule_changes_end_in_the_state_of_opening_there_directly(model, items):
    """Cached forwards, panels and per-image post-processing must not change what is shown: after a sequence
    of image switches, clicks and rule changes, the widget equals a fresh one opened at the end state."""
    from workbench.inspect.widgets import QueryInspector

    inspector = QueryInspector(model, items, score_threshold=0.0, duplicate_iou=0.8)
    inspector.query.value = int(inspector.table.index[-1])
    inspector.image.value = 1
    inspector.query.value = int(inspector.table.index[2])
    inspector.threshold.value = 0.3
    inspector.scoring.value = "main"
    inspector.image.value = 2
    inspector.image.value = 1  # back: from the cache
    inspector.duplicate_iou.value = 0.3
    chosen = int(inspector.table.index[1])
    inspector.query.value = chosen
    inspector.threshold.value = 0.0
    assert inspector.forwards == 3  # one model forward per image, reused by every later click

    fresh = QueryInspector(model, items, score_threshold=0.0, duplicate_iou=0.3, scoring="main")
    fresh.image.value = 1
    fresh.query.value = chosen
    _assert_same_state(_state(inspector), _state(fresh))


def test_query_view_is_a_fresh_render_of_its_state_and_rule_changes_do_not_redraw_it(model, items):
    from workbench.inspect.panels import query_panel
    from workbench.inspect.widgets import QueryInspector

    inspector = QueryInspector(model, items, score_threshold=0.0, duplicate_iou=0.8)
    query = int(inspector.table.index[3])
    inspector.query.value = query
    renders = inspector.renders
    fresh = query_panel(inspect_item(model, items[0]), query, inspector.table.loc[query])
    np.testing.assert_array_equal(_png_array(inspector.query_view.value), fresh)
    for value in (0.2, 0.5, 0.0):  # threshold changes: the kept set and table change, the query's view does not
        inspector.threshold.value = value
    inspector.drop_no_object.value = True
    assert inspector.renders == renders
    np.testing.assert_array_equal(_png_array(inspector.query_view.value), fresh)
    inspector.scoring.value = "main"  # the caption's ranking score changes: drawn again
    assert inspector.renders == renders + 1
    np.testing.assert_array_equal(_png_array(inspector.query_view.value),
                                  query_panel(inspector.inspection, query, inspector.table.loc[query]))


def test_query_panel_shows_the_queries_mask_distributions_and_stages(inspection):
    from workbench.inspect.panels import PanelLayout, colour_lut, fit, levels, query_panel

    q = inspection
    table = query_table(q)
    a, b = query_panel(q, 0, table.loc[0]), query_panel(q, 1, table.loc[1])
    layout = PanelLayout.for_inspection(q)
    assert a.shape == (*layout.size, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)
    # bars: in the class head's cell, the top-1 value orange and no-object grey
    from workbench.inspect.panels import GREY, ORANGE

    x, y = layout.origin(0, 1)
    cell = a[y:y + layout.cell, x:x + layout.cell].reshape(-1, 3)
    for colour in (ORANGE, GREY):
        assert (cell == colour).all(1).any(), colour
    # the final stage's cell is the magma map of that query's final mask probability
    x, y = layout.origin(1, q.num_stages - 1)
    h, w = layout.image_size
    expected = colour_lut("magma")[levels(fit(layer_masks(q, 0)[-1], layout))]
    assert expected.shape == (h, w, 3)
    np.testing.assert_array_equal(a[y:y + h, x:x + w], expected)
    # one query's stages resized alone equal the full stack at image size (to float rounding: the resize
    # kernel vectorises differently over 1 and Q channels)
    np.testing.assert_allclose(q.stage_logits(4), q.stage_mask_logits[:, 4], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(q.mask_logits, q.stage_mask_logits[-1])


def test_inspection_cache_is_a_small_lru(model, items):
    from workbench.inspect.widgets import QueryInspector

    inspector = QueryInspector(model, items, score_threshold=0.0, cache_size=2)
    first = inspector.inspection
    inspector.image.value = 1
    inspector.image.value = 0  # still cached, and now the most recently shown
    assert inspector.inspection is first and inspector.forwards == 2
    inspector.image.value = 2  # evicts image 1, the least recently shown
    inspector.image.value = 0
    assert inspector.inspection is first and inspector.forwards == 3
    inspector.image.value = 1  # evicted: runs again, with the same result
    assert inspector.forwards == 4
    np.testing.assert_array_equal(inspector.inspection.masks, inspect_item(model, items[1]).masks)
