"""Train-step and inference time of the whole model on CPU.

    python bench/model.py [--preset coco_r50|tiny] [--size 256] [--batch 2] [--steps 3]
    python bench/model.py --vs-transformers [--size 512] [--batch 2] [--steps 3] [--models coco_r50,coco_swin_t]
                          [--amp bf16]
    python bench/model.py --compile [--steps 10]

Prints seconds per step for the requested preset, and the same for the tiny preset measured in the same run
as a baseline (ratio printed), so figures from different machines can be compared by their ratio.

--vs-transformers: each of our presets side by side with transformers' Mask2FormerForUniversalSegmentation
of the same size (same backbone, 100 queries, 6 encoder layers, 9 decoder layers = transformers'
decoder_layers 10, 80 classes, no attribute heads on either), both randomly initialised, on the same batch:
median train step (forward with losses, backward, AdamW step: fused for ours, as our trainer builds it, torch's
default for transformers') and median inference, and our time / theirs. Then, from the same run:
- the arithmetic floor: our model's convolution and matrix-product FLOPs (torch's FlopCounterMode, forward for
  inference, forward + backward for a train step) at the best float32 throughput timed here (a 2048^3 matrix
  product, a 3x3 and a 1x1 convolution of the pixel decoder's shapes: oneDNN's convolutions run faster than
  MKL's product on some CPUs), as times and as ratios to transformers' measured times. A float32
  implementation doing these products at these kernels' speed cannot be faster than the floor;
- the kernel split: one train step and one inference of each model under torch.profiler, the operators' own
  time inside convolutions, matrix products and attention kernels (oneDNN, MKL: the same kernels on both
  sides) against everything else. Our kernels' time is what no float32 change outside those kernels can
  remove; the line says how it compares with transformers' kernels and median time, and what would be left
  for all of our other work at 0.5x of their median (negative: 0.5x needs faster or fewer kernels);
- the demo's tiny model (`workbench.engine.demo.demo_config`: batch 8 x 128^2): train steps per second (model,
  clipping and fused AdamW; data loading not included) and the implied time of its 2,000 steps.
--amp bf16 adds, per preset, both train steps under CPU autocast in bfloat16 (`solver.amp: bf16`; it changes the
numbers): ours and transformers', against each other and against their float32 steps.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

import workbench as wb
from workbench.harness.synthetic import synthetic_batch
from workbench.ops import backend_info

ATTRIBUTES = {"color": ["red", "green", "blue"], "size": ["small", "medium", "large"]}


def time_train_step(cfg: wb.ModelConfig, size: int, batch: int, steps: int,
                    ops_backend: str = "auto", bf16: bool = False) -> tuple[float, float]:
    """Median train step and inference with post-processing of our model on a synthetic batch."""
    items = synthetic_batch(cfg.num_classes, {a.name: a.num_values for a in cfg.attributes}, batch=batch, size=size)
    train, _, infer = our_step_functions(cfg, items, ops_backend=ops_backend, bf16=bf16)
    return _median_time(train, steps), _median_time(infer, steps)


def time_raw_forward(cfg: wb.ModelConfig, items: list[dict], steps: int) -> float:
    """Median of our eval-mode `forward_raw` alone (no post-processing): what transformers' inference times."""
    return _median_time(our_step_functions(cfg, items)[1], steps)


def _median_time(fn, steps: int) -> float:
    """Median wall-clock seconds of `steps` calls of fn after one warm-up call."""
    fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def transformers_config(preset: str, cfg: wb.ModelConfig):
    """transformers' config of the same size as our preset `preset` (the backbones it has an equivalent of)."""
    from transformers import Mask2FormerConfig, ResNetConfig, SwinConfig

    stages = ["stage1", "stage2", "stage3", "stage4"]
    if preset in ("coco_r50", "coco_r101"):
        backbone = ResNetConfig(depths=[3, 4, 6 if preset == "coco_r50" else 23, 3], layer_type="bottleneck",
                                hidden_sizes=[256, 512, 1024, 2048], embedding_size=64, out_features=stages)
    elif preset.startswith("coco_swin_"):
        from workbench.model.backbones.swin import SWIN_VARIANTS

        v = SWIN_VARIANTS[cfg.backbone]
        backbone = SwinConfig(embed_dim=v.embed_dim, depths=list(v.depths), num_heads=list(v.num_heads),
                              window_size=cfg.backbone_window_size, drop_path_rate=cfg.backbone_drop_path_rate,
                              out_features=stages)
    else:
        raise ValueError(f"no transformers equivalent wired for preset {preset!r}")
    return Mask2FormerConfig(
        backbone_config=backbone, feature_size=cfg.hidden_dim, mask_feature_size=cfg.mask_dim,
        hidden_dim=cfg.hidden_dim, encoder_feedforward_dim=cfg.enc_dim_feedforward, encoder_layers=cfg.enc_layers,
        decoder_layers=cfg.dec_layers + 1, num_attention_heads=cfg.nheads, dim_feedforward=cfg.dim_feedforward,
        num_queries=cfg.num_queries, num_labels=cfg.num_classes, train_num_points=cfg.loss.num_points)


