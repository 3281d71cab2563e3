"""Where a train step and an inference go: per component, forward and backward, plus the top operators.

    python bench/profile_step.py [--preset coco_r50|tiny] [--size 256] [--batch 2] [--repeat 3] [--markdown]

Forward spans are wall-clock times of each component's own forward (backbone, pixel decoder, each decoder
layer's cross-attention / self-attention / FFN and its heads, matcher, the criterion's loss terms) taken with
hooks around the real train step. Backward is split by freezing: full backward, then with the backbone
frozen (its backward is skipped), then with the pixel decoder frozen too; the differences are the backbone's
and the pixel decoder's backward, the rest belongs to the decoder and the losses. Inference is split the
same way as forward, plus post-processing. The top operators come from torch.profiler over one train step
(self CPU time). Medians over `--repeat` steps after one warm-up step.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

import workbench as wb
from workbench.harness.synthetic import synthetic_batch

ATTRIBUTES = {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"]}


class Spans:
    """Accumulates wall-clock seconds per label for one step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.handles = []

    @contextmanager
    def span(self, label: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] += time.perf_counter() - start

    def hook_module(self, module: torch.nn.Module, label: str) -> None:
        starts: list[float] = []

        def pre(_m, _i):
            starts.append(time.perf_counter())

        def post(_m, _i, _o):
            self.seconds[label] += time.perf_counter() - starts.pop()

        self.handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def wrap_method(self, obj, name: str, label: str) -> None:
        original = getattr(obj, name)

        spans = self

        class Wrapped:
            """Times each call; every other attribute is the original's (the matcher's `pad`, say)."""

            def __call__(self, *args, **kwargs):
                with spans.span(label):
                    return original(*args, **kwargs)

            def __getattr__(self, attr):
                return getattr(original, attr)

        setattr(obj, name, Wrapped())
        self.handles.append(_Restore(obj, name, original))

    def reset(self) -> None:
        self.seconds = defaultdict(float)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class _Restore:
    def __init__(self, obj, name, original) -> None:
        self.obj, self.name, self.original = obj, name, original

    def remove(self) -> None:
        setattr(self.obj, self.name, self.original)


def instrument(model: wb.model.MultiTaskMask2Former) -> Spans:
    spans = Spans()
    spans.hook_module(model.backbone, "backbone")
    spans.hook_module(model.pixel_decoder, "pixel decoder")
    dec = model.decoder
    for i in range(dec.num_layers):
        spans.hook_module(dec.cross_attention[i], "decoder: cross-attention (all layers)")
        spans.hook_module(dec.self_attention[i], "decoder: self-attention (all layers)")
        spans.hook_module(dec.ffn[i], "decoder: FFN (all layers)")
    spans.wrap_method(dec, "predict", "decoder: heads + masks + attention masks (all stages)")
    crit = model.criterion
    spans.wrap_method(crit, "matcher", "matcher (all stages)")
    for term in ("loss_labels", "loss_attributes", "loss_masks"):
        spans.wrap_method(crit, term, f"criterion: {term} (all stages)")
    spans.wrap_method(model, "postprocess", "post-processing")
    return spans


