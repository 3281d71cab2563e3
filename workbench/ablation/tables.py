"""Ablation tables: one row per cell (axis values), mean ± std over seeds; CSV, Markdown, LaTeX and plots.

    runs = collect_runs(grid, out)     one row per (cell, seed): axis values, seed, status, metrics, error
    table = aggregate(runs, grid)      one row per cell: axis values, seeds, failed, <metric> mean / std
    paths = write_tables(grid, out)    ablation.csv, runs.csv, ablation.md, ablation.tex, ablation.json (metadata),
                                       plot_<axis>.png

Metrics, chosen by the tasks of the grid's cells (`model.task`; a grid over tasks gets the union, "–" where a
task has no such score), all in percent: instance: segm AP, AP50 and joint AP (engine/evaluate.py) and each
attribute's accuracy on true positives; panoptic: PQ (all / things / stuff), joint PQ, mIoU and each attribute's
accuracy on PQ's matched segments (engine/evaluate_segments.py); semantic: mIoU, fwIoU, mACC, pACC. Then train
time (seconds of the training that produced the evaluated weights). std is the sample standard deviation over a
cell's finished seeds (ddof=1; undefined with one seed). Failed seeds are left out of mean and std and counted
in `failed`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from workbench.ablation.fingerprint import short_fingerprint
from workbench.ablation.grid import Grid

__all__ = ["aggregate", "collect_runs", "format_table", "metric_columns", "plot_axes", "to_latex", "to_markdown",
           "write_tables"]

TASK_METRICS = {"instance": ("AP", "AP50", "joint AP"),
                "panoptic": ("PQ", "PQ things", "PQ stuff", "joint PQ", "mIoU"),
                "semantic": ("mIoU", "fwIoU", "mACC", "pACC")}
BASE_METRICS = TASK_METRICS["instance"]
HEADLINE = {"instance": ("AP", "joint AP"), "panoptic": ("PQ", "joint PQ"), "semantic": ("mIoU",)}  # the plots
CAPTION = {"instance": "AP, AP50, joint AP and attribute accuracy (on true positives at IoU 0.5)",
           "panoptic": "PQ (all / things / stuff), joint PQ (attributes right too), mIoU and attribute accuracy "
                       "(on PQ's matched segments, IoU > 0.5)",
           "semantic": "mIoU, fwIoU, mACC and pACC (ignore 255)"}
TRAIN_TIME = "train time (s)"
PLUS_MINUS = "±"


def run_tasks(runs: pd.DataFrame) -> list[str]:
    """The tasks of `runs`' rows in the fixed order instance, panoptic, semantic (instance for older tables)."""
    present = set(runs["task"]) if "task" in runs else {"instance"}
    return [t for t in TASK_METRICS if t in present] or ["instance"]


