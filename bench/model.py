"""Train-step and inference time of the whole model on CPU.

    python bench/model.py [--preset coco_r50|tiny] [--size 256] [--batch 2] [--steps 3]

Prints seconds per step for the requested preset, and the same for the tiny preset measured in the same run
as a baseline (ratio printed), so figures from different machines can be compared by their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import workbench as wb
from workbench.harness.synthetic import synthetic_batch
from workbench.ops import backend_info

ATTRIBUTES = {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"]}


def time_train_step(cfg: wb.ModelConfig, size: int, batch: int, steps: int,
                    ops_backend: str = "auto") -> tuple[float, float]:
    from workbench.ops import MSDeformAttn

    torch.manual_seed(0)
    model = wb.build_model(cfg).train()
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.backend = ops_backend
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    items = synthetic_batch(cfg.num_classes, {a.name: a.num_values for a in cfg.attributes}, batch=batch, size=size)
    times = []
    for step in range(steps + 1):  # first step is warm-up
        start = time.perf_counter()
        losses = model(items, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        model(items)
        start = time.perf_counter()
        model(items)
        infer = time.perf_counter() - start
    return statistics.median(times[1:]), infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="coco_r50", choices=["coco_r50", "tiny"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, ops backends {backend_info()}")
    base_train, base_infer = time_train_step(wb.ModelConfig.tiny(3, ATTRIBUTES), args.size, args.batch, args.steps)
    print(f"baseline tiny      : train step {base_train * 1000:8.1f} ms   inference {base_infer * 1000:8.1f} ms")
    if args.preset != "tiny":
        cfg = getattr(wb.ModelConfig, args.preset)(num_classes=3, attributes=ATTRIBUTES)
        train, infer = time_train_step(cfg, args.size, args.batch, args.steps)
        print(f"{args.preset:<19}: train step {train * 1000:8.1f} ms   inference {infer * 1000:8.1f} ms")
        print(f"ratio {args.preset}/tiny: train {train / base_train:.1f}x, inference {infer / base_infer:.1f}x "
              f"(batch {args.batch} x {args.size}^2, CPU)")
        ref_train, ref_infer = time_train_step(cfg, args.size, args.batch, args.steps, ops_backend="reference")
        print(f"{args.preset + ' (reference op)':<19}: train step {ref_train * 1000:8.1f} ms   inference "
              f"{ref_infer * 1000:8.1f} ms   -> compiled op gives {ref_train / train:.2f}x train, "
              f"{ref_infer / infer:.2f}x inference")


if __name__ == "__main__":
    main()
