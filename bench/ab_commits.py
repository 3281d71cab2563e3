"""A train step (or an inference) of this checkout against the same of another commit, in one process,
alternating.

    python bench/ab_commits.py --base REF [--preset demo|coco_r50] [--steps 40] [--size 256] [--inference]

On a shared 2-core machine the speed of the same code moves by +-30% from minute to minute, so two separate
runs cannot tell a 10% change. Here both versions live in one process: `REF`'s `workbench/` is exported with
`git archive` into a temporary folder and imported as `workbench_base` (its imports rewritten; the compiled op
of this checkout is copied beside it, as the op's interface is the same). Both models get the same weights
and batches, steps alternate A, B, B, A, ..., and the medians and their ratio are printed, with the first
step's losses of both (the same numbers, or the difference is printed).

--preset demo: the demo's model (`workbench.engine.demo.demo_config`) on synthetic batches of 8 x 128^2 with
3-4 instances; coco_r50: batch 2 x `--size`^2 (256), 3 instances, 80 classes. A step is forward with losses,
backward, the demo's gradient clipping (demo) and fused AdamW (lr 1e-4, weight decay 0.05 on every parameter:
the same for both versions, not the trainer's parameter groups); data loading is not included.
--inference: the eval-mode raw forward (`forward_raw` on the padded batch, no autograd, no post-processing)
instead of a train step, and whether both versions' outputs are bit-identical.
"""
from __future__ import annotations

import argparse
import importlib
import io
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def export_base(ref: str, into: Path) -> None:
    """`ref`'s workbench/ as the package `workbench_base` under `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "workbench"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "workbench_base"
    (into / "workbench").rename(package)
    for source in package.rglob("*.py"):
        text = source.read_text()
        text = re.sub(r"\bworkbench\.", "workbench_base.", text)
        text = re.sub(r"\b(from|import) workbench\b", r"\1 workbench_base", text)
        source.write_text(text)
    for built in (ROOT / "workbench").glob("_C*.so"):
        shutil.copy2(built, package / built.name)


def build(lib, preset: str, size: int = 256):
    """(model, optimizer, batches, clip norm) of `lib` (workbench or workbench_base)."""
    from workbench.harness.synthetic import synthetic_batch

    if preset == "demo":
        cfg = importlib.import_module(f"{lib.__name__}.engine.demo").demo_config(Path("unused"))
        model_cfg, clip = cfg.model, cfg.solver.clip_grad_norm
        batches = [synthetic_batch(model_cfg.num_classes, {a.name: a.num_values for a in model_cfg.attributes},
                                   batch=8, size=128, num_targets=3 + s % 2, seed=s) for s in range(6)]
    else:
        model_cfg, clip = lib.ModelConfig.coco_r50(num_classes=80), 0.0
        batches = [synthetic_batch(80, {}, batch=2, size=size, num_targets=3, seed=s) for s in range(3)]
    torch.manual_seed(0)
    model = lib.build_model(model_cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    return model, optimizer, batches, clip


def step(model, optimizer, batch, clip: float, seed: int) -> dict[str, float]:
    losses = model(batch, generator=torch.Generator().manual_seed(seed))
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return {k: v.item() for k, v in losses.items()}


def raw_forward(lib, model, batch) -> list[torch.Tensor]:
    """Eval-mode raw outputs of `model` on `batch`, flattened to a list of tensors (final stage)."""
    pad_images = importlib.import_module(f"{lib.__name__}.model.meta_arch").pad_images
    images = pad_images([item["image"] for item in batch], model.cfg.size_divisibility, model.cfg.pixel_mean)
    with torch.no_grad():
        out = model.forward_raw(images)
    return [out.class_logits, out.mask_logits, *out.attribute_logits.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git ref to compare against (e.g. HEAD~3, a commit)")
    parser.add_argument("--preset", default="demo", choices=["demo", "coco_r50"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--size", type=int, default=256, help="coco_r50's image size")
    parser.add_argument("--inference", action="store_true", help="time the eval-mode raw forward instead")
    args = parser.parse_args()
    import workbench

    with tempfile.TemporaryDirectory() as tmp:
        export_base(args.base, Path(tmp))
        sys.path.insert(0, tmp)
        base = importlib.import_module("workbench_base")
        libs = {"base": base, "this": workbench}
        runs = {"base": build(base, args.preset, args.size), "this": build(workbench, args.preset, args.size)}
        runs["base"][0].load_state_dict(runs["this"][0].state_dict())
        if args.inference:
            for model, *_ in runs.values():
                model.eval()
        times: dict[str, list[float]] = {"base": [], "this": []}
        for i in range(args.steps + 2):  # the first two steps of each are warm-up
            outputs = {}
            for name in (("base", "this") if i % 2 == 0 else ("this", "base")):
                model, optimizer, batches, clip = runs[name]
                start = time.perf_counter()
                if args.inference:
                    outputs[name] = raw_forward(libs[name], model, batches[i % len(batches)])
                else:
                    losses = step(model, optimizer, batches[i % len(batches)], clip, i)
                times[name].append(time.perf_counter() - start)
                if i == 0 and not args.inference:
                    print(f"{name}: first-step losses {sum(losses.values()):.6f} (sum of {len(losses)} terms)")
            if i == 0 and args.inference:
                same = all(torch.equal(a, b) for a, b in zip(outputs["base"], outputs["this"]))
                worst = max((a - b).abs().max().item() for a, b in zip(outputs["base"], outputs["this"]))
                print(f"raw outputs of both: {'bit-identical' if same else f'differ, max abs {worst:.3g}'}")
    a, b = statistics.median(times["base"][2:]), statistics.median(times["this"][2:])
    size = 128 if args.preset == "demo" else args.size  # the demo's batches are 128^2 whatever --size says
    what = f"inference (raw forward, {size}^2)" if args.inference else "train step"
    print(f"{args.preset} {what}, median of {args.steps} alternating steps, torch threads "
          f"{torch.get_num_threads()}: base {args.base} {a * 1000:.1f} ms, this checkout {b * 1000:.1f} ms, "
          f"this / base {b / a:.3f}")


if __name__ == "__main__":
    main()
