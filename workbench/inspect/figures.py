"""matplotlib figures for the notebooks and the inspector. Each function returns a `matplotlib.figure.Figure`
built without pyplot (no global state, no backend needed); notebooks display it, the widget turns it into PNG
bytes with `to_png`, tests check its axes."""
from __future__ import annotations

import io
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from workbench.drawing.loss_curve import loss_curve_figure  # noqa: F401 -- part of this module's API
from workbench.drawing.overlay import PALETTE, draw_instances, value_set_text
from workbench.inspect.queries import (
    ImageQueries,
    attention_masks,
    distributions,
    layer_masks,
    outline,
    query_prediction,
)

__all__ = [
    "annotation_grid",
    "cost_matrix_figure",
    "feature_maps_figure",
    "kept_instances_image",
    "losses_figure",
    "loss_curve_figure",
    "query_figure",
    "to_png",
]


def to_png(fig: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _spotlight(image: np.ndarray, mask: np.ndarray, dim: float = 0.3) -> np.ndarray:
    """The image with everything outside `mask` darkened: the mask stands out and keeps its own colours."""
    out = image.astype(np.float32).copy()
    out[~mask] *= dim
    return out.clip(0, 255).astype(np.uint8)


_outline = outline  # boundary pixels of a bool mask


def _bars(ax, series, highlight_last: bool = True, threshold: float | None = None) -> None:
    """Horizontal probability bars. Softmax heads: no-object (last) grey, top-1 orange. A multi-label group
    (`threshold` given): one independent bar per value, those above the threshold orange, the threshold a
    dashed red line."""
    colours = ["#4c72b0"] * len(series)
    if threshold is not None:
        colours = ["#dd8452" if p > threshold else "#4c72b0" for p in series.to_numpy()]
        ax.axvline(threshold, color="#c44e52", linestyle="--", linewidth=1)
    else:
        if highlight_last:
            colours[-1] = "#999999"
        colours[int(np.argmax(series.to_numpy()))] = "#dd8452"
    ax.barh(range(len(series)), series.to_numpy(), color=colours)
    ax.set_yticks(range(len(series)), [str(i) for i in series.index], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.tick_params(axis="x", labelsize=6)
    ax.set_title(series.name, fontsize=8)


def query_figure(q: ImageQueries, query: int, row: Mapping | None = None) -> Figure:
    """One query: its final mask over the image (outside darkened, outline yellow; matched GT outlined in
    green), the full main and attribute
    distributions (no-object grey, top-1 orange), its mask probability after every decoder stage, and where
    the next layer's cross-attention may look (white) per stage."""
    stages = q.num_stages
    dists = distributions(q, query)
    cols = max(stages, 1 + len(dists))
    fig = Figure(figsize=(1.9 * cols, 5.6), layout="constrained")
    grid = fig.add_gridspec(3, cols)
    ax = fig.add_subplot(grid[0, 0])
    image = _spotlight(q.image, q.masks[query])
    if q.gt is not None and q.matched_gt is not None and q.matched_gt[query] >= 0:
        image[_outline(q.gt["masks"][q.matched_gt[query]])] = (40, 220, 40)
    image[q.outlines[query]] = (255, 230, 0)
    ax.imshow(image, interpolation="nearest")
    title = f"query {query}"
    if row is not None:
        title += f"\n{row['class']} {row['combined']:.2f}"
        if row.get("matched_gt", -1) >= 0:
            title += f" GT{int(row['matched_gt'])} IoU {row['iou']:.2f}"
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    for j, (name, series) in enumerate(dists.items(), start=1):
        _bars(fig.add_subplot(grid[0, j]), series, threshold=q.multi_label.get(name))
    probs = layer_masks(q, query)
    allowed = attention_masks(q, query)
    for s in range(stages):
        ax = fig.add_subplot(grid[1, s])
        ax.imshow(probs[s], vmin=0, vmax=1, cmap="magma", interpolation="nearest")
        ax.set_title("queries" if s == 0 else f"layer {s}" + (" (final)" if s == stages - 1 else ""), fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(grid[2, s])
        if allowed[s] is not None:
            ax.imshow(allowed[s], vmin=0, vmax=1, cmap="gray", interpolation="nearest")
            frac = 100 * allowed[s].mean()
            ax.set_title(f"attn -> layer {s + 1}\n{frac:.0f}% visible" if s < stages - 1
                         else f"attn (unused)\n{frac:.0f}% visible", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])  # keep the frame: an all-visible (white) mask must still show as a square
        else:
            ax.axis("off")
    return fig


def kept_instances_image(q: ImageQueries, table, min_side: int = 256) -> np.ndarray:
    """(H', W', 3) uint8: the image (upscaled to at least `min_side`) with every kept query (table["kept"])
    outlined, boxed and captioned "class attr/attr score q<query>", best first. Outlines, not tints: a tint
    would change the colours the `color` attribute is about."""
    k = max(1, -(-min_side // min(q.image.shape[:2])))
    by_query = table.sort_index()
    # the upscaled masks and each kept one's outline do not depend on the table: once per image, not per change
    masks = q.masks if k == 1 else q._cached(f"masks_x{k}", lambda: _upscale_masks(q.masks, k))
    outlines = q._cached(f"outlines_x{k}", dict)
    pred = {
        "masks": masks,
        "labels": np.array([q.categories.index(c) for c in by_query["class"]]),
        "scores": by_query["combined"].to_numpy(),
        "query_index": np.arange(q.num_queries),
        "attributes": {n: np.array([q.attribute_values[n].index(v) for v in by_query[n]])
                       for n in q.attribute_names if n not in q.multi_label},
    }
    if q.multi_label:  # predicted sets, captioned "stripes+dots"
        pred["attribute_sets"] = query_prediction(q)["attribute_sets"]
    index = list(table.index[table["kept"]])
    image = _upscale(q.image, k).copy()
    for n, i in enumerate(index):
        if i not in outlines:
            outlines[i] = outline(masks[i])
        image[outlines[i]] = PALETTE[n % len(PALETTE)].astype(np.uint8)
    return draw_instances(image, pred, q.categories, q.attribute_values, index=index, alpha=0.0)


def cost_matrix_figure(costs: Mapping[str, np.ndarray], assignments: Mapping[str, tuple] | None = None,
                       target_labels: Sequence[str] | None = None) -> Figure:
    """One heatmap per named (Q, T) cost matrix, rows = queries, columns = targets; the matcher's chosen
    pairs are ringed. `assignments` {name: (query_idx, target_idx)}."""
    fig = Figure(figsize=(3.2 * len(costs), 3.6), layout="constrained")
    axes = fig.subplots(1, len(costs), squeeze=False)[0]
    for ax, (name, cost) in zip(axes, costs.items()):
        cost = np.asarray(cost, dtype=np.float64)
        im = ax.imshow(cost, cmap="viridis_r", aspect="auto")
        fig.colorbar(im, ax=ax, shrink=0.8, label="cost (yellow = cheap)" if ax is axes[-1] else None)
        if assignments and name in assignments:
            rows, cols = (np.asarray(a) for a in assignments[name])
            ax.scatter(cols, rows, s=160, facecolors="none", edgecolors="red", linewidths=2)
        ax.set(title=name, xlabel="target", ylabel="query")
        ax.set_xticks(range(cost.shape[1]), target_labels or range(cost.shape[1]), fontsize=7)
        ax.set_yticks(range(cost.shape[0]))
        ax.tick_params(axis="y", labelsize=6)
    return fig


def losses_figure(losses: Mapping[str, float], compare: Mapping[str, float] | None = None,
                  labels: tuple[str, str] = ("confident", "uncertain")) -> Figure:
    """Horizontal bars of per-term losses (optionally side by side with a second set)."""
    keys = list(losses)
    fig = Figure(figsize=(6, 0.45 * len(keys) + 1), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(keys))
    h = 0.4 if compare else 0.8
    ax.barh(y - (h / 2 if compare else 0), [losses[k] for k in keys], height=h, label=labels[0])
    if compare:
        ax.barh(y + h / 2, [compare[k] for k in keys], height=h, label=labels[1])
        ax.legend(fontsize=8)
    ax.set_yticks(y, keys, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("unweighted loss")
    return fig


def feature_maps_figure(maps: Mapping[str, np.ndarray], channels: int = 4) -> Figure:
    """First `channels` channels of each named (C, h, w) feature map, one row per map."""
    fig = Figure(figsize=(1.8 * channels, 1.8 * len(maps)), layout="constrained")
    axes = fig.subplots(len(maps), channels, squeeze=False)
    for r, (name, fmap) in enumerate(maps.items()):
        fmap = np.asarray(fmap)
        for c in range(channels):
            ax = axes[r, c]
            if c < fmap.shape[0]:
                ax.imshow(fmap[c], cmap="coolwarm", interpolation="nearest")
            ax.set_title(f"{name} {tuple(fmap.shape[-2:])} ch{c}" if c == 0 else f"ch{c}", fontsize=7)
            ax.axis("off")
    return fig


def annotation_grid(items: Sequence[Mapping], categories: Sequence[str],
                    attribute_values: Mapping[str, Sequence[str]], columns: int = 4) -> Figure:
    """Dataset items with their ground truth drawn instance by instance: "category color/size"."""
    rows = -(-len(items) // columns)
    fig = Figure(figsize=(3 * columns, 3 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, items):
        inst = item["instances"]
        image = np.asarray(item["image"]).transpose(1, 2, 0)
        labels = np.asarray(inst["labels"])
        n = len(labels)
        captions = [" ".join([categories[int(labels[i])]] + [_gt_value(inst, k, attribute_values[k], i)
                                                               for k in inst["attributes"]]) for i in range(n)]
        gt = {"masks": _upscale_masks(np.asarray(inst["masks"], dtype=bool), 4), "labels": labels}
        # outlines only: a tint would change the very colours the `color` attribute describes
        drawn = draw_instances(_upscale(image, 4), gt, categories, attribute_values, alpha=0.0, captions=captions)
        ax.imshow(drawn)
        ax.set_title(f"image {item.get('image_id', '')}: {n} instances", fontsize=8)
    return fig


def _gt_value(inst: Mapping, name: str, values: Sequence[str], i: int) -> str:
    """One instance's ground truth for one group: "red", "stripes+dots" (multi-label), "-" (empty set) or
    "<name>?" (unlabeled)."""
    values = values["values"] if isinstance(values, Mapping) else values  # Schema.model_attributes() form
    v = np.asarray(inst["attributes"][name])[i]
    if np.ndim(v) == 1:  # multi-hot row
        labeled = inst.get("attribute_labeled", {}).get(name)
        if labeled is not None and not bool(np.asarray(labeled)[i]):
            return f"{name}?"
        return value_set_text(values, v)
    return values[int(v)] if int(v) >= 0 else f"{name}?"


def _upscale(image: np.ndarray, k: int) -> np.ndarray:
    return image.repeat(k, 0).repeat(k, 1)


def _upscale_masks(masks: np.ndarray, k: int) -> np.ndarray:
    return masks.repeat(k, 1).repeat(k, 2)

