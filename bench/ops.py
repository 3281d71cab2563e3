"""Multi-scale deformable attention: compiled kernels vs the PyTorch reference, measured in the same run.

    python bench/ops.py [--repeat 5] [--locations local|uniform] [--skip-memory]

Shapes are Mask2Former's at a 512^2 input: N=2, levels (64,64),(32,32),(16,16) -> Lq = S = 5376 queries,
M=8 heads, D=32 channels, P=4 points. Locations default to "local": each query's reference point (its pixel
centre) plus offsets of a few pixels, as in the model; "uniform" scatters them over the whole map (no cache
reuse, a worst case for the kernels).

Targets (issue 3): CPU fwd+bwd >= 8x faster than the reference on 2 cores, with no more peak memory; on a GPU,
faster than the reference and the forward within 2x of the memory-bandwidth bound. Peak memory is the growth
of the process's max RSS (CPU) or torch.cuda.max_memory_allocated (GPU) during one fwd+bwd, each backend in a
fresh subprocess.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from workbench.ops import backend_info, ms_deform_attn

N, M, D, P = 2, 8, 32, 4
LEVELS = [(64, 64), (32, 32), (16, 16)]


def make_inputs(device: str, locations: str = "local", dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(LEVELS)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    s = int(areas.sum())
    lq, num_levels = s, len(LEVELS)
    value = torch.randn(N, s, M, D, generator=g)
    if locations == "local":
        centres = []
        for h, w in LEVELS:
            ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
            centres.append(torch.stack([xs.flatten(), ys.flatten()], -1))
        ref = torch.cat(centres)  # (Lq, 2): the encoder's queries are its pixels
        pixel = 1.0 / shapes.flip(-1).float()  # (L, 2) one pixel in normalised (x, y)
        offsets = torch.randn(N, lq, M, num_levels, P, 2, generator=g) * 2.0 * pixel[None, None, None, :, None, :]
        loc = ref[None, :, None, None, None, :] + offsets
    else:
        loc = torch.rand(N, lq, M, num_levels, P, 2, generator=g)
    weights = torch.rand(N, lq, M, num_levels, P, generator=g).softmax(-1)
    to = dict(device=device, dtype=dtype)
    return value.to(**to), shapes.to(device), starts.to(device), loc.contiguous().to(**to), weights.to(**to)


def timed(fn, device: str, repeat: int) -> float:
    """Best of `repeat` runs in milliseconds (after one warm-up); the best is the least disturbed by neighbours."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def fwd_and_fwdbwd(backend: str, device: str, locations: str, repeat: int) -> tuple[float, float]:
    value, shapes, starts, loc, weights = make_inputs(device, locations)
    grad = torch.randn(N, loc.shape[1], M * D, device=device)
    with torch.no_grad():
        fwd = timed(lambda: ms_deform_attn(value, shapes, starts, loc, weights, backend=backend), device, repeat)
    leaves = [t.clone().requires_grad_(True) for t in (value, loc, weights)]

    def step():
        for t in leaves:
            t.grad = None
        ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2], backend=backend).backward(grad)

    return fwd, timed(step, device, repeat)


def peak_memory_mib(backend: str, device: str, locations: str) -> float:
    """Growth of peak memory during one fwd+bwd, measured in a fresh process so backends do not share peaks."""
    code = (f"import sys; sys.argv=['x']; sys.path.insert(0, 'bench'); import ops; "
            f"print(ops._measure_peak({backend!r}, {device!r}, {locations!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _measure_peak(backend: str, device: str, locations: str) -> float:
    value, shapes, starts, loc, weights = make_inputs(device, locations)
    leaves = [t.clone().requires_grad_(True) for t in (value, loc, weights)]
    grad = torch.randn(N, loc.shape[1], M * D, device=device)
    del value, loc, weights
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_kib("VmRSS")
        _reset_peak_rss()
    ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2], backend=backend).backward(grad)
    if device == "cuda":
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    return (_rss_kib("VmHWM") - before) / 1024


def _rss_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process. Not ru_maxrss: Linux carries the parent's RSS at fork
    into the child's ru_maxrss, which hides any peak below it."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # not Linux: best effort


def _reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def copy_bandwidth_gbs() -> float:
    """Achievable device-to-device bandwidth (read + write), measured here as the yardstick for the forward."""
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = timed(lambda: y.copy_(x), "cuda", 20)
    return 2 * x.numel() / (ms * 1e-3) / 1e9


def forward_bytes() -> int:
    """Minimum traffic of the forward: read value, locations and weights once, write the output (float32)."""
    lq = sum(h * w for h, w in LEVELS)
    return 4 * (N * lq * M * D + N * lq * M * len(LEVELS) * P * 3 + N * lq * M * D)


def report(device: str, args) -> dict:
    kernel = device  # the compiled backend is named after the device
    k_fwd, k_fb = fwd_and_fwdbwd(kernel, device, args.locations, args.repeat)
    r_fwd, r_fb = fwd_and_fwdbwd("reference", device, args.locations, max(2, args.repeat // 2))
    row = {"device": device, "kernel_fwd_ms": k_fwd, "kernel_fwdbwd_ms": k_fb, "reference_fwd_ms": r_fwd,
           "reference_fwdbwd_ms": r_fb, "fwd_speedup": r_fwd / k_fwd, "fwdbwd_speedup": r_fb / k_fb}
    print(f"\n{device.upper()}  ({torch.get_num_threads()} threads, locations={args.locations})")
    print(f"  {'':12s}{'forward ms':>12s}{'fwd+bwd ms':>12s}")
    print(f"  {'reference':12s}{r_fwd:12.1f}{r_fb:12.1f}")
    print(f"  {kernel + ' kernel':12s}{k_fwd:12.1f}{k_fb:12.1f}")
    print(f"  {'speed-up':12s}{r_fwd / k_fwd:11.1f}x{r_fb / k_fb:11.1f}x   (target fwd+bwd >= "
          f"{'8x' if device == 'cpu' else '1x'})")
    if not args.skip_memory:
        k_mem = peak_memory_mib(kernel, device, args.locations)
        r_mem = peak_memory_mib("reference", device, args.locations)
        row.update(kernel_peak_mib=k_mem, reference_peak_mib=r_mem)
        print(f"  peak memory growth during fwd+bwd: kernel {k_mem:.1f} MiB, reference {r_mem:.1f} MiB "
              f"(kernel / reference = {k_mem / max(r_mem, 1e-9):.2f})")
    if device == "cuda":
        bw = copy_bandwidth_gbs()
        bound_ms = forward_bytes() / (bw * 1e9) * 1e3
        row.update(copy_bandwidth_gbs=bw, forward_bound_ms=bound_ms, forward_vs_bound=k_fwd / bound_ms)
        print(f"  forward vs bandwidth bound: {k_fwd:.3f} ms vs {bound_ms:.3f} ms at {bw:.0f} GB/s measured copy "
              f"bandwidth = {k_fwd / bound_ms:.2f}x (target <= 2x)")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--locations", choices=["local", "uniform"], default="local")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    info = backend_info()
    print(f"torch {torch.__version__}; compiled backends: {info['backends']}; "
          f"N={N} Lq=S={sum(h * w for h, w in LEVELS)} M={M} D={D} L={len(LEVELS)} P={P}")
    if not info["compiled"]:
        raise SystemExit(f"the compiled ops are not available: {info['reason']} (fix: {info['fix']})")
    rows = [report("cpu", args)]
    if "cuda" in info["backends"]:
        rows.append(report("cuda", args))
    else:
        print("\nCUDA: skipped (no GPU visible or the extension has no CUDA kernels)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
