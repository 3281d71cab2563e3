"""Inspector and tables with a multi-label group: one bar per value with the threshold line, predicted sets."""
import numpy as np
import torch

import workbench as wb
from workbench.config import AttributeSpec
from workbench.harness.synthetic import synthetic_batch
from workbench.inspect.figures import annotation_grid, kept_instances_image, query_figure
from workbench.inspect.queries import distributions, inspect_item, query_table
from workbench.inspect.tables import instances_table

VALUES = ("stripes", "dots", "outline")


def model_and_item():
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=[AttributeSpec("color", ("r", "g", "b")),
                                                          AttributeSpec("pattern", VALUES, kind="multi", threshold=0.4)])
    torch.manual_seed(0)
    model = wb.build_model(cfg)
    item = synthetic_batch(3, {"color": 3}, batch=1, size=64, seed=0)[0]
    n = len(item["instances"]["labels"])
    item["instances"]["attributes"]["pattern"] = torch.tensor([[True, False, True]] + [[False] * 3] * (n - 1))
    item["instances"]["attribute_labeled"] = {"pattern": torch.tensor([True] + [False] * (n - 1))}
    return model, item


def test_query_table_lists_predicted_sets_and_distributions_have_one_bar_per_value():
    model, item = model_and_item()
    q = inspect_item(model, item)
    assert q.multi_label == {"pattern": 0.4}
    table = query_table(q)
    for query, text in table["pattern"].items():
        probs = q.attribute_probs["pattern"][query]
        expected = "+".join(v for v, p in zip(VALUES, probs) if p > 0.4) or "-"
        assert text == expected
    d = distributions(q, 0)["pattern"]
    assert list(d.index) == list(VALUES)  # no no-object bar
    assert np.allclose(d.to_numpy(), q.attribute_probs["pattern"][0])
    fig = query_figure(q, 0, table.loc[0].to_dict())
    pattern_ax = next(ax for ax in fig.axes if ax.get_title() == "pattern")
    assert len(pattern_ax.patches) == 3
    assert [line.get_xdata()[0] for line in pattern_ax.get_lines()] == [0.4]  # the threshold line
    assert kept_instances_image(q, table).ndim == 3


def test_instances_table_and_grid_show_sets_and_unlabeled():
    model, item = model_and_item()
    values = {"color": ["r", "g", "b"], "pattern": list(VALUES)}
    table = instances_table(item, ["a", "b", "c"], values)
    assert table["pattern"].tolist() == ["stripes+outline"] + ["unlabeled"] * (len(table) - 1)
    assert annotation_grid([item], ["a", "b", "c"], values).axes


def test_widget_takes_a_multi_label_dataset_s_names_from_its_schema():
    """QueryInspector on a dataset (items with a `.schema`) that has a multi-label group: the value names come
    from the schema as plain lists; the schema's model_attributes() form ({"values", "kind"}) was taken for
    2 names and refused."""
    import pytest

    pytest.importorskip("ipywidgets", reason="notebook extra not installed: pip install -e .[notebooks]")
    from workbench.data.synthetic import synthetic_schema
    from workbench.inspect.widgets import QueryInspector

    schema = synthetic_schema(patterns=True)
    torch.manual_seed(0)
    model = wb.build_model(wb.ModelConfig.tiny(**schema.model_fields()))

    class Items(list):
        pass

    items = Items(synthetic_batch(3, {"color": 3, "size": 3}, batch=1, size=64, seed=0))
    n = len(items[0]["instances"]["labels"])
    items[0]["instances"]["attributes"]["pattern"] = torch.zeros(n, 3, dtype=torch.bool)
    items.schema = schema
    inspector = QueryInspector(model, items, score_threshold=0.0)
    assert inspector.attribute_values["pattern"] == ["stripes", "dots", "outline"]
    assert inspector.inspection is not None
