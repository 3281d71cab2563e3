"""How fast the query inspector answers (issue 27), with the targets.

    python bench/inspector.py [--run runs/demo] [--clicks 30] [--changes 20] [--images 4] [--size 512]
                              [--skip-coco] [--profile]

Two setups, each driven from Python exactly as a notebook's widget events would be:
- a run folder (`QueryInspector.from_run`): --run, else runs/demo when it exists, else the demo's config
  trained for a few steps into a temporary folder (tiny model, 128^2 images; the timings do not depend on how
  well it is trained);
- our `coco_r50` model (100 queries, 10 mask predictions, 80 classes + colour and size heads), randomly
  initialised, on --images synthetic images of --size^2 (512 by default).

Measured per setup: open (the constructor: first forward and first render), image switch to an image not seen
yet (split into the model's forward, timed around `forward_raw`, and everything else), image switch back to a
cached image, query click (each click a query not drawn yet), and threshold / scoring change (alternating the
score threshold, the duplicate IoU, the no-object filter and the scoring mode). Prints the median and p95 of
each and the targets: click and threshold/scoring change <= 100 ms p95, image switch <= 250 ms p95 plus that
image's forward. --profile prints the cProfile top functions of the clicks and changes (call counts show what
is recomputed per event). Time it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CLICK_MS, CHANGE_MS, SWITCH_MS = 100.0, 100.0, 250.0


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def _line(name: str, values: list[float], target: float | None = None, extra: str = "") -> str:
    med, p95 = statistics.median(values), _p95(values)
    verdict = "" if target is None else f"  target p95 <= {target:.0f} ms: {'met' if p95 <= target else 'NOT met'}"
    return f"  {name:<34} median {med:8.1f} ms  p95 {p95:8.1f} ms  (n={len(values)}){extra}{verdict}"


def _timed_forwards(model) -> list[float]:
    """Wrap model.forward_raw so each call's seconds are recorded (the image switch's model part)."""
    times: list[float] = []
    raw = model.forward_raw

    def forward_raw(*args, **kwargs):
        start = time.perf_counter()
        try:
            return raw(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)

    model.forward_raw = forward_raw
    return times


def measure(name: str, make_inspector, clicks: int, changes: int, images: int, profile: bool) -> None:
    """Open, switch, click and change on the inspector `make_inspector()` builds; print the figures."""
    start = time.perf_counter()
    inspector = make_inspector()
    open_ms = (time.perf_counter() - start) * 1000
    forwards = _timed_forwards(inspector.model)
    print(f"{name}: {inspector.inspection.num_queries} queries, {inspector.inspection.num_stages} stages, image "
          f"{inspector.inspection.image.shape[1]}x{inspector.inspection.image.shape[0]}, {len(inspector.items)} images")
    print(f"  {'open':<34} {open_ms:8.1f} ms (first forward and render)")

    switch_total, switch_rest, switch_forward, cached = [], [], [], []
    shown = list(range(min(images, len(inspector.items))))
    for index in shown[1:]:
        before = len(forwards)
        start = time.perf_counter()
        inspector.image.value = index
        total = time.perf_counter() - start
        forward = sum(forwards[before:])
        switch_total.append(total * 1000)
        switch_forward.append(forward * 1000)
        switch_rest.append((total - forward) * 1000)
    for index in shown[:-1]:  # the last one is showing: setting it again fires nothing
        start = time.perf_counter()
        inspector.image.value = index
        cached.append((time.perf_counter() - start) * 1000)

    profiler = cProfile.Profile() if profile else None
    queries = [q for _, q in inspector.query.options]
    click_ms = []
    if profiler:
        profiler.enable()
    for k in range(min(clicks, len(queries))):
        q = queries[(k + 1) % len(queries)]
        start = time.perf_counter()
        inspector.query.value = q
        click_ms.append((time.perf_counter() - start) * 1000)

    change_ms = []
    modes = list(inspector.scoring.options)
    for k in range(changes):
        start = time.perf_counter()
        what = k % 4
        if what == 0:
            inspector.threshold.value = round(0.1 + 0.2 * ((k // 4) % 4), 2)
        elif what == 1:
            inspector.duplicate_iou.value = 0.5 if inspector.duplicate_iou.value != 0.5 else 0.8
        elif what == 2:
            inspector.drop_no_object.value = not inspector.drop_no_object.value
        else:
            inspector.scoring.value = modes[(modes.index(inspector.scoring.value) + 1) % len(modes)]
        change_ms.append((time.perf_counter() - start) * 1000)
    if profiler:
        profiler.disable()

    if switch_total:
        print(_line("image switch (model forward)", switch_forward))
        print(_line("image switch (all but the forward)", switch_rest, SWITCH_MS))
        print(_line("image switch (total)", switch_total))
    if cached:
        print(_line("image switch back (cached)", cached, SWITCH_MS))
    print(_line("query click", click_ms, CLICK_MS))
    print(_line("threshold / scoring change", change_ms, CHANGE_MS))
    print(f"  query views drawn: {inspector.renders}; model forwards: {inspector.forwards}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def demo_run(work: Path) -> Path:
    """The demo's config trained for a few steps into `work` (when no run folder is given)."""
    from workbench.engine.demo import demo_config, prepare_data
    from workbench.engine.trainer import train

    prepare_data(work / "data", train_images=16, val_images=6)
    train(demo_config(work / "data", max_iter=4), work / "run", progress=False)
    return work / "run"


def coco_inspector(size: int, images: int):
    import torch

    import workbench as wb
    from workbench.config import AttributeSpec
    from workbench.harness.synthetic import synthetic_batch
    from workbench.inspect.widgets import QueryInspector

    attributes = [AttributeSpec("color", ("red", "green", "blue")), AttributeSpec("size", ("small", "medium", "large"))]
    torch.manual_seed(0)
    model = wb.build_model(wb.ModelConfig.coco_r50(num_classes=80, attributes=attributes)).eval()
    items = synthetic_batch(80, {"color": 3, "size": 3}, batch=images, size=size, seed=0)
    return lambda: QueryInspector(model, items, score_threshold=0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="run folder (default: runs/demo, else a short demo run)")
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--images", type=int, default=4, help="images shown per setup (switches: images - 1)")
    parser.add_argument("--size", type=int, default=512, help="image side for the coco_r50 setup")
    parser.add_argument("--skip-coco", action="store_true")
    parser.add_argument("--skip-run", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile of the clicks and changes")
    args = parser.parse_args()

    import torch

    from workbench.inspect.widgets import QueryInspector

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_run:
            run = Path(args.run) if args.run else Path("runs/demo")
            if not (run / "config.yaml").exists():
                if args.run:
                    raise SystemExit(f"{run}: no config.yaml (not a run folder)")
                print("runs/demo absent: training the demo config for 4 steps into a temporary folder")
                run = demo_run(Path(tmp))
            measure(f"run {run}", lambda: QueryInspector.from_run(run), args.clicks, args.changes, args.images,
                    args.profile)
        if not args.skip_coco:
            measure(f"coco_r50 at {args.size}^2 (random init)", coco_inspector(args.size, args.images), args.clicks,
                    args.changes, args.images, args.profile)


if __name__ == "__main__":
    main()