def _union(groups) -> list[str]:
    return list(dict.fromkeys(m for group in groups for m in group))


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The metric columns of `runs` in table order: those of its tasks (TASK_METRICS, instance's first), <attr>
    acc ..., train time (s)."""
    attrs = [c for c in runs.columns if c.endswith(" acc")]
    return [*_union(TASK_METRICS[t] for t in run_tasks(runs)), *attrs, TRAIN_TIME]


def _percent(fraction):
    return None if fraction is None else 100.0 * fraction


def _metrics_of(run_dir: Path) -> dict[str, float]:
    with open(run_dir / "metrics.json") as f:
        m = json.load(f)
    task = m.get("task", "instance")
    if task == "instance":
        row = {"AP": m["segm"].get("AP"), "AP50": m["segm"].get("AP50"), "joint AP": m["joint"].get("AP")}
        attributes = m.get("attributes", {})
    else:  # engine/evaluate_segments.py's SegmentationEvalResult: PQ and IoU already in %
        panoptic, semantic = m.get("panoptic") or {}, m.get("semantic") or {}
        row = {}
        if panoptic:
            pq, joint = panoptic["panoptic"], panoptic["joint"]
            row.update({"PQ": pq["all"]["PQ"], "PQ things": pq["things"]["PQ"], "PQ stuff": pq["stuff"]["PQ"],
                        "joint PQ": joint["all"]["PQ"]})
        row.update({k: semantic.get(k) for k in TASK_METRICS["semantic"] if k in TASK_METRICS[task]})
        attributes = panoptic.get("attributes", {})
    for name, a in attributes.items():
        row[f"{name} acc"] = _percent(a.get("accuracy"))
    train = run_dir / "train.json"
    if train.is_file():
        with open(train) as f:
            row[TRAIN_TIME] = json.load(f).get("seconds")
    return {k: (math.nan if v is None else float(v)) for k, v in row.items()}


def check_same_data(out: Path, scored: Sequence[Path]) -> None:
    """Every finished cell of a task must be scored on the same validation data (its metrics.json records the
    file's sha256); a file regenerated between runs would mix old and new numbers in one table. Cells of different
    tasks may be scored on different data (instance: COCO-with-attributes; panoptic, semantic: the stuff data)."""
    from workbench.errors import WorkbenchError

    by_task: dict[str, dict[str, list[str]]] = {}
    for run_dir in scored:
        with open(run_dir / "metrics.json") as f:
            metrics = json.load(f)
        data = metrics.get("data") or {}
        by_hash = by_task.setdefault(metrics.get("task", "instance"), {})
        by_hash.setdefault(data.get("sha256", "not recorded"), []).append(str(run_dir.relative_to(out)))
    for by_hash in by_task.values():
        if len(by_hash) > 1:
            groups = "; ".join(f"{h[:12]}: {', '.join(cells[:3])}{' ...' if len(cells) > 3 else ''}"
                               for h, cells in by_hash.items())
            raise WorkbenchError(f"{out}: cells were scored on different validation data ({groups}); delete the "
                                 "metrics.json of the stale cells (or the whole folder) and rerun the grid")


def collect_runs(grid: Grid, out: str | Path) -> pd.DataFrame:
    """One row per (cell, seed) of `grid` found under `out`: key, axis labels..., seed, status, metrics, error.

    status: "done" (metrics.json present), "failed" (failed.json present) or "missing" (never run).
    Raises if the finished cells were scored on different data (`check_same_data`).
    """
    out = Path(out)
    rows = []
    for key, values in grid.keys():
        for seed in grid.seeds:
            run_dir = out / key / f"seed{seed}"
            row: dict[str, Any] = {"cell": key, **{a.label: values[a.path] for a in grid.axes}, "seed": seed,
                                   "task": grid.task_of(values)}
            if (run_dir / "metrics.json").is_file():
                row.update(status="done", error=None, **_metrics_of(run_dir))
            elif (run_dir / "failed.json").is_file():
                with open(run_dir / "failed.json") as f:
                    row.update(status="failed", error=json.load(f).get("error"))
            else:
                row.update(status="missing", error=None)
            rows.append(row)
    check_same_data(out, [out / r["cell"] / f"seed{r['seed']}" for r in rows if r["status"] == "done"])
    runs = pd.DataFrame(rows)
    for column in metric_columns(runs):
        if column not in runs:
            runs[column] = math.nan
    return runs


def aggregate(runs: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """Per cell (rows with the same "cell", in first-seen order): axis values, `seeds` (finished), `failed`,
    and `<metric> mean` / `<metric> std` / `<metric> n` over the finished seeds where the metric is defined
    (std: sample, ddof=1; an attribute accuracy is undefined for a run without true positives)."""
    rows = []
    for key, group in runs.groupby("cell", sort=False):
        done = group[group["status"] == "done"]
        row: dict[str, Any] = {"cell": key, **{a: group[a].iloc[0] for a in axes},
                               "seeds": int(len(done)), "failed": int((group["status"] == "failed").sum())}
        for m in metric_columns(runs):
            values = pd.to_numeric(done[m], errors="coerce").dropna()
            row[f"{m} mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{m} std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
            row[f"{m} n"] = int(len(values))  # seeds where the metric is defined (accuracy needs a TP)
        rows.append(row)
    return pd.DataFrame(rows)


def _number(x: float, digits: int) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_table(table: pd.DataFrame, axes: Sequence[str], metrics: Sequence[str], digits: int = 1,
                 latex: bool = False) -> pd.DataFrame:
    """Strings for display: axis values, seeds, then "mean ± std" per metric ("–" where undefined), with
    "(n=k)" where the metric is defined for fewer seeds than finished."""
    pm = r" $\pm$ " if latex else f" {PLUS_MINUS} "
    shown = pd.DataFrame({a: table[a].map(_value_text) for a in axes})
    shown["seeds"] = [f"{s}" + (f" ({f} failed)" if f else "") for s, f in zip(table["seeds"], table["failed"])]
    for m in metrics:
        counts = table[f"{m} n"] if f"{m} n" in table else table["seeds"]
        shown[m] = [_number(mu, digits) + ("" if math.isnan(sd) else pm + _number(sd, digits))
                    + (f" (n={n})" if 0 < n < seeds else "")
                    for mu, sd, n, seeds in zip(table[f"{m} mean"], table[f"{m} std"], counts, table["seeds"])]
    return shown


def _value_text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# ---- exports ----------------------------------------------------------------------------------------------------
def to_markdown(shown: pd.DataFrame, caption: str = "", comment: str = "", metrics: Sequence[str] = ()) -> str:
    """A GitHub-flavoured Markdown table (metric columns right-aligned); `comment` goes into an HTML comment
    above it, `caption` in italics below."""
    def cell(x: Any) -> str:
        return str(x).replace("|", r"\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in shown.columns) + " |"
    rule = "| " + " | ".join("---:" if c in metrics else "---" for c in shown.columns) + " |"
    body = ["| " + " | ".join(cell(x) for x in row) + " |" for row in shown.itertuples(index=False)]
    lines = ([f"<!-- {comment.replace('--', '- -')} -->"] if comment else []) + [header, rule, *body]
    if caption:
        lines += ["", f"*{caption}*"]
    return "\n".join(lines) + "\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
                 "–": "--"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(shown: pd.DataFrame, caption: str = "", label: str = "tab:ablation", comments: Sequence[str] = (),
             metrics: Sequence[str] = ()) -> str:
    """A booktabs table environment (needs \\usepackage{booktabs}); cells already holding "$\\pm$" are kept,
    everything else is escaped. Metric columns are right-aligned, the others left-aligned."""
    spec = "".join("r" if c in metrics else "l" for c in shown.columns)

    def cell(x: Any) -> str:
        text = str(x)
        if r"$\pm$" in text:
            return r" $\pm$ ".join(latex_escape(p.strip()) for p in text.split(r"$\pm$"))
        return latex_escape(text)

    lines = [f"% {c}" for c in comments]
    lines += [r"\begin{table}[t]", r"\centering", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
              " & ".join(latex_escape(c) for c in shown.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(x) for x in row) + r" \\" for row in shown.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(f"\\caption{{{latex_escape(caption)}}}")
    lines += [f"\\label{{{label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ---- plots ------------------------------------------------------------------------------------------------------
def plot_axes(table: pd.DataFrame, axes: Sequence[str], out_dir: str | Path,
              metrics: Sequence[str] = ("AP", "joint AP")) -> list[Path]:
    """One PNG per axis: each metric (mean, error bar = std) against the axis' values, one line per combination
    of the other axes. Uses matplotlib's Agg canvas directly (headless, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir = Path(out_dir)
    paths = []
    for axis in axes:
        others = [a for a in axes if a != axis]
        ticks = list(dict.fromkeys(_value_text(v) for v in table[axis]))
        fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
        FigureCanvasAgg(fig)
        groups = list(table.groupby(others, sort=False, dropna=False)) if others else [((), table)]
        width = 0.3 / max(len(groups), 1)  # lines side by side so their error bars do not hide each other
        for i, metric in enumerate(metrics):
            ax = fig.add_subplot(1, len(metrics), i + 1)
            for j, (name, group) in enumerate(groups):
                shift = (j - (len(groups) - 1) / 2) * width
                x = [ticks.index(_value_text(v)) + shift for v in group[axis]]
                std = group[f"{metric} std"].fillna(0.0)
                name = name if isinstance(name, tuple) else (name,)
                label = ", ".join(f"{a}={_value_text(v)}" for a, v in zip(others, name)) or None
                ax.errorbar(x, group[f"{metric} mean"], yerr=std, marker="o", capsize=3, label=label)
            ax.set_xticks(range(len(ticks)), ticks)
            ax.set_xlim(-0.5, len(ticks) - 0.5)
            ax.set_xlabel(axis)
            ax.set_ylabel(f"{metric} (%)")
            ax.grid(alpha=0.3)
            if others and i == 0:
                fig.legend(loc="outside lower center", ncols=min(len(groups), 2), fontsize="small")
        fig.suptitle(f"{axis}: mean ± std over seeds")
        path = out_dir / f"plot_{_file_safe(axis)}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


def _file_safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text)


# ---- everything at once -----------------------------------------------------------------------------------------
def _fingerprints(grid: Grid, out: Path) -> list[dict]:
    """The distinct environments (from each finished cell's status.json) the numbers were measured in."""
    seen: list[dict] = []
    for key, _ in grid.keys():
        for seed in grid.seeds:
            path = out / key / f"seed{seed}" / "status.json"
            if not path.is_file():
                continue
            with open(path) as f:
                status = json.load(f)
            fp = status.get("fingerprint")
            if status.get("status") == "done" and fp and fp not in seen:
                seen.append(fp)
    return seen


def write_tables(grid: Grid, out: str | Path, digits: int = 1) -> dict[str, Path]:
    """Collect, aggregate and export everything under `out`; returns {kind: path}."""
    out = Path(out)
    axes = [a.label for a in grid.axes]
    runs = collect_runs(grid, out)
    metrics = metric_columns(runs)
    table = aggregate(runs, axes)
    fingerprints = _fingerprints(grid, out)
    environment = (short_fingerprint(fingerprints[0]) if len(fingerprints) == 1 else
                   f"{len(fingerprints)} different environments, see ablation.json" if fingerprints else
                   "no finished runs")
    seeds = ", ".join(map(str, grid.seeds))
    tasks = run_tasks(runs)
    scores = "; ".join((f"{t}: " if len(tasks) > 1 else "") + CAPTION[t] for t in tasks)
    caption = f"Mean {PLUS_MINUS} sample std over seeds {{{seeds}}}; {scores} in %, train time in s. {environment}."
    paths = {"csv": out / "ablation.csv", "runs_csv": out / "runs.csv", "markdown": out / "ablation.md",
             "latex": out / "ablation.tex", "metadata": out / "ablation.json"}
    table.to_csv(paths["csv"], index=False)
    runs.to_csv(paths["runs_csv"], index=False)
    shown = format_table(table, axes, metrics, digits)
    compact = [{k: v for k, v in fp.items() if k != "ops_backend"} for fp in fingerprints]
    comment = ("workbench ablate; environment (full: ablation.json): "
               + json.dumps(compact[0] if len(compact) == 1 else compact))
    paths["markdown"].write_text(to_markdown(shown, caption, comment, metrics))
    latex_shown = format_table(table, axes, metrics, digits, latex=True)
    paths["latex"].write_text(to_latex(latex_shown, caption, comments=[comment], metrics=metrics))
    meta = {"grid": grid.to_dict(), "axes": {a.label: a.path for a in grid.axes}, "tasks": tasks, "metrics": metrics,
            "std": "sample standard deviation over finished seeds (ddof=1)", "caption": caption,
            "fingerprints": fingerprints, "consistent_environment": len(fingerprints) <= 1,
            "cells": len(table), "runs": {s: int((runs["status"] == s).sum()) for s in ("done", "failed", "missing")},
            "files": {k: p.name for k, p in paths.items()}}
    if axes and int((runs["status"] == "done").sum()):
        for i, path in enumerate(plot_axes(table, axes, out, metrics=_union(HEADLINE[t] for t in tasks))):
            paths[f"plot_{axes[i]}"] = path
        meta["files"].update({k: p.name for k, p in paths.items() if k.startswith("plot_")})
    paths["metadata"].write_text(json.dumps(meta, indent=2, default=str))
    return paths
