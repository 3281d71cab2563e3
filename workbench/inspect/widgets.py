"""The per-query inspector: an ipywidgets view over `inspect/queries.py` (all logic lives there).

    inspector = QueryInspector.from_run("runs/demo")          # a trained run directory (engine.inference.load_run)
    inspector = QueryInspector(model, dataset)                  # or any in-memory model and dataset items
    inspector                                                   # last expression in a cell: shows it

Controls: image selector; scoring mode, score threshold, duplicate IoU and "drop attribute = no object",
which update the kept set live; sort column and order of the query table; the query list (selecting a
query draws its mask, matched ground truth, main and attribute distributions including no-object, its mask
after every decoder layer and its attention mask). The views are PNG `Image` widgets and the table an `HTML`
widget, so the state is plain Python values tests can read.

Panoptic and semantic (`tasks`, default the run's `model.task`; any model can be post-processed for either):
a tab per task under the summary (inspect/task_views.py). Panoptic: the segments (things and stuff) with their
category, score, query and attributes; selecting one highlights it and selects its query above. Semantic: for a
pixel (row / column sliders, `inspector.semantic.select_pixel(y, x)`) or a class, the queries whose votes
softmax(class) x sigmoid(mask) make up its class score, as a table and a picture. Only the open tab is drawn.

Interactive speed (issue 27): the model runs once per image (a small LRU of inspections keeps the last
`cache_size` images); a query's view is drawn as an array (`inspect/panels.py`, no matplotlib) on a grid laid out
once per image, and kept per (query, scoring) so threshold, duplicate and no-object changes, which do not
change it, reuse it; post-processing that no control changes (final masks at image size, mask scores, RLEs,
pairwise IoU, outlines) is computed once per image.
"""
from __future__ import annotations

import html
import os
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from workbench.engine.scoring import SCORING_MODES
from workbench.inspect.queries import ImageQueries, inspect_item, query_table

__all__ = ["QueryInspector", "table_html"]

_HIDDEN = ("mask_area", "gt_class", "duplicate", "overlap")


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.2f}"
    if isinstance(value, (int, np.integer)) and value < 0:
        return ""  # -1 = no matched GT / not a duplicate
    return html.escape(str(value))


def table_html(table: pd.DataFrame, selected: int | None = None, columns: Sequence[str] | None = None) -> str:
    """The query table as compact HTML: the selected query highlighted, queries that are not kept greyed out,
    duplicates marked. Rows keep the frame's order."""
    return _TableCells(table, columns).html(selected)


