"""The inspector's panoptic and semantic views (inspect/segments.py, segment_panels.py, task_views.py): the same
numbers as the model's own panoptic / semantic inference, the votes adding up to the class score, and the tabs'
state and pictures as a user drives them (no timings)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import workbench as wb
from workbench.harness.runners import DEFAULT_ATTRIBUTES
from workbench.harness.synthetic import synthetic_batch
from workbench.inspect.queries import _sigmoid, inspect_item
from workbench.inspect.segment_panels import RED, YELLOW, panoptic_panel, segment_colour, semantic_panel
from workbench.inspect.segments import (
    class_votes,
    panoptic_result,
    pixel_mask_logits,
    pixel_votes,
    segment_table,
    semantic_labels,
    semantic_scores,
)

K = {"color": 3, "size": 3}
STUFF = (2,)


@pytest.fixture(scope="module")
def model():
    # seed 5 with no thresholds gives things and stuff on image 0 (checked in `pan` below)
    torch.manual_seed(5)
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=DEFAULT_ATTRIBUTES, task="panoptic", stuff_classes=STUFF,
                              object_mask_threshold=0.0, overlap_threshold=0.0)
    return wb.build_model(cfg).eval()


@pytest.fixture(scope="module")
def items():
    return synthetic_batch(3, K, batch=3, size=64, seed=1)


@pytest.fixture(scope="module")
def q(model, items):
    return inspect_item(model, items[0])


@pytest.fixture(scope="module")
def pan(q):
    out = panoptic_result(q, STUFF, 0.0, 0.0)
    kinds = {s["isthing"] for s in out["segments_info"]}
    assert kinds == {True, False}, "fixture should show things and stuff"
    return out


@pytest.fixture(scope="module")
def predicted(model, items):
    return model.predict([{"image": items[0]["image"]}], tasks=["panoptic", "semantic"])[0]


# ---- plain functions ------------------------------------------------------------------------------------------
def test_panoptic_result_is_the_models_panoptic_prediction(pan, predicted, q):
    np.testing.assert_array_equal(pan["panoptic_seg"], predicted["panoptic_seg"].numpy())
    assert pan["segments_info"] == predicted["segments_info"]
    assert panoptic_result(q, STUFF, 0.0, 0.0) is pan  # cached per setting: a redraw does not recompute it
    merged = panoptic_result(q, (0,), 0.0, 0.0)  # stuff merges its queries into one segment per class
    assert sum(s["category_id"] == 0 for s in merged["segments_info"]) <= 1


def test_segment_table_lists_things_stuff_queries_and_attributes(q, pan):
    table = segment_table(q, pan)
    assert list(table.index) == [s["id"] for s in pan["segments_info"]]
    for s in pan["segments_info"]:
        row = table.loc[s["id"]]
        assert row["category"] == q.categories[s["category_id"]]
        assert row["kind"] == ("thing" if s["category_id"] not in STUFF else "stuff")
        assert row["query"] == s["query_index"]
        assert row["score"] == pytest.approx(q.class_probs[s["query_index"], s["category_id"]], abs=1e-6)
        assert row["area"] == int((pan["panoptic_seg"] == s["id"]).sum()) > 0
        for name in q.attribute_names:
            probs = q.attribute_probs[name][s["query_index"]]
            best = int(probs[:-1].argmax())
            assert row[name] == (q.attribute_values[name][best] if probs[best] >= probs[-1] else "-")
            assert row[f"p_{name}"] == pytest.approx(probs[best], abs=1e-6)


def test_pixel_mask_logits_equal_the_resized_masks(q):
    full = q.mask_logits  # (Q, H, W) by resize_mask_logits
    for y, x in [(0, 0), (63, 63), (5, 40), (31, 32), (62, 1)]:
        np.testing.assert_allclose(pixel_mask_logits(q, y, x), full[:, y, x], atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        pixel_mask_logits(q, 64, 0)


def test_pixel_votes_add_up_to_the_semantic_score(q, predicted):
    sem = predicted["sem_seg"].numpy()
    np.testing.assert_allclose(semantic_scores(q), sem, atol=1e-6)
    probs = q.class_probs[:, :-1]
    for y, x in [(3, 4), (40, 20), (63, 0)]:
        votes = pixel_votes(q, y, x)
        c = int(sem[:, y, x].argmax())
        assert votes.attrs["category"] == c and votes.attrs["pixel"] == (y, x)
        assert votes["contribution"].sum() == pytest.approx(sem[c, y, x], abs=1e-5)
        assert votes.attrs["total"] == pytest.approx(sem[c, y, x], abs=1e-5)
        expected = probs[:, c] * _sigmoid(q.mask_logits[:, y, x].astype(np.float64))
        np.testing.assert_allclose(votes.sort_index()["contribution"], expected, atol=1e-5)
        assert list(votes["contribution"]) == sorted(votes["contribution"], reverse=True)
        assert votes["cumulative"].iloc[-1] == pytest.approx(1.0)
        other = (c + 1) % probs.shape[1]  # a chosen class, not the pixel's own
        assert pixel_votes(q, y, x, other)["contribution"].sum() == pytest.approx(sem[other, y, x], abs=1e-5)


def test_class_votes_add_up_over_the_classes_region(q):
    sem, labels = semantic_scores(q), semantic_labels(q)
    for c in range(sem.shape[0]):
        votes = class_votes(q, c)
        assert votes.attrs["area"] == int((labels == c).sum())
        assert votes["contribution"].sum() == pytest.approx(float(sem[c][labels == c].sum()), rel=1e-4, abs=1e-4)


# ---- pictures -------------------------------------------------------------------------------------------------
def test_panoptic_panel_tints_segments_and_spotlights_the_selected_one(q, pan):
    table = segment_table(q, pan)
    chosen = int(table.index[0])
    picture = panoptic_panel(q, pan, table, chosen, cell=64)  # 64 = the image size: one cell pixel per pixel
    from workbench.inspect.panels import PAD, TITLE_H

    left = picture[TITLE_H:TITLE_H + 64, PAD:PAD + 64].astype(float)
    right = picture[TITLE_H:TITLE_H + 64, 2 * PAD + 64:2 * PAD + 128].astype(float)
    ids, image = pan["panoptic_seg"], q.image.astype(float)
    for n, s in enumerate(pan["segments_info"]):  # tinted towards its segment's colour, outlined in it
        inside = ids == s["id"]
        tinted = 0.55 * image[inside] + 0.45 * np.array(segment_colour(n))
        error = np.abs(left[inside] - tinted).max(-1)
        outlined = np.all(left[inside] == segment_colour(n), axis=-1)
        assert np.all((error <= 1) | outlined) and (error <= 1).any()
    np.testing.assert_array_equal(left[ids == 0], image[ids == 0])  # void stays as it was
    outside = ids != chosen
    np.testing.assert_allclose(right[outside], (image[outside] * 0.3).astype(np.uint8), atol=1)
    assert (np.all(right == YELLOW, axis=-1) & (ids == chosen)).any()  # its outline
    other = panoptic_panel(q, pan, table, int(table.index[-1]), cell=64)
    assert not np.array_equal(other, picture)


def test_semantic_panel_marks_the_pixel_and_draws_the_top_votes(q):
    votes = pixel_votes(q, 10, 50)
    picture = semantic_panel(q, semantic_scores(q), semantic_labels(q), votes, (10, 50), top=3, cell=64)
    from workbench.inspect.panels import PAD, TITLE_H

    assert np.all(picture[TITLE_H + 10, PAD + 50] == RED)  # the cross's centre, at the pixel
    cells = [picture[TITLE_H:TITLE_H + 64, PAD + k * (64 + PAD):PAD + k * (64 + PAD) + 64] for k in range(5)]
    assert all(cell.std() > 0 for cell in cells)  # image, class score and three query votes
    # the top query's vote is never brighter than the sum it is part of (same colour scale)
    assert cells[2].astype(float).sum() <= cells[1].astype(float).sum()


# ---- the widget -----------------------------------------------------------------------------------------------
def _png(value: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(value)))


@pytest.fixture
def inspector(model, items):
    from workbench.inspect.widgets import QueryInspector

    return QueryInspector(model, items, score_threshold=0.0, tasks=("panoptic", "semantic"))


def test_a_panoptic_run_opens_on_its_segments(model, items):
    from workbench.inspect.widgets import QueryInspector

    inspector = QueryInspector(model, items)  # the model's task is panoptic: its tab, no semantic one
    assert inspector.tabs is not None and inspector.tabs.titles == ("panoptic",)
    assert inspector.semantic is None and inspector.panoptic.renders == 1
    expected = segment_table(inspector.inspection, panoptic_result(inspector.inspection, STUFF, 0.0, 0.0))
    assert inspector.panoptic.table.equals(expected)
    assert [v for _, v in inspector.panoptic.segment.options] == list(expected.index)
    html = inspector.panoptic.table_view.value
    assert html.count("<tr class=") == len(expected) and "stuff" in html and "thing" in html


def test_selecting_a_segment_highlights_it_and_selects_its_query(inspector):
    view = inspector.panoptic
    table = view.table
    drawn = []
    for sid in table.index:
        view.select_segment(int(sid))
        assert view.selected == sid
        assert inspector.query.value == table.loc[sid, "query"]  # the query panels now show that query
        selected_row = inspector.table_view.value.split('class="wb-row-selected"')[1].split("</tr>")[0]
        assert f"<td>q{table.loc[sid, 'query']}</td>" in selected_row
        assert 'class="wb-row-selected"' in view.table_view.value
        drawn.append(view.view.value)
    assert len(set(drawn)) == len(table)  # each selection draws its own picture
    last = int(table.index[0])
    inspector.query.value = int(table.loc[int(table.index[-1]), "query"])  # a segment's query chosen in the list
    assert view.selected == int(table.index[-1]) != last
    with pytest.raises(ValueError, match="no segment"):
        view.select_segment(999)


def test_panoptic_thresholds_recompute_without_a_forward(inspector):
    view = inspector.panoptic
    forwards, before = inspector.forwards, len(view.table)
    view.object_mask_threshold.value = 0.99
    assert len(view.table) < before and inspector.forwards == forwards
    assert view.table.equals(segment_table(inspector.inspection, panoptic_result(inspector.inspection, STUFF,
                                                                                 0.99, 0.0)))


def test_only_the_open_tab_is_drawn_and_clicks_run_no_forward(inspector, items):
    sem, pan = inspector.semantic, inspector.panoptic
    assert pan.renders == 1 and sem.renders == 0 and sem.stale  # panoptic open, semantic never drawn
    sem.select_pixel(7, 9)
    assert sem.renders == 0 and sem.votes is None  # hidden: remembered, not drawn
    inspector.tabs.selected_index = 1
    assert sem.renders == 1 and sem.votes.attrs["pixel"] == (7, 9)
    forwards, pan_renders = inspector.forwards, pan.renders
    sem.select_pixel(40, 3)
    sem.category.value = 1
    sem.scope.value = "class region"
    assert sem.renders == 4 and inspector.forwards == forwards and pan.renders == pan_renders
    inspector.image.value = 1  # a new image: the open tab redraws, the hidden one waits
    assert inspector.forwards == forwards + 1 and sem.renders == 5 and pan.renders == pan_renders and pan.stale
    inspector.tabs.selected_index = 0
    assert pan.renders == pan_renders + 1 and not pan.stale
    q1 = inspector.inspection
    assert pan.table.equals(segment_table(q1, panoptic_result(q1, STUFF, 0.0, 0.0)))


def test_semantic_tab_shows_which_queries_make_up_the_pixels_class(inspector):
    inspector.tabs.selected_index = 1
    sem = inspector.semantic
    q = inspector.inspection
    sem.select_pixel(20, 30)
    scores = semantic_scores(q)
    c = int(scores[:, 20, 30].argmax())
    assert sem.votes.attrs["category"] == c
    assert sem.votes["contribution"].sum() == pytest.approx(scores[c, 20, 30], abs=1e-5)
    assert f"score {scores[c, 20, 30]:.3f}" in sem.summary.value
    picture = _png(sem.view.value)
    from workbench.inspect.panels import PAD, TITLE_H

    scale = sem.cell / 64
    assert np.all(picture[TITLE_H + int((20 + 0.5) * scale), PAD + int((30 + 0.5) * scale)] == RED)
    other = (c + 1) % scores.shape[0]
    sem.category.value = other  # a chosen class at the same pixel
    assert sem.votes.attrs["category"] == other
    assert sem.votes["contribution"].sum() == pytest.approx(scores[other, 20, 30], abs=1e-5)
    sem.scope.value = "class region"
    assert sem.votes.equals(class_votes(q, other))
    sem.category.value = -1
    sem.scope.value = "pixel"
    top = [v for _, v in sem.contributor.options]
    assert top == [int(i) for i in sem.votes.index[:len(top)]] and top
    sem.contributor.value = top[1]  # a contributing query: the query panels show it
    assert inspector.query.value == top[1]


def test_tasks_default_and_bad_names():
    from workbench.inspect.widgets import QueryInspector

    torch.manual_seed(0)
    model = wb.build_model(wb.ModelConfig.tiny(num_classes=3, attributes=DEFAULT_ATTRIBUTES)).eval()
    items = synthetic_batch(3, K, batch=1, size=64, seed=1)
    assert QueryInspector(model, items).tabs is None  # an instance run: the query view only
    on_request = QueryInspector(model, items, tasks="semantic")  # post-processed for another task
    assert on_request.tabs.titles == ("semantic",) and on_request.semantic.renders == 1
    with pytest.raises(ValueError, match="tasks must name"):
        QueryInspector(model, items, tasks=("panoptics",))


def test_segments_mark_the_groups_their_category_does_not_carry(model, items, q, pan):
    from workbench.inspect.widgets import QueryInspector

    table = segment_table(q, pan, {2: ("color",)})  # the stuff class carries color only; things not listed
    stuff, things = table[table["kind"] == "stuff"], table[table["kind"] == "thing"]
    assert (stuff["size"] == "n/a").all() and stuff["p_size"].isna().all() and (stuff["color"] != "n/a").all()
    assert things.equals(segment_table(q, pan)[table["kind"] == "thing"])

    class Dataset(list):  # the carried groups default to what the items' annotations label
        records = [{"image_id": i, "annotations": [{"category_id": 2, "attributes": {"color": -1, "size": 1}}]}
                   for i in range(len(items))]

    inspector = QueryInspector(model, Dataset(items))
    assert inspector.carried == {2: ("size",)}
    shown = inspector.panoptic.table
    assert (shown.loc[shown["kind"] == "stuff", "color"] == "n/a").all()
    assert "n/a" in inspector.panoptic.table_view.value
