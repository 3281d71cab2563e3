"""Before/after of issue 14's speed changes, interleaved in one process (A, B, A, B, ...; medians).

    PYTHONPATH=. python bench/speed_ab.py [--preset coco_r50|tiny] [--size 256] [--batch 2] [--repeat 5]
        [--baseline-extension OLD/workbench/_C.cpython-311-x86_64-linux-gnu.so]

"before" swaps in the code as it was (kept below, verbatim in behaviour): torch's default AdamW (not fused),
point_sample with one grid per map (no shared-points path) and post-processing that resizes every kept query
and multiplies float x bool, and, given `--baseline-extension` (a copy of workbench/_C*.so built from the
code before), that build's deformable-attention kernels. "after" is the current code. Interleaving, in
alternating order, makes both variants see the same load from other processes, so the ratio is meaningful on
a busy machine even when absolute times are not.
"""
from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

import workbench as wb
import workbench.model.criterion as criterion_module
import workbench.ops.dispatch as dispatch_module
import workbench.model.matcher as matcher_module
import workbench.model.points as points_module
import workbench.model.postprocess as postprocess_module
from workbench.harness.synthetic import synthetic_batch

ATTRIBUTES = {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"]}


def point_sample_before(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    grid = (2.0 * coords - 1.0).unsqueeze(2)
    return F.grid_sample(inputs, grid.to(inputs.dtype), align_corners=False).squeeze(3)


def masks_and_scores_before(mask_logits, query_index, padded_size, image_size, output_size):
    logits = postprocess_module.resize_mask_logits(mask_logits[query_index].float(), padded_size, image_size,
                                                   output_size)
    masks = logits > 0
    return masks, (logits.sigmoid() * masks).flatten(1).sum(1) / (masks.flatten(1).sum(1) + 1e-6)


def load_baseline_extension(path: str):
    """Another build of workbench._C, loaded as a separate module (pybind only: nothing global collides)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("workbench_baseline._C", path)
    if spec is None:
        raise SystemExit(f"--baseline-extension {path}: not a loadable extension module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def before(baseline_extension=None):
    modules = (matcher_module, criterion_module, points_module)
    saved = [m.point_sample for m in modules], postprocess_module._masks_and_scores
    for m in modules:
        m.point_sample = point_sample_before
    postprocess_module._masks_and_scores = masks_and_scores_before
    compiled_or_reason = dispatch_module._compiled_or_reason
    if baseline_extension is not None:
        def baseline(backend, value):
            ext, reason = compiled_or_reason(backend, value)
            return (baseline_extension if ext is not None else None), reason

        dispatch_module._compiled_or_reason = baseline
    try:
        yield
    finally:
        dispatch_module._compiled_or_reason = compiled_or_reason
        for m, f in zip(modules, saved[0]):
            m.point_sample = f
        postprocess_module._masks_and_scores = saved[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="coco_r50", choices=["coco_r50", "tiny"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--baseline-extension", help="workbench/_C*.so built from the code before the change")
    parser.add_argument("--cpu-time", action="store_true",
                        help="1 torch thread and time.thread_time: this process's CPU work only, steady under load")
    args = parser.parse_args()
    if args.cpu_time:
        torch.set_num_threads(1)
    clock = time.thread_time if args.cpu_time else time.perf_counter
    baseline_extension = load_baseline_extension(args.baseline_extension) if args.baseline_extension else None
    torch.manual_seed(0)
    cfg = getattr(wb.ModelConfig, args.preset)(num_classes=3, attributes=ATTRIBUTES)
    model = wb.build_model(cfg)
    items = synthetic_batch(cfg.num_classes, {a.name: a.num_values for a in cfg.attributes}, batch=args.batch,
                            size=args.size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizers = {"before": torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05),
                  "after": torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05, fused=True)}
    times: dict[str, dict[str, list[float]]] = {v: {"train step": [], "optimizer step": [], "inference": []}
                                                for v in optimizers}

    def run(variant: str, step: int) -> None:
        model.train()
        start = clock()
        losses = model(items, generator=torch.Generator().manual_seed(step))
        optimizers[variant].zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        t = clock()
        optimizers[variant].step()
        end = clock()
        model.eval()
        with torch.no_grad():
            i = clock()
            model(items)
            done = clock()
        if step:  # the first round warms up
            times[variant]["train step"].append(end - start)
            times[variant]["optimizer step"].append(end - t)
            times[variant]["inference"].append(done - i)

    for step in range(args.repeat + 1):
        for variant in ("before", "after") if step % 2 else ("after", "before"):  # ABBA: no order bias
            if variant == "before":
                with before(baseline_extension):
                    run("before", step)
            else:
                run("after", step)
    kernel = "with" if baseline_extension is not None else "without"
    print(f"\nbefore = {kernel} the baseline kernel build. `{args.preset}`, batch {args.batch} x {args.size}^2, "
          f"torch threads {torch.get_num_threads()}, {'CPU' if args.cpu_time else 'wall-clock'} time, "
          f"medians of {args.repeat} interleaved rounds\n")
    print("| part | before | after | after / before |\n| --- | ---: | ---: | ---: |")
    for part in ("train step", "optimizer step", "inference"):
        b, a = (statistics.median(times[v][part]) for v in ("before", "after"))
        print(f"| {part} | {b * 1e3:.1f} ms | {a * 1e3:.1f} ms | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