def time_transformers(hf_cfg, items: list[dict], steps: int, bf16: bool = False) -> tuple[float, float]:
    """Median train step and inference of transformers' model on the batch `items` (normalised as ours)."""
    train, infer = transformers_step_functions(hf_cfg, items, bf16=bf16)
    return _median_time(train, steps), _median_time(infer, steps)


def _transformers_inputs(items: list[dict]):
    """(pixel_values, mask_labels, class_labels) for transformers: the images normalised as ours."""
    mean = torch.tensor(wb.ModelConfig.tiny().pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(wb.ModelConfig.tiny().pixel_std).view(1, 3, 1, 1)
    pixels = (torch.stack([it["image"] for it in items]).float() - mean) / std
    masks = [torch.as_tensor(it["instances"]["masks"]).float() for it in items]
    labels = [torch.as_tensor(it["instances"]["labels"]).long() for it in items]
    return pixels, masks, labels


def peak_gflops(repeat: int = 5, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """This machine's throughput now in `dtype`, in GFLOP/s, best of `repeat`: a 2048^3 matrix product, and
    oneDNN's 3x3 (256 -> 256 channels, 2 x 64^2: the pixel decoder's output convolution) and 1x1 (channels-last,
    2 x 64^2) convolutions."""
    import torch.nn.functional as F

    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    x = torch.randn(2, 256, 64, 64, dtype=dtype)
    x_last = x.contiguous(memory_format=torch.channels_last)
    w3, w1 = torch.randn(256, 256, 3, 3, dtype=dtype), torch.randn(256, 256, 1, 1, dtype=dtype)
    kernels = {"matmul 2048^3": (lambda: a @ b, 2 * n ** 3),
               "conv 3x3": (lambda: F.conv2d(x, w3, padding=1), 2 * 2 * 64 * 64 * 256 * 256 * 9),
               "conv 1x1 channels-last": (lambda: F.conv2d(x_last, w1), 2 * 2 * 64 * 64 * 256 * 256)}
    return {name: flop / min(_median_time(fn, 1) for _ in range(repeat)) / 1e9
            for name, (fn, flop) in kernels.items()}


def model_gflop(cfg: wb.ModelConfig, items: list[dict]) -> tuple[float, float]:
    """(inference, train step) GFLOP of our model on `items`: convolutions and matrix products, counted by
    torch's FlopCounterMode (elementwise ops, sampling and the optimizer are not counted: the floor is low)."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = wb.build_model(cfg).eval()
    counter = FlopCounterMode(display=False)
    with counter:  # not under no_grad: the counter's module tracker hooks gradients (same FLOPs either way)
        model(items)
    infer = counter.get_total_flops() / 1e9
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        losses = model(items, generator=torch.Generator().manual_seed(0))
        sum(losses.values()).backward()
    return infer, counter.get_total_flops() / 1e9


def print_floor(preset: str, cfg: wb.ModelConfig, items: list[dict], hf_train: float, hf_infer: float,
                peak: float) -> None:
    infer_gflop, train_gflop = model_gflop(cfg, items)
    infer_floor, train_floor = infer_gflop / peak, train_gflop / peak
    print(f"floor {preset:<8}: {infer_gflop:.1f} GFLOP inference, {train_gflop:.1f} GFLOP train step at "
          f"{peak:.0f} GFLOP/s -> >= {infer_floor * 1000:.0f} ms inference ({infer_floor / hf_infer:.2f}x "
          f"transformers'), >= {train_floor * 1000:.0f} ms train step ({train_floor / hf_train:.2f}x)")


def _is_product_kernel(name: str) -> bool:
    """Operators that are a convolution, a matrix product or a fused attention kernel (their own time)."""
    return (name in {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::_addmm_activation",
                     "aten::mkldnn_linear", "aten::mkldnn_linear_backward", "aten::mkldnn_convolution",
                     "aten::convolution_backward", "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward"}
            or name.startswith("aten::_scaled_dot_product_flash_attention_for_cpu"))


def kernel_split(fn) -> tuple[float, float]:
    """(product kernels' own seconds, wall-clock seconds) of one call of fn under torch.profiler, after two
    warm-up calls (the first train step also builds the optimizer's state). The wall clock includes the Python
    between operators and the Hungarian matching; the profiler's bookkeeping inflates it a little, the
    kernels' time it does not."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
    kernels = sum(e.self_cpu_time_total for e in prof.key_averages() if _is_product_kernel(e.key))
    return kernels / 1e6, wall


def our_step_functions(cfg: wb.ModelConfig, items: list[dict], ops_backend: str = "auto", bf16: bool = False,
                       checkpoint_activations: str = "none", device: str = "cpu"):
    """(train step, raw forward, inference with post-processing) of our model on `items`. A train step is forward
    with losses (under CPU bf16 autocast with `bf16`, as the trainer's solver.amp), backward and AdamW, fused
    as our trainer builds it; each call draws its points from the next seed. `checkpoint_activations` as
    solver.checkpoint_activations."""
    from workbench.model.meta_arch import pad_images
    from workbench.ops import MSDeformAttn

    torch.manual_seed(0)
    model = wb.build_model(cfg).to(device)
    model.checkpoint_activations(checkpoint_activations)
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.backend = ops_backend
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    images = pad_images([it["image"] for it in items], cfg.size_divisibility, cfg.pixel_mean)
    seeds = itertools.count()

    def train() -> None:
        model.train()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            losses = model(items, generator=torch.Generator().manual_seed(next(seeds)))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()

    def raw() -> None:
        model.eval()
        with torch.no_grad():
            model.forward_raw(images)

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(items)

    return train, raw, infer


def transformers_step_functions(hf_cfg, items: list[dict], bf16: bool = False, device: str = "cpu"):
    """(train step, forward) of transformers' model on `items`: AdamW at torch's default (not fused)."""
    from transformers import Mask2FormerForUniversalSegmentation

    torch.manual_seed(0)
    model = Mask2FormerForUniversalSegmentation(hf_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixels, masks, labels = _transformers_inputs(items)
    pixels, masks, labels = pixels.to(device), [m.to(device) for m in masks], [t.to(device) for t in labels]

    def train() -> None:
        model.train()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(pixel_values=pixels, mask_labels=masks, class_labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(pixel_values=pixels)

    return train, infer


def print_kernel_split(preset: str, cfg: wb.ModelConfig, items: list[dict], hf_train: float,
                       hf_infer: float) -> None:
    ours = our_step_functions(cfg, items)
    theirs = transformers_step_functions(transformers_config(preset, cfg), items)
    for what, ours_fn, theirs_fn, hf_median in (("train step", ours[0], theirs[0], hf_train),
                                                 ("inference (raw forward)", ours[1], theirs[1], hf_infer)):
        ok, ot = kernel_split(ours_fn)
        tk, tt = kernel_split(theirs_fn)
        if tk == 0:
            raise RuntimeError("no convolution or matrix-product operator in transformers' profile: the operator "
                               "names in _is_product_kernel are out of date for this torch")
        print(f"kernels {preset:<8} {what}: ours {ok * 1000:.0f} ms in convolutions/products/attention of "
              f"{ot * 1000:.0f} ms (profiled call), rest {(ot - ok) * 1000:.0f} ms; transformers {tk * 1000:.0f} "
              f"of {tt * 1000:.0f} ms, rest {(tt - tk) * 1000:.0f} ms; kernels ours/theirs {ok / tk:.2f}x; our "
              f"kernels alone = {ok / hf_median:.2f}x their median; at 0.5x of their median "
              f"({0.5 * hf_median * 1000:.0f} ms) all our other work would have {(0.5 * hf_median - ok) * 1000:.0f} "
              f"ms (ours now: {(ot - ok) * 1000:.0f})")


def demo_train_step(compile_model: bool = False):
    """A function running one train step of the demo's model and solver on synthetic batches like the demo's
    (8 x 128^2, 3-4 instances), returning the summed loss. compile_model: as `solver.compile: true` (the
    backbone and the decoder compiled in place)."""
    from pathlib import Path

    from workbench.engine.demo import demo_config
    from workbench.engine.optim import param_groups

    cfg = demo_config(Path("unused"))
    torch.manual_seed(0)
    model = wb.build_model(cfg.model).train()
    if compile_model:
        model.backbone.compile()
        model.decoder.compile()
    opt = torch.optim.AdamW(param_groups(model, cfg.solver, 1e-3), lr=1e-3, weight_decay=cfg.solver.weight_decay,
                            fused=True)
    attrs = {a.name: a.num_values for a in cfg.model.attributes}
    batches = [synthetic_batch(cfg.model.num_classes, attrs, batch=cfg.solver.batch_size, size=128,
                               num_targets=3 + s % 2, seed=s) for s in range(4)]
    counter = itertools.count()

    def step() -> float:
        i = next(counter)
        losses = model(batches[i % len(batches)], generator=torch.Generator().manual_seed(i))
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.solver.clip_grad_norm)
        opt.step()
        return total.item()

    return step


def demo_steps_per_second(steps: int) -> None:
    from workbench.engine.demo import DEMO_MAX_ITER

    seconds = _median_time(demo_train_step(), steps)
    print(f"demo tiny model (batch 8 x 128^2): {1 / seconds:.2f} train steps/s ({seconds * 1000:.1f} ms/step; "
          f"{DEMO_MAX_ITER} steps = {DEMO_MAX_ITER * seconds / 60:.2f} min of model time, data loading excluded)")


def compiled_versus_eager(steps: int) -> None:
    """`solver.compile: true` on the demo's model: the first step (compilation) and then steady-state steps,
    alternating with an eager model of the same weights, and the first steps' losses of both."""
    eager, compiled = demo_train_step(), demo_train_step(compile_model=True)
    start = time.perf_counter()
    eager_loss = eager()
    eager_first = time.perf_counter() - start
    start = time.perf_counter()
    compiled_loss = compiled()
    compiled_first = time.perf_counter() - start
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for i in range(steps + 1):  # one more warm-up step each (recompilation for the other batch sizes)
        for name, fn in ((("eager", eager), ("compiled", compiled)) if i % 2 else
                         (("compiled", compiled), ("eager", eager))):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    e, c = statistics.median(times["eager"][1:]), statistics.median(times["compiled"][1:])
    print(f"solver.compile on the demo model: first step {compiled_first:.1f} s compiled vs {eager_first:.2f} s "
          f"eager; "
          f"then {c * 1000:.1f} vs {e * 1000:.1f} ms per step ({c / e:.2f}x, medians of {steps} alternating steps); "
          f"first-step loss {compiled_loss:.6f} vs {eager_loss:.6f}")


def versus_transformers(presets: list[str], size: int, batch: int, steps: int, amp: str = "off") -> None:
    peaks = peak_gflops()
    peak = max(peaks.values())
    print("float32 throughput here (best of 5): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
          + f" GFLOP/s; the floor uses {peak:.0f}")
    if amp == "bf16":
        print("bf16 throughput here (best of 5): "
              + ", ".join(f"{k} {v:.0f}" for k, v in peak_gflops(dtype=torch.bfloat16).items()) + " GFLOP/s")
    for preset in presets:
        cfg = getattr(wb.ModelConfig, preset)(num_classes=80)
        items = synthetic_batch(cfg.num_classes, {}, batch=batch, size=size)
        ours_train, ours_infer = time_train_step(cfg, size, batch, steps)
        hf_train, hf_infer = time_transformers(transformers_config(preset, cfg), items, steps)
        ours_raw = time_raw_forward(cfg, items, steps)
        print(f"{preset:<14} ours        : train step {ours_train * 1000:8.1f} ms   inference "
              f"{ours_infer * 1000:8.1f} ms (raw forward without post-processing, as theirs: {ours_raw * 1000:.1f} ms)")
        print(f"{preset:<14} transformers: train step {hf_train * 1000:8.1f} ms   inference {hf_infer * 1000:8.1f} ms")
        print(f"ratio ours/transformers ({preset}): train {ours_train / hf_train:.2f}x, inference "
              f"{ours_infer / hf_infer:.2f}x (batch {batch} x {size}^2, CPU, median of {steps} steps)")
        print_floor(preset, cfg, items, hf_train, hf_infer, peak)
        print_kernel_split(preset, cfg, items, hf_train, hf_infer)
        if amp == "bf16":
            ours_bf16, _ = time_train_step(cfg, size, batch, steps, bf16=True)
            hf_bf16, _ = time_transformers(transformers_config(preset, cfg), items, steps, bf16=True)
            print(f"{preset:<14} bf16 autocast train step: ours {ours_bf16 * 1000:.1f} ms "
                  f"({ours_bf16 / ours_train:.2f}x our float32), transformers {hf_bf16 * 1000:.1f} ms "
                  f"({hf_bf16 / hf_train:.2f}x theirs); ours bf16 / theirs float32 {ours_bf16 / hf_train:.2f}x, "
                  f"ours bf16 / theirs bf16 {ours_bf16 / hf_bf16:.2f}x")
    demo_steps_per_second(max(steps, 10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="coco_r50", choices=["coco_r50", "tiny"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--vs-transformers", action="store_true",
                        help="our presets against transformers' model of the same size (use --size 512)")
    parser.add_argument("--models", default="coco_r50,coco_swin_t",
                        help="comma-separated presets for --vs-transformers (coco_r50, coco_r101, coco_swin_t..l)")
    parser.add_argument("--amp", default="off", choices=["off", "bf16"],
                        help="--vs-transformers: also time both train steps under CPU bf16 autocast")
    parser.add_argument("--compile", action="store_true",
                        help="solver.compile on the demo's model against eager: compilation cost and steady state")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, ops backends {backend_info()}")
    if args.compile:
        compiled_versus_eager(max(args.steps, 10))
        return
    if args.vs_transformers:
        versus_transformers(args.models.split(","), args.size, args.batch, args.steps, args.amp)
        return
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
