"""Panoptic overlays caption only the attribute groups a segment's category carries (drawing/segments.py,
data/carried_attributes.py, engine/run_categories.py): the synthetic stuff bands carry `tone` only, the shapes
`color` and `size` only; the heads predict all three for every segment."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from workbench.data.carried_attributes import carried_attributes
from workbench.drawing.segments import panoptic_regions

CATEGORIES = ["circle", "square", "triangle", "sky", "ground"]
VOCABS = {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"], "tone": ["light", "dark"]}
EXPECTED = {0: ("color", "size"), 1: ("color", "size"), 2: ("color", "size"), 3: ("tone",), 4: ("tone",)}


@pytest.fixture(scope="module")
def panoptic_data(tmp_path_factory):
    from workbench.data.synthetic import synthetic_splits

    return synthetic_splits(tmp_path_factory.mktemp("pan"), 8, 1, 64, progress=False, task="panoptic")


def test_carried_attributes_of_the_synthetic_panoptic_data(panoptic_data):
    from workbench.data.segmentation import open_dataset

    dataset = open_dataset(panoptic_data[0], "panoptic")
    assert carried_attributes(dataset.records, dataset.schema.attribute_names) == EXPECTED


def test_carried_attributes_rules():
    records = [
        {"annotations": [{"category_id": 0, "attributes": {"color": 2, "size": -1, "pattern": -1}},
                         {"category_id": 1, "attributes": {"color": -1, "size": -1, "pattern": []}}]},
        {"annotations": [{"category_id": 0, "attributes": {"color": -1, "size": 0, "pattern": -1}}]},
        {"file_name": "semantic.png"},  # a label map: no entries
    ]
    assert carried_attributes(records, ["color", "size", "pattern"]) == {0: ("color", "size"), 1: ("pattern",)}


def _pred():
    ids = np.zeros((8, 8), dtype=np.int32)
    ids[:4], ids[4:, :4] = 1, 2
    every = {"color": 0, "size": 2, "tone": 1}
    scores = {"color": 0.9, "size": 0.8, "tone": 0.7}
    return {"panoptic_seg": ids, "segments_info": [
        {"id": 1, "category_id": 3, "isthing": False, "score": 0.91, "query_index": 4, "attributes": every,
         "attribute_scores": scores},
        {"id": 2, "category_id": 0, "isthing": True, "score": 0.85, "query_index": 7, "attributes": every,
         "attribute_scores": scores},
    ]}


def test_panoptic_captions_hide_the_groups_a_category_does_not_carry():
    regions, captions = panoptic_regions(_pred(), CATEGORIES, VOCABS, EXPECTED)
    assert captions == ["sky dark 0.91 q4", "circle red/large 0.85 q7"]
    assert regions["masks"].shape == (2, 8, 8) and regions["masks"][0].sum() == 32
    # unknown (an old run, no data): every group, as before
    assert panoptic_regions(_pred(), CATEGORIES, VOCABS)[1] == ["sky red/large/dark 0.91 q4",
                                                               "circle red/large/dark 0.85 q7"]
    partial = panoptic_regions(_pred(), CATEGORIES, VOCABS, {3: ("tone",)})[1]  # circle not known: all groups
    assert partial == ["sky dark 0.91 q4", "circle red/large/dark 0.85 q7"]


def test_a_run_keeps_what_each_category_carries_and_its_overlays_use_it(panoptic_data, tmp_path, monkeypatch):
    import workbench.drawing.segments as segments
    from workbench.cli import main
    from workbench.engine.inference import load_run
    from workbench.engine.run_categories import CATEGORIES_FILE, run_carried_attributes

    train, val = panoptic_data
    (tmp_path / "cfg.yaml").write_text(
        "model: {preset: tiny, task: panoptic, loss: {num_points: 64}}\n"
        "solver: {batch_size: 2, max_iter: 1, log_period: 1}\n"
        f"data: {{train: {train}, val: {val}}}\n"
        "augment: {image_size: 64, min_scale: 0.9, max_scale: 1.1, test_shortest_edge: 0}\n")
    seen = []
    real = segments.panoptic_regions

    def spy(pred, categories, attributes, carried=None):
        seen.append(carried)
        return real(pred, categories, attributes, carried)

    monkeypatch.setattr(segments, "panoptic_regions", spy)
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run_dir), "--device", "cpu"]) == 0
    doc = json.loads((run_dir / CATEGORIES_FILE).read_text())
    assert doc["carried_attributes"] == [["color", "size"]] * 3 + [["tone"]] * 2
    assert seen and all(c == EXPECTED for c in seen)  # every overlay drawn with it
    cfg = load_run(run_dir).cfg
    assert run_carried_attributes(run_dir, cfg) == EXPECTED
    del doc["carried_attributes"]  # a run from before: read from its training data instead
    (run_dir / CATEGORIES_FILE).write_text(json.dumps(doc))
    assert run_carried_attributes(run_dir, cfg) == EXPECTED
    (run_dir / CATEGORIES_FILE).unlink()
    moved = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train=""))
    assert run_carried_attributes(run_dir, moved) is None  # nothing known: overlays show every group


def test_the_inspector_of_a_panoptic_run_uses_the_runs_carried_groups(panoptic_data, tmp_path):
    from workbench.cli import main
    from workbench.inspect.widgets import QueryInspector

    train, val = panoptic_data
    (tmp_path / "cfg.yaml").write_text(
        "model: {preset: tiny, task: panoptic, object_mask_threshold: 0.0, overlap_threshold: 0.0, "
        "loss: {num_points: 64}}\nsolver: {batch_size: 2, max_iter: 1, log_period: 1}\n"
        f"data: {{train: {train}}}\naugment: {{image_size: 64, min_scale: 0.9, max_scale: 1.1, test_shortest_edge: 0}}\n")
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "run"),
                 "--device", "cpu"]) == 0
    from workbench.data.segmentation import open_dataset

    run_dir = tmp_path / "run"
    doc = json.loads((run_dir / "categories.json").read_text())
    assert doc["carried_attributes"] == [["color", "size"]] * 3 + [["tone"]] * 2
    doc["carried_attributes"][0] = ["color"]  # the run's word, not the inspected items' annotations, decides
    (run_dir / "categories.json").write_text(json.dumps(doc))
    expected = {**EXPECTED, 0: ("color",)}
    inspector = QueryInspector.from_run(run_dir, dataset=open_dataset(val, "panoptic"))
    assert inspector.tabs.titles == ("panoptic",) and inspector.carried == expected
    table = inspector.panoptic.table
    assert len(table) and inspector.panoptic.renders == 1
    for _, row in table.iterrows():  # every segment shows only its category's groups
        carried = expected[CATEGORIES.index(row["category"])]
        assert [n for n in VOCABS if row[n] != "n/a"] == list(carried)
