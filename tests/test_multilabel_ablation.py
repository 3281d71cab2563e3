"""`workbench ablate` reaches multi-label settings: a group's kind (by name), the multi-label loss and the
multi-label matcher weight; a softmax-vs-sigmoid run trains and evaluates in the file's terms."""
import pytest

from workbench.ablation import Grid, GridError
from workbench.data.synthetic import synthetic_splits
from workbench.engine.pipeline import train_and_evaluate
from workbench.model.meta_arch import build_criterion, build_matcher

BASE = {"model": {"preset": "tiny", "loss": {"num_points": 64}},
        "solver": {"base_lr": 1e-3, "batch_size": 2, "max_iter": 2, "warmup_iters": 1, "checkpoint_period": 100,
                   "log_period": 1},
        "augment": {"image_size": 64, "min_scale": 0.9, "max_scale": 1.1, "test_shortest_edge": 0}, "device": "cpu"}


def test_axes_reach_kind_multi_loss_and_multi_matcher_weight():
    grid = Grid.from_dict({"base": BASE, "seeds": 1, "synthetic": {"train_images": 4, "val_images": 2,
                                                                   "image_size": 64, "patterns": True},
                           "axes": {"model.attributes.color.kind": ["single", "multi"],
                                    "model.loss.multi_label_loss": ["bce", "focal"],
                                    "model.multi_label_cost_weight": [0.0, 1.0]}})
    cells = grid.cells("/tmp/unused")
    assert len(cells) == 8
    for cell in cells:
        model = cell.config.model
        assert model.attribute("pattern").multi  # from the synthetic schema with patterns
        assert model.attribute("color").kind == cell.values["model.attributes.color.kind"]
        assert model.loss.multi_label_loss == cell.values["model.loss.multi_label_loss"]
        crit = build_criterion(model)
        assert crit.multi_label_losses["pattern"] == cell.values["model.loss.multi_label_loss"]
        weight = cell.values["model.multi_label_cost_weight"]
        assert build_matcher(model).cost_attributes["pattern"] == weight * model.attribute("pattern").weight
        assert build_matcher(model).cost_attributes["size"] == model.attribute("size").weight


@pytest.mark.parametrize("path,match", [("model.attributes.pattern.colour", "field one of"),
                                        ("model.attributes.pattern", "model.attributes.<group>.<field>")])
def test_bad_attribute_paths_name_the_path(path, match):
    with pytest.raises(GridError, match=match):
        Grid.from_dict({"base": BASE, "axes": {path: [1]}})


def test_unknown_group_is_named():
    grid = Grid.from_dict({"base": BASE, "seeds": 1, "synthetic": {"train_images": 4, "val_images": 2},
                           "axes": {"model.attributes.pattern.kind": ["multi"]}})
    with pytest.raises(GridError, match="no attribute group 'pattern'"):
        grid.cells("/tmp/unused")


def test_sigmoid_colour_head_trains_and_is_scored_as_single_label(tmp_path):
    train, val = synthetic_splits(tmp_path / "data", 4, 2, image_size=64, progress=False)
    grid = Grid.from_dict({"base": {**BASE, "data": {"train": str(train), "val": str(val)}}, "seeds": 1,
                           "axes": {"model.attributes.color.kind": ["multi"]}})
    cfg = grid.cells()[0].config
    assert cfg.model.attribute("color").multi
    _, metrics = train_and_evaluate(cfg, tmp_path / "run", progress=False, num_overlays=1)
    assert set(metrics.attributes) == {"color", "size"} and not metrics.multi_label
