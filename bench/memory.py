"""Peak memory of one train step: ours without and with activation checkpointing, and transformers' model.

    OMP_NUM_THREADS=1 python bench/memory.py [--preset coco_r50] [--size 512] [--batch 2] [--device cpu|cuda]
                                             [--modes none,backbone,decoder,all]

Each case runs in a fresh subprocess (so one case's freed memory, allocator caches and imports cannot hide
another's): it builds the model, its AdamW and the synthetic batch (bench/model.py's step functions: the same
models --vs-transformers times, transformers' Mask2FormerForUniversalSegmentation of the same size), then runs
one train step (forward with losses, backward, AdamW step: the optimizer state is allocated there, so it is
included). Reported: what the step adds to the memory held before it. On CPU that is the process's peak RSS
(getrusage ru_maxrss) minus its RSS before the step; on a GPU torch.cuda.max_memory_allocated minus
memory_allocated before the step. Our checkpointing modes are `solver.checkpoint_activations`'s. Ratios are
ours / transformers'. A memory benchmark, not a timing one: the seconds printed are for orientation.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_mib() -> float:
    """The process's current resident set size."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(case: str, preset: str, size: int, batch: int, device: str) -> dict:
    """One case in this (fresh) process: {"added_mib", "before_mib", "seconds"}."""
    import torch

    sys.path.insert(0, str(HERE))
    import model as bench_model  # bench/model.py

    import workbench as wb
    from workbench.harness.synthetic import synthetic_batch

    cfg = getattr(wb.ModelConfig, preset)(num_classes=80)
    items = synthetic_batch(cfg.num_classes, {}, batch=batch, size=size)
    if case == "transformers":
        step, _ = bench_model.transformers_step_functions(bench_model.transformers_config(preset, cfg), items,
                                                          device=device)
    else:
        step, _, _ = bench_model.our_step_functions(cfg, items, checkpoint_activations=case, device=device)
    gc.collect()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = rss_mib()
    started = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_mib()
    return {"added_mib": peak - before, "before_mib": before, "seconds": time.perf_counter() - started}


def run_case(case: str, args) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--case", case, "--preset", args.preset,
               "--size", str(args.size), "--batch", str(args.batch), "--device", args.device]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), os.environ.get("PYTHONPATH", "")])})
    if done.returncode:
        raise SystemExit(f"case {case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="coco_r50", choices=["coco_r50", "coco_r101", "coco_swin_t"])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--modes", default="none,all", help="our solver.checkpoint_activations modes to measure")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # the subprocess's one case
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(measure(args.case, args.preset, args.size, args.batch, args.device)))
        return
    what = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS"
    print(f"{args.preset}, batch {args.batch} x {args.size}^2, {args.device} ({what}; one train step, AdamW state "
          f"included), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    results = {}
    for case in ["transformers", *args.modes.split(",")]:
        results[case] = run_case(case, args)
        label = "transformers" if case == "transformers" else f"ours, checkpoint_activations={case}"
        print(f"{label:<40} adds {results[case]['added_mib']:8.0f} MiB (held before the step "
              f"{results[case]['before_mib']:.0f} MiB; step {results[case]['seconds']:.1f} s)", flush=True)
    theirs = results["transformers"]["added_mib"]
    for case in args.modes.split(","):
        print(f"ratio ours ({case}) / transformers: {results[case]['added_mib'] / theirs:.2f}x")


if __name__ == "__main__":
    main()