class _TableCells:
    """The table's cells formatted once; `html(selected)` only changes the highlighted row (a click)."""

    def __init__(self, table: pd.DataFrame, columns: Sequence[str] | None = None) -> None:
        columns = [c for c in (columns or table.columns) if c not in _HIDDEN]
        self.head = "".join(f"<th>{html.escape(c)}</th>" for c in ["query", *columns])
        self.records = table.to_dict("records")  # iterrows builds a Series per row: ~10x slower
        self.rows = [(q, bool(row["kept"]), "".join(f"<td>{_fmt(row[c])}</td>" for c in columns))
                     for q, row in zip(table.index, self.records)]

    def html(self, selected: int | None) -> str:
        rows = []
        for q, kept, cells in self.rows:
            style = []
            if q == selected:
                style.append("background:#ffe08a;font-weight:bold")
            elif not kept:
                style.append("color:#999")
            cls = "wb-row-selected" if q == selected else ("wb-row-kept" if kept else "wb-row-dropped")
            rows.append(f'<tr class="{cls}" style="{";".join(style)}"><td>q{q}</td>{cells}</tr>')
        return ('<div style="max-height:260px;overflow:auto"><table class="wb-query-table" '
                'style="border-collapse:collapse;font-size:11px;font-family:monospace">'
                f"<thead><tr>{self.head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _task_tabs(model_task: str, tasks: Sequence[str] | None) -> tuple[str, ...]:
    """The task tabs to show: `tasks` without "instance" (the query view), default the model's own task."""
    if tasks is None:
        tasks = () if model_task == "instance" else (model_task,)
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    unknown = [t for t in tasks if t not in ("instance", "panoptic", "semantic")]
    if unknown:
        raise ValueError(f"tasks must name some of 'instance', 'panoptic', 'semantic', got {unknown}")
    return tuple(dict.fromkeys(t for t in tasks if t != "instance"))


class QueryInspector:
    """Interactive per-query view of a model's predictions on dataset items.

    model: a `MultiTaskMask2Former`; items: anything indexable with len() giving {"image": uint8 (3, H, W),
    "instances": ... (optional, enables matching)} (e.g. a `CocoAttributeDataset`). Names default to the
    dataset's schema (`items.schema`) or the model config. The last `cache_size` images' inspections (one model
    forward each) are kept; `cell` is the side in pixels of one image in the query view. tasks: which of
    "panoptic" / "semantic" get a tab (default: the model's `task` when it is one of them; "instance" is the
    query view, always shown). carried: {category: the attribute groups it carries} (default: read from the
    items' records, `data/carried_attributes.py`); the panoptic tab shows the other groups as "n/a".
    """

    def __init__(self, model, items, categories: Sequence[str] | None = None,
                 attribute_values: Mapping[str, Sequence[str]] | None = None, scoring: str = "mean",
                 score_threshold: float = 0.3, duplicate_iou: float = 0.8, drop_no_object: bool = False,
                 seed: int = 0, cell: int = 150, cache_size: int = 8, tasks: Sequence[str] | None = None,
                 carried: Mapping[int, Sequence[str]] | None = None) -> None:
        import ipywidgets as w

        if len(items) == 0:
            raise ValueError("QueryInspector needs at least one item to show")
        tasks = _task_tabs(model.cfg.task, tasks)
        schema = getattr(items, "schema", None)
        if categories is None and schema is not None:
            categories = list(schema.category_names)
        if attribute_values is None and schema is not None:
            attribute_values = schema.attribute_values  # value names per group (model_attributes() also has kinds)
        self.model, self.items, self.seed, self.cell, self.cache_size = model, items, seed, cell, max(1, cache_size)
        self.categories, self.attribute_values = categories, attribute_values
        self._cache: OrderedDict[int, ImageQueries] = OrderedDict()
        self.forwards = 0  # how many times the model ran (one per image while it stays in the cache)
        self.inspection: ImageQueries | None = None
        self.table: pd.DataFrame | None = None
        self._updating = False
        self._cells: _TableCells | None = None
        self.renders = 0  # how many times the query figure was drawn (tests, and a sanity readout)
        self.panoptic = self.semantic = self.tabs = None  # the task tabs (inspect/task_views.py), built below

        records = getattr(items, "records", None)
        # per category the attribute groups its annotations label: the panoptic tab marks the others "n/a"
        if carried is None and records is not None:
            from workbench.data.carried_attributes import carried_attributes

            carried = carried_attributes(records, [a.name for a in model.cfg.attributes]) or None
        self.carried = carried
        labels = [(f"{i}: image {records[i].get('image_id', i)}" if records is not None else f"image {i}", i)
                  for i in range(len(items))]
        self.image = w.Dropdown(options=labels, value=0, description="image")
        self.scoring = w.Dropdown(options=list(SCORING_MODES), value=scoring, description="scoring")
        self.threshold = w.FloatSlider(value=score_threshold, min=0.0, max=1.0, step=0.01, description="score >=",
                                       continuous_update=False, readout_format=".2f")
        self.duplicate_iou = w.FloatSlider(value=duplicate_iou, min=0.05, max=1.0, step=0.05,
                                           description="dup IoU >=", continuous_update=False,
                                           readout_format=".2f")
        self.drop_no_object = w.Checkbox(value=drop_no_object, description="drop attribute = no object")
        self.sort_by = w.Dropdown(options=["rank"], value="rank", description="sort by")
        self.ascending = w.Checkbox(value=True, description="ascending")
        self.query = w.Select(options=[], rows=12, description="query", layout=w.Layout(width="380px"))
        self.summary = w.HTML()
        self.table_view = w.HTML()
        self.query_view = w.Image(format="png")
        self.kept_view = w.Image(format="png", layout=w.Layout(max_width="320px"))
        for widget, name in ((self.image, "image"), (self.threshold, "threshold"),
                             (self.duplicate_iou, "duplicate-iou"), (self.query, "query"),
                             (self.summary, "summary"), (self.table_view, "table"),
                             (self.query_view, "query-figure"), (self.kept_view, "kept-figure"),
                             (self.sort_by, "sort-by"), (self.scoring, "scoring")):
            widget.add_class(f"wb-{name}")

        self.image.observe(lambda _: self._on_image(), "value")
        for control in (self.scoring, self.threshold, self.duplicate_iou, self.drop_no_object):
            control.observe(lambda _: self._on_selection_rules(), "value")
        for control in (self.sort_by, self.ascending):
            control.observe(lambda _: None if self._updating else self._refresh_table(), "value")
        self.query.observe(lambda _: self._on_query(), "value")

        controls = w.VBox([self.image, self.scoring, self.threshold, self.duplicate_iou, self.drop_no_object,
                           self.sort_by, self.ascending])
        self._on_image()
        views = self._build_task_views(tasks)
        self.widget = w.VBox([
            w.HBox([controls, self.query, self.kept_view]),
            self.summary,
            *([self.tabs] if self.tabs is not None else []),
            self.query_view,
            self.table_view,
        ])
        self.widget.add_class("wb-inspector")
        if views:
            views[0].show()

    def _build_task_views(self, tasks: Sequence[str]) -> list:
        """The panoptic / semantic tabs (after the first inspection: they need its names and size)."""
        import ipywidgets as w

        from workbench.inspect.task_views import PanopticView, SemanticView

        views = []
        for task in tasks:
            if task == "panoptic":
                self.panoptic = PanopticView(self, len(views), cell=2 * self.cell)
                views.append(self.panoptic)
            else:
                self.semantic = SemanticView(self, len(views), cell=self.cell)
                views.append(self.semantic)
        if views:
            self.tabs = w.Tab(children=[v.widget for v in views], titles=list(tasks), selected_index=0)
            self.tabs.add_class("wb-task-tabs")
            self.tabs.observe(lambda change: views[change["new"]].show() if change["new"] is not None else None,
                              "selected_index")
        return views

    # ---- construction from a run --------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, dataset=None, device: str = "cpu",
                 checkpoint: str = "model_final.pt", **kwargs) -> "QueryInspector":
        """A trained run directory (config.yaml + weights); `dataset` defaults to its evaluation split with
        test-time resizing. Scoring, threshold and duplicate IoU default to the run's `eval` config."""
        from workbench.engine.inference import eval_dataset, load_run

        run = load_run(run_dir, device=device, checkpoint=checkpoint)
        if dataset is None:
            dataset = eval_dataset(run.cfg)
        ev = run.cfg.eval
        kwargs.setdefault("scoring", ev.scoring)
        kwargs.setdefault("drop_no_object", ev.drop_no_object)
        if ev.score_threshold > 0:
            kwargs.setdefault("score_threshold", ev.score_threshold)
        if ev.dedupe_iou is not None:
            kwargs.setdefault("duplicate_iou", ev.dedupe_iou)
        if "carried" not in kwargs:  # what the run's training data labels, as its overlays show it
            from workbench.engine.run_categories import run_carried_attributes

            kwargs["carried"] = run_carried_attributes(run_dir, run.cfg)
        return cls(run.model, dataset, **kwargs)

    # ---- state --------------------------------------------------------------------------------------------
    def inspect(self, index: int) -> ImageQueries:
        """The (cached) inspection of item `index`."""
        if index not in self._cache:
            self._cache[index] = inspect_item(self.model, self.items[index], self.categories,
                                              self.attribute_values, seed=self.seed)
            self.forwards += 1
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(index)
        return self._cache[index]

    def query_png(self, query: int) -> bytes:
        """PNG of `query`'s view in the current image under the current scoring (drawn once, then reused)."""
        from workbench.inspect.panels import PanelLayout, png_bytes, query_panel

        q = self.inspection
        panels = q._cached("panels", OrderedDict)
        key = (query, self.scoring.value, self.cell)
        if key not in panels:
            layout = q._cached(f"layout_{self.cell}", lambda: PanelLayout.for_inspection(q, self.cell))
            panels[key] = png_bytes(query_panel(q, query, self.table.loc[query], layout))
            self.renders += 1
            while len(panels) > 64:
                panels.popitem(last=False)
        return panels[key]

    @property
    def kept(self) -> list[int]:
        """Queries that survive the current threshold / no-object / duplicate rules, best first."""
        return [] if self.table is None else [int(q) for q in self.table.index[self.table["kept"]]]

    @property
    def selected(self) -> int | None:
        return self.query.value

    def current_table(self) -> pd.DataFrame:
        return query_table(self.inspection, scoring=self.scoring.value, score_threshold=self.threshold.value,
                           duplicate_iou=self.duplicate_iou.value, drop_no_object=self.drop_no_object.value)

    # ---- callbacks ----------------------------------------------------------------------------------------
    def _on_image(self) -> None:
        self.inspection = self.inspect(self.image.value)
        self.table = self.current_table()
        columns = list(self.table.columns)
        if list(self.sort_by.options) != columns:
            keep = self.sort_by.value if self.sort_by.value in columns else "rank"
            self._updating = True
            try:
                self.sort_by.options = columns
                self.sort_by.value = keep
            finally:
                self._updating = False
        views = [v for v in (self.panoptic, self.semantic) if v is not None]
        for view in views:
            view.stale = True  # until redrawn below: nothing may read its previous image's segments
        self._refresh_table(select=int(self.table.index[0]))
        for view in views:
            view.invalidate()

    def _on_selection_rules(self) -> None:
        self.table = self.current_table()
        self._refresh_table()

    def _sorted(self) -> pd.DataFrame:
        return self.table.sort_values(self.sort_by.value, ascending=self.ascending.value, kind="mergesort")

    def _refresh_table(self, select: int | None = None) -> None:
        if self.table is None:
            return
        frame = self._sorted()
        self._cells = _TableCells(frame)
        keep = select if select is not None else self.query.value
        options = []
        for q, row in zip(frame.index, self._cells.records):
            flags = ("kept" if row["kept"] else "    ") + (f" dup of q{row['duplicate_of']}" if row["duplicate"] else "")
            gt = f" GT{row['matched_gt']}" if row["matched_gt"] >= 0 else ""
            options.append((f"q{q:<3} {row['class']:<9.9} {row['combined']:.2f} {flags}{gt}", int(q)))
        target = keep if keep in frame.index else int(frame.index[0])
        self._updating = True  # setting options makes Select fire with a transient value: draw once, below
        try:
            self.query.options = options
            self.query.value = target
        finally:
            self._updating = False
        kept = self.kept
        q = self.inspection
        matched = int((q.matched_gt >= 0).sum()) if q.matched_gt is not None else 0
        self.summary.value = (
            f'<span class="wb-kept-count">kept {len(kept)} of {q.num_queries} queries</span> '
            f"(scoring {self.scoring.value}, score &ge; {self.threshold.value:.2f}, duplicate IoU &ge; "
            f"{self.duplicate_iou.value:.2f}{', attribute no-object dropped' if self.drop_no_object.value else ''}); "
            f"{matched} matched to {0 if q.gt is None else len(q.gt['labels'])} ground-truth instances; "
            f"{int(self.table['duplicate'].sum())} flagged duplicates")
        self._render_kept()
        self._on_query()

    def _render_kept(self) -> None:
        from workbench.inspect.figures import kept_instances_image
        from workbench.inspect.panels import png_bytes

        self.kept_view.value = png_bytes(kept_instances_image(self.inspection, self.table))

    def _on_query(self) -> None:
        if self._updating or self.query.value is None or self.table is None:
            return
        self.table_view.value = self._cells.html(self.query.value)
        self.query_view.value = self.query_png(self.query.value)
        if self.panoptic is not None:
            self.panoptic.sync_query(self.query.value)

    # ---- display --------------------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
