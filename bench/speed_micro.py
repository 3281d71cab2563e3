"""Issue 14's hot spots in isolation: before vs after, single-thread CPU time, interleaved in alternating order.

    PYTHONPATH=. python bench/speed_micro.py [--repeat 7] [--baseline-extension OLD/workbench/_C*.so]

`time.thread_time` on one torch thread counts only this process's CPU work, so the ratios hold on a machine
that other jobs load (wall-clock ones do not). Each row also states whether results are bit-identical or how
far apart they are. Shapes are coco_r50's: 100 queries, 12,544 points, 3 targets, 64^2 mask logits (256^2
images), 44 M parameters; with `--baseline-extension` (workbench/_C*.so built from the code before), also the
CPU kernel's forward at bench/ops.py's 512^2 shapes. The last row is the matcher's BCE cost: upstream's two BCE
passes and two products against ours (one softplus pass and one product, issue 14's second pass).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import workbench as wb
from workbench.model.matcher import batch_sigmoid_ce_cost
from workbench.model.points import point_sample
from workbench.model.postprocess import _masks_and_scores

from speed_ab import load_baseline_extension, masks_and_scores_before, point_sample_before  # bench/ is sys.path[0]


def ab(before, after, repeat: int) -> tuple[float, float]:
    """Median thread-CPU seconds of before() and after(), run in ABBA order after one warm-up each."""
    before(), after()
    times = {0: [], 1: []}
    for r in range(repeat):
        for which in ((0, 1) if r % 2 else (1, 0)):
            fn = (before, after)[which]
            start = time.thread_time()
            fn()
            times[which].append(time.thread_time() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def row(name: str, before_after: tuple[float, float], results: str) -> None:
    b, a = before_after
    print(f"| {name} | {b * 1e3:.1f} ms | {a * 1e3:.1f} ms | {a / b:.2f}x | {results} |")


def ce_cost_before(inputs, targets):
    """Upstream's form of matcher.batch_sigmoid_ce_cost: BCE against 1 and against 0, two products."""
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.T + neg @ (1 - targets).T) / inputs.shape[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--baseline-extension", help="workbench/_C*.so built from the code before the change")
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    print("| hot spot | before | after | after / before | results |\n| --- | ---: | ---: | ---: | --- |")

    model = wb.build_model(wb.ModelConfig.coco_r50(num_classes=3))
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.randn(p.shape, generator=g) * 1e-2 for p in params]
    copies = [[p.detach().clone() for p in params] for _ in range(2)]
    for c in copies:
        for p, gr in zip(c, grads):
            p.grad = gr
    plain = torch.optim.AdamW(copies[0], lr=1e-4, weight_decay=0.05)
    fused = torch.optim.AdamW(copies[1], lr=1e-4, weight_decay=0.05, fused=True)
    times = ab(plain.step, fused.step, args.repeat)
    diff = max((a - b).abs().max().item() for a, b in zip(*copies))
    row(f"AdamW step, {sum(p.numel() for p in params) / 1e6:.0f} M parameters: default -> fused", times,
        f"max abs. parameter difference {diff:.1e} after {2 * args.repeat + 1} steps")
    del model, params, grads, copies, plain, fused

    maps = torch.randn(100, 1, 64, 64, generator=g)
    coords = torch.rand(1, 12544, 2, generator=g).expand(100, -1, -1)
    same = torch.equal(point_sample_before(maps, coords), point_sample(maps, coords))
    row("matcher: point_sample of 100 queries at one shared set of 12,544 points",
        ab(lambda: point_sample_before(maps, coords), lambda: point_sample(maps, coords), args.repeat),
        "bit-identical" if same else "DIFFERENT")

    for classes, size in ((3, 256), (80, 256), (3, 512)):
        logits = torch.randn(100, size // 4, size // 4, generator=g) * 3
        probs = torch.randn(100, classes + 1, generator=g).softmax(-1)[:, :-1]
        query_index = probs.flatten().topk(100)[1] // classes
        call = (logits, query_index, (size, size), (size, size), (size, size))
        old, new = masks_and_scores_before(*call), _masks_and_scores(*call)
        same = torch.equal(old[0], new[0]) and torch.equal(old[1], new[1])
        row(f"post-processing masks + scores: top 100 of 100 queries x {classes} classes "
            f"({query_index.unique().numel()} distinct), {size}^2",
            ab(lambda: masks_and_scores_before(*call), lambda: _masks_and_scores(*call), args.repeat),
            "bit-identical" if same else "DIFFERENT")

    if args.baseline_extension:
        import workbench._C as current
        from ops import make_inputs

        baseline = load_baseline_extension(args.baseline_extension)
        for locations in ("local", "uniform"):
            inputs = make_inputs("cpu", locations)
            same = torch.equal(baseline.ms_deform_attn_forward(*inputs, 64),
                               current.ms_deform_attn_forward(*inputs, 64))
            row(f"CPU kernel forward, 512^2 shapes, {locations} locations",
                ab(lambda: baseline.ms_deform_attn_forward(*inputs, 64),
                   lambda: current.ms_deform_attn_forward(*inputs, 64), args.repeat),
                "bit-identical" if same else "DIFFERENT")

    x = torch.randn(100, 12544, generator=g) * 3
    t = (torch.rand(3, 12544, generator=g) > 0.6).float()
    rel = ((batch_sigmoid_ce_cost(x, t) - ce_cost_before(x, t)).abs() / ce_cost_before(x, t).abs()).max()
    row("matcher: batch_sigmoid_ce_cost, two BCE passes and two products -> softplus(x) - t x in one product",
        ab(lambda: ce_cost_before(x, t), lambda: batch_sigmoid_ce_cost(x, t), args.repeat),
        f"max relative difference {rel.item():.1e}")


if __name__ == "__main__":
    main()
