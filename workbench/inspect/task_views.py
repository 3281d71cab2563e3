"""The inspector's panoptic and semantic tabs (ipywidgets over `inspect/segments.py` and `segment_panels.py`).

    PanopticView   the segments list (things and stuff; category, score, query, attributes), thresholds of
                   panoptic inference, the segment picture and table; selecting a segment highlights it and
                   selects its query in the inspector, so the query view shows that query's logits, mask and
                   attention
    SemanticView   a pixel (row / column sliders, or `select_pixel(y, x)`) or a class, and which queries make
                   up that class there: the votes table and picture; selecting a contributing query selects it
                   in the inspector

Both draw only while their tab is visible: a change while hidden marks the view stale and it is drawn when its
tab opens. They read the inspector's cached inspection, so no control here runs the model.
"""
from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

from workbench.inspect.segment_panels import panoptic_panel, segment_colour, semantic_panel
from workbench.inspect.segments import (
    class_votes,
    panoptic_result,
    pixel_votes,
    segment_table,
    semantic_labels,
    semantic_scores,
)

__all__ = ["PanopticView", "SemanticView", "frame_html"]

PIXEL_CLASS = -1  # the semantic class dropdown's "the pixel's own class"


def _cell(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.3f}"
    return html.escape(str(value))


def frame_html(frame: pd.DataFrame, selected: Any = None, swatches: dict | None = None, css: str = "wb-table",
               max_rows: int | None = None) -> str:
    """A small DataFrame as compact HTML, index first: the `selected` row highlighted, an optional colour swatch
    {index: (r, g, b)} before each row's index."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [frame.index.name or "", *frame.columns])
    rows = []
    for index, values in zip(frame.index[:max_rows], frame.to_numpy()[:max_rows]):
        style = ' style="background:#ffe08a;font-weight:bold"' if index == selected else ""
        swatch = ""
        if swatches is not None and index in swatches:
            swatch = '<span style="display:inline-block;width:9px;height:9px;background:rgb{}"></span> '.format(
                tuple(swatches[index]))
        cells = "".join(f"<td>{_cell(v)}</td>" for v in values)
        rows.append(f'<tr class="{"wb-row-selected" if index == selected else "wb-row"}"{style}>'
                    f"<td>{swatch}{html.escape(str(index))}</td>{cells}</tr>")
    return (f'<div style="max-height:220px;overflow:auto"><table class="{css}" style="border-collapse:collapse;'
            f'font-size:11px;font-family:monospace"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            "</tbody></table></div>")


class _TabView:
    """A tab of the inspector that draws only while visible (`tab` = its index in the inspector's Tab)."""

    def __init__(self, inspector, tab: int) -> None:
        self.inspector, self.tab = inspector, tab
        self.stale = True
        self.renders = 0
        self._updating = False

    @property
    def visible(self) -> bool:
        tabs = self.inspector.tabs
        return tabs is not None and tabs.selected_index == self.tab

    def invalidate(self) -> None:
        """The inspection changed: redraw now if visible, else when the tab opens."""
        self.stale = True
        if self.visible:
            self.refresh()

    def show(self) -> None:
        if self.stale:
            self.refresh()

    def _update(self) -> None:
        """A control of this view changed: draw if visible, else remember to."""
        if self._updating:
            return
        if self.visible:
            self._draw()
        else:
            self.stale = True


class PanopticView(_TabView):
    """The panoptic segments of the inspected image (see module docstring)."""

    def __init__(self, inspector, tab: int, cell: int = 300) -> None:
        import ipywidgets as w

        super().__init__(inspector, tab)
        cfg = inspector.model.cfg
        self.cell, self.stuff_classes = cell, tuple(cfg.stuff_classes)
        self.result: dict | None = None
        self.table: pd.DataFrame | None = None
        self.object_mask_threshold = w.FloatSlider(value=cfg.object_mask_threshold, min=0.0, max=1.0, step=0.01,
                                                   description="object >", continuous_update=False,
                                                   readout_format=".2f")
        self.overlap_threshold = w.FloatSlider(value=cfg.overlap_threshold, min=0.0, max=1.0, step=0.01,
                                               description="overlap >=", continuous_update=False,
                                               readout_format=".2f")
        self.segment = w.Select(options=[], rows=10, description="segment", layout=w.Layout(width="380px"))
        self.summary = w.HTML()
        self.view = w.Image(format="png")
        self.table_view = w.HTML()
        for widget, name in ((self.segment, "segment"), (self.view, "panoptic-figure"),
                             (self.table_view, "segment-table"), (self.summary, "panoptic-summary")):
            widget.add_class(f"wb-{name}")
        for control in (self.object_mask_threshold, self.overlap_threshold):
            control.observe(lambda _: self._on_thresholds(), "value")
        self.segment.observe(lambda _: self._on_segment(), "value")
        self.widget = w.VBox([w.HBox([w.VBox([self.object_mask_threshold, self.overlap_threshold, self.segment]),
                                      self.view]), self.summary, self.table_view])

    @property
    def selected(self) -> int | None:
        return self.segment.value

    def select_segment(self, segment: int) -> None:
        """Select segment `segment` (its id in panoptic_seg): highlighted here, its query in the inspector."""
        if self.table is None or segment not in self.table.index:
            raise ValueError(f"no segment {segment} in this image (segments: {list(self.table.index)})")
        if self.segment.value == segment:  # no change event: still select its query
            self.inspector.query.value = int(self.table.loc[segment, "query"])
        self.segment.value = segment

    def refresh(self) -> None:
        q = self.inspector.inspection
        self.result = panoptic_result(q, self.stuff_classes, self.object_mask_threshold.value,
                                      self.overlap_threshold.value)
        self.table = segment_table(q, self.result, self.inspector.carried)
        made = self.table.index[self.table["query"] == self.inspector.query.value]
        keep = int(made[0]) if len(made) else self.segment.value  # the selected query's segment, else the same id
        options = [(f"{sid:<3} {row['category']:<10.10} {row['kind']:<5} {row['score']:.2f} q{int(row['query'])}",
                    int(sid)) for sid, row in self.table.iterrows()]
        self._updating = True
        try:
            self.segment.options = options
            self.segment.value = keep if keep in self.table.index else (options[0][1] if options else None)
        finally:
            self._updating = False
        self.summary.value = (
            f'<span class="wb-segment-count">{len(self.table)} segments</span> '
            f"({int((self.table['kind'] == 'thing').sum())} things, {int((self.table['kind'] == 'stuff').sum())} "
            f"stuff) from {len({int(v) for v in self.table['query']})} queries; class score &gt; "
            f"{self.object_mask_threshold.value:.2f}, overlap &ge; {self.overlap_threshold.value:.2f}")
        self._draw()

    def _on_thresholds(self) -> None:
        if self.visible:
            self.refresh()
        else:
            self.stale = True

    def _on_segment(self) -> None:
        if self._updating:
            return
        self._update()
        if self.segment.value is not None and self.table is not None:  # its query's logits, mask and attention
            self.inspector.query.value = int(self.table.loc[self.segment.value, "query"])

    def sync_query(self, query: int) -> None:
        """The inspector selected `query`: select the segment it made, if any (without re-selecting the query)."""
        if self.table is None or self.stale or not self.visible:
            return
        hits = self.table.index[self.table["query"] == query]
        if len(hits) and self.segment.value not in hits:
            self._updating = True
            try:
                self.segment.value = int(hits[0])
            finally:
                self._updating = False
            self._draw()

    def _draw(self) -> None:
        from workbench.inspect.panels import png_bytes

        q = self.inspector.inspection
        swatches = {int(s["id"]): segment_colour(n) for n, s in enumerate(self.result["segments_info"])}
        self.table_view.value = frame_html(self.table, self.segment.value, swatches, "wb-segment-table")
        self.view.value = png_bytes(panoptic_panel(q, self.result, self.table, self.segment.value, self.cell))
        self.renders += 1
        self.stale = False


class SemanticView(_TabView):
    """Which queries make up a pixel's class, or a class's region (see module docstring)."""

    def __init__(self, inspector, tab: int, cell: int = 150, top: int = 4) -> None:
        import ipywidgets as w

        super().__init__(inspector, tab)
        self.cell, self.top = cell, top
        self.votes: pd.DataFrame | None = None
        categories = inspector.inspection.categories
        self.category = w.Dropdown(options=[("class at the pixel", PIXEL_CLASS)] + [(c, i) for i, c in
                                                                                    enumerate(categories)],
                                   value=PIXEL_CLASS, description="class")
        self.scope = w.ToggleButtons(options=["pixel", "class region"], value="pixel", description="votes at")
        self.row = w.IntSlider(value=0, min=0, max=0, description="row (y)", continuous_update=False)
        self.col = w.IntSlider(value=0, min=0, max=0, description="column (x)", continuous_update=False)
        self.contributor = w.Select(options=[], rows=6, description="query", layout=w.Layout(width="380px"))
        self.summary = w.HTML()
        self.view = w.Image(format="png")
        self.table_view = w.HTML()
        for widget, name in ((self.view, "semantic-figure"), (self.table_view, "votes-table"),
                             (self.summary, "semantic-summary"), (self.contributor, "contributor")):
            widget.add_class(f"wb-{name}")
        for control in (self.category, self.scope, self.row, self.col):
            control.observe(lambda _: self._update(), "value")
        self.contributor.observe(lambda _: self._on_contributor(), "value")
        self.widget = w.VBox([w.HBox([w.VBox([self.category, self.scope, self.row, self.col, self.contributor]),
                                      self.view]), self.summary, self.table_view])
        self._size: tuple[int, int] | None = None
        self._fit_sliders()

    @property
    def pixel(self) -> tuple[int, int]:
        return int(self.row.value), int(self.col.value)

    def select_pixel(self, y: int, x: int) -> None:
        """Show the votes at image pixel (y, x) (what a click on the picture would pick), drawn once."""
        h, w = self.inspector.inspection.image.shape[:2]
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(f"pixel (y={y}, x={x}) is outside the {h} x {w} image")
        self._updating = True
        try:
            self.row.value, self.col.value = int(y), int(x)
        finally:
            self._updating = False
        self._update()

    def _fit_sliders(self) -> None:
        """The pixel sliders span the current image: a new size keeps the pixel where it still exists (the
        first image starts at its centre)."""
        h, w = self.inspector.inspection.image.shape[:2]
        if self._size == (h, w):
            return
        self._updating = True
        try:
            y, x = self.pixel if self._size is not None else (h // 2, w // 2)
            self.row.max, self.col.max = h - 1, w - 1
            self.row.value, self.col.value = min(y, h - 1), min(x, w - 1)
        finally:
            self._updating = False
        self._size = (h, w)

    def invalidate(self) -> None:
        self._fit_sliders()
        super().invalidate()

    def refresh(self) -> None:
        self._fit_sliders()
        self._draw()

    def _compute(self) -> pd.DataFrame:
        q = self.inspector.inspection
        y, x = self.pixel
        category = None if self.category.value == PIXEL_CLASS else self.category.value
        if self.scope.value == "pixel":
            return pixel_votes(q, y, x, category)
        return class_votes(q, int(semantic_labels(q)[y, x]) if category is None else category)

    def _draw(self) -> None:
        from workbench.inspect.panels import png_bytes

        q = self.inspector.inspection
        self.votes = self._compute()
        name, total = self.votes.attrs["category_name"], self.votes.attrs["total"]
        pixel = self.pixel if self.scope.value == "pixel" else None
        shown = self.votes[self.votes["contribution"] > 0]
        needed = int(np.searchsorted(shown["cumulative"].to_numpy(), 0.9) + 1) if len(shown) else 0
        where = f"pixel {pixel}" if pixel is not None else f"the {self.votes.attrs['area']} pixels labelled {name}"
        self.summary.value = (f'<span class="wb-votes-total">{name}: score {total:.3f} at {where}</span>; '
                              f"{needed} of {q.num_queries} queries make up 90% of it")
        self.table_view.value = frame_html(self.votes, self.contributor.value, css="wb-votes-table", max_rows=20)
        self._updating = True
        try:
            self.contributor.options = [(f"q{i:<3} {100 * r['share']:5.1f}% {r['class']}", int(i))
                                        for i, r in shown.head(20).iterrows()]
            self.contributor.value = None
        finally:
            self._updating = False
        self.view.value = png_bytes(semantic_panel(q, semantic_scores(q), semantic_labels(q), self.votes, pixel,
                                                   self.top, self.cell))
        self.renders += 1
        self.stale = False

    def _on_contributor(self) -> None:
        if not self._updating and self.contributor.value is not None:
            self.table_view.value = frame_html(self.votes, self.contributor.value, css="wb-votes-table", max_rows=20)
            self.inspector.query.value = int(self.contributor.value)