def _set_frozen(module: torch.nn.Module, frozen: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(not frozen)


def profile(preset: str, size: int, batch: int, repeat: int) -> dict:
    torch.manual_seed(0)
    cfg = getattr(wb.ModelConfig, preset)(num_classes=3, attributes=ATTRIBUTES)
    model = wb.build_model(cfg).train()
    items = synthetic_batch(cfg.num_classes, {a.name: a.num_values for a in cfg.attributes}, batch=batch, size=size)
    # fused, as the trainer builds it
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    spans = instrument(model)

    def train_step(step: int) -> dict[str, float]:
        spans.reset()
        start = time.perf_counter()
        losses = model(items, generator=torch.Generator().manual_seed(step))
        forward = time.perf_counter() - start
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        t = time.perf_counter()
        total.backward()
        backward = time.perf_counter() - t
        t = time.perf_counter()
        opt.step()
        out = dict(spans.seconds)
        out.update({"forward (all)": forward, "backward (all)": backward, "optimizer step": time.perf_counter() - t,
                    "train step": time.perf_counter() - start})
        return out

    def backward_only(step: int) -> float:
        losses = model(items, generator=torch.Generator().manual_seed(step))
        total = sum(losses.values())
        t = time.perf_counter()
        total.backward()
        elapsed = time.perf_counter() - t
        model.zero_grad(set_to_none=True)
        return elapsed

    rows: dict[str, list[float]] = defaultdict(list)
    for step in range(repeat + 1):
        r = train_step(step)
        if step:
            for k, v in r.items():
                rows[k].append(v)
    # backward split by freezing (parameters only: the step itself is unchanged)
    backward_parts: dict[str, list[float]] = defaultdict(list)
    for step in range(repeat + 1):
        full = backward_only(step)
        _set_frozen(model.backbone, True)
        no_backbone = backward_only(step)
        _set_frozen(model.pixel_decoder, True)
        decoder_only = backward_only(step)
        _set_frozen(model.backbone, False)
        _set_frozen(model.pixel_decoder, False)
        if step:
            backward_parts["backward: backbone"].append(full - no_backbone)
            backward_parts["backward: pixel decoder"].append(no_backbone - decoder_only)
            backward_parts["backward: decoder + losses"].append(decoder_only)
    model.eval()
    infer: dict[str, list[float]] = defaultdict(list)
    with torch.no_grad():
        for step in range(repeat + 1):
            spans.reset()
            start = time.perf_counter()
            model(items)
            r = dict(spans.seconds)
            r["inference"] = time.perf_counter() - start
            if step:
                for k, v in r.items():
                    infer[k].append(v)
    model.train()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        train_step(repeat + 1)
    spans.remove()
    med = lambda d: {k: statistics.median(v) for k, v in d.items()}  # noqa: E731
    return {"train": med(rows), "backward": med(backward_parts), "inference": med(infer),
            "ops": prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)}


def print_report(preset: str, size: int, batch: int, result: dict) -> None:
    train, infer = result["train"], result["inference"]
    step = train["train step"]
    print(f"\n### `{preset}`, batch {batch} x {size}^2, torch threads {torch.get_num_threads()}\n")
    print("| train step part | ms | share of step |\n| --- | ---: | ---: |")
    order = ["backbone", "pixel decoder", "decoder: cross-attention (all layers)",
             "decoder: self-attention (all layers)", "decoder: FFN (all layers)",
             "decoder: heads + masks + attention masks (all stages)", "matcher (all stages)",
             "criterion: loss_labels (all stages)", "criterion: loss_attributes (all stages)",
             "criterion: loss_masks (all stages)", "forward (all)"]
    for k in order:
        if k in train:
            print(f"| forward: {k} | {train[k] * 1e3:.1f} | {train[k] / step:.0%} |")
    for k, v in result["backward"].items():
        print(f"| {k} | {v * 1e3:.1f} | {v / step:.0%} |")
    for k in ("backward (all)", "optimizer step", "train step"):
        print(f"| {k} | {train[k] * 1e3:.1f} | {train[k] / step:.0%} |")
    total = infer["inference"]
    print("\n| inference part | ms | share |\n| --- | ---: | ---: |")
    for k in ["backbone", "pixel decoder", "decoder: cross-attention (all layers)",
              "decoder: self-attention (all layers)", "decoder: FFN (all layers)",
              "decoder: heads + masks + attention masks (all stages)", "post-processing", "inference"]:
        if k in infer:
            print(f"| {k} | {infer[k] * 1e3:.1f} | {infer[k] / total:.0%} |")
    print("\nTop operators over one train step (torch.profiler, self CPU time):\n")
    print("```\n" + result["ops"] + "\n```")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="coco_r50", choices=["coco_r50", "tiny"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print_report(args.preset, args.size, args.batch, profile(args.preset, args.size, args.batch, args.repeat))


if __name__ == "__main__":
    main()
