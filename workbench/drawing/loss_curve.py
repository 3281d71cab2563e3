"""A run's training losses against step, from its metrics.jsonl (one record per logged step)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from matplotlib.figure import Figure


def loss_curve_figure(metrics_jsonl: str | os.PathLike | Sequence[Mapping]) -> Figure:
    """Total and per-term (final stage, weighted) training losses against step from a run's metrics.jsonl."""
    if isinstance(metrics_jsonl, (str, os.PathLike)):
        path = Path(metrics_jsonl)
        text = path.read_text() if path.is_file() else ""
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        records = list(metrics_jsonl)
    records = [r for r in records if "total" in r]  # training records (evaluation ones hold "eval")
    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.set(title="total loss", xlabel="step")
    ax2.set(title="final-stage terms (weighted)", xlabel="step")
    if records:
        steps = [r["step"] for r in records]
        ax1.plot(steps, [r["total"] for r in records], color="black", marker=".")
        for key in sorted(k for k in records[0] if k.startswith("loss_")):
            ax2.plot(steps, [r[key] for r in records], label=key.replace("loss_", ""), marker=".")
        ax2.legend(fontsize=7)
        ax1.set_yscale("log")
        ax2.set_yscale("log")
    return fig


def plot_loss_curve(metrics_jsonl: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """Total and per-term training losses against step, from a run's metrics.jsonl, as a PNG."""
    if not Path(metrics_jsonl).read_text().strip():
        raise ValueError(f"{metrics_jsonl} has no records")
    loss_curve_figure(metrics_jsonl).savefig(out_png, dpi=100)
