"""A train step alone and beside another busy torch process, with and without our thread policy (issue 27).

    python bench/contention.py [--size 256] [--batch 2] [--steps 4] [--models ours,transformers]
                               [--busy-threads 2] [--busy-policy same|off] [--spincount N]

For each model (our `coco_r50`, and transformers' Mask2FormerForUniversalSegmentation of the same size, built
as `bench/model.py --vs-transformers` builds it), on one synthetic batch of --batch x --size^2, the median of
--steps train steps (after one warm-up step) in four fresh processes:
  policy off, alone        torch's defaults (WORKBENCH_THREAD_POLICY=off, no OMP_WAIT_POLICY / GOMP_SPINCOUNT /
                           KMP_BLOCKTIME): "today's" step
  policy off, beside busy  the same while a second process runs a --busy-threads-thread matmul loop
  policy on,  alone        workbench's policy (workbench/threads.py), set before torch loads
  policy on,  beside busy
The busy process runs with the measured process's policy (--busy-policy same: both are ours, e.g. a notebook
kernel beside a training run) or torch's defaults (--busy-policy off: a foreign process). Every process is
fresh because the OpenMP wait settings are read once, when torch loads. --spincount overrides the policy's
GOMP_SPINCOUNT, to compare values.

Prints each median, the ratios and the targets: policy-on alone <= 1.05x policy-off alone (no slower than
today), policy-on beside one busy process <= 2.3x policy-on alone (for ours). Run it on an otherwise idle
machine: other load changes every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "WORKBENCH_THREAD_POLICY")
ALONE_TARGET, BESIDE_TARGET = 1.05, 2.3


def child_env(policy: bool, spincount: str | None) -> dict:
    """The environment of a measured or busy process: OpenMP wait variables cleared, then the policy's own
    (workbench sets them when imported) or WORKBENCH_THREAD_POLICY=off."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if not policy:
        env["WORKBENCH_THREAD_POLICY"] = "off"
    elif spincount is not None:
        env["GOMP_SPINCOUNT"] = spincount
    return env


def busy_loop(threads: int) -> None:
    """The second process: matrix products on `threads` threads until killed."""
    import workbench  # noqa: F401 -- first: applies (or, with WORKBENCH_THREAD_POLICY=off, skips) the policy
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(1024, 1024)
    a @ a
    print("busy", flush=True)
    while True:
        a @ a


def worker(model: str, size: int, batch: int, steps: int) -> None:
    """One measured process: `steps` train steps of `model` after a warm-up; prints a JSON line."""
    import workbench as wb  # first: the policy is set before torch loads
    import torch

    from model import our_step_functions, transformers_config, transformers_step_functions
    from workbench.harness.synthetic import synthetic_batch

    cfg = wb.ModelConfig.coco_r50(num_classes=80)
    items = synthetic_batch(cfg.num_classes, {}, batch=batch, size=size, seed=0)
    if model == "ours":
        step = our_step_functions(cfg, items)[0]
    else:
        step = transformers_step_functions(transformers_config("coco_r50", cfg), items)[0]
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print(json.dumps({"median": statistics.median(times), "times": times, "threads": torch.get_num_threads(),
                      "env": {k: os.environ.get(k) for k in WAIT_VARS}}), flush=True)


def measure(model: str, args, policy: bool, beside: bool) -> dict:
    busy = None
    try:
        if beside:
            busy_policy = policy if args.busy_policy == "same" else False
            busy = subprocess.Popen([sys.executable, __file__, "--busy", str(args.busy_threads)],
                                    stdout=subprocess.PIPE, text=True, env=child_env(busy_policy, args.spincount))
            if busy.stdout.readline().strip() != "busy":
                raise RuntimeError("the busy process did not start")
        out = subprocess.run([sys.executable, __file__, "--worker", model, "--size", str(args.size), "--batch",
                              str(args.batch), "--steps", str(args.steps)], env=child_env(policy, args.spincount),
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{model} worker failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if busy is not None:
            busy.kill()  # our own child, by its handle
            busy.wait()


def verdict(ratio: float, target: float) -> str:
    return f"target <= {target:.2f}x: {'met' if ratio <= target else 'NOT met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--models", default="ours,transformers")
    parser.add_argument("--busy-threads", type=int, default=2)
    parser.add_argument("--busy-policy", choices=["same", "off"], default="same")
    parser.add_argument("--spincount", default=None, help="GOMP_SPINCOUNT for the policy-on runs")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--busy", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.busy is not None:
        return busy_loop(args.busy)
    if args.worker is not None:
        return worker(args.worker, args.size, args.batch, args.steps)

    from workbench.threads import GOMP_SPINCOUNT, KMP_BLOCKTIME

    print(f"{os.cpu_count()} CPUs; train step batch {args.batch} x {args.size}^2, median of {args.steps} steps; busy "
          f"process: {args.busy_threads}-thread matmul loop, policy {args.busy_policy}; policy = GOMP_SPINCOUNT="
          f"{args.spincount or GOMP_SPINCOUNT}, KMP_BLOCKTIME={KMP_BLOCKTIME}")
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = {(policy, beside): measure(model, args, policy, beside) for policy in (False, True)
             for beside in (False, True)}
        off, off_busy, on, on_busy = (r[(policy, beside)]["median"] for policy in (False, True)
                                      for beside in (False, True))
        name = "ours coco_r50" if model == "ours" else "transformers Mask2Former (coco_r50 size)"
        print(f"{name} ({r[(True, False)]['threads']} threads):")
        print(f"  policy off: alone {off:7.2f} s   beside busy {off_busy:7.2f} s = {off_busy / off:5.2f}x alone")
        print(f"  policy on : alone {on:7.2f} s = {on / off:5.2f}x policy-off alone"
              + (f" ({verdict(on / off, ALONE_TARGET)})" if model == "ours" else ""))
        print(f"              beside busy {on_busy:7.2f} s = {on_busy / on:5.2f}x policy-on alone"
              + (f" ({verdict(on_busy / on, BESIDE_TARGET)})" if model == "ours" else "")
              + f", {on_busy / off:5.2f}x policy-off alone")


if __name__ == "__main__":
    main()
