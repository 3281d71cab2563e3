#!/usr/bin/env python3
"""Run the numerics-sensitive tests under other CPU instruction sets and thread counts.

A value recorded on one CPU must hold on any x86-64 CPU torch supports, at any thread count, within the
tolerances the tests state. These variants change what the CPU runs here: ATen's vectorised kernels
(ATEN_CPU_CAPABILITY), oneDNN's convolutions (ONEDNN_MAX_CPU_ISA), MKL's products (MKL_ENABLE_INSTRUCTIONS) and
the intra-op thread count (WORKBENCH_TEST_THREADS, read by tests/conftest.py), so a tolerance tuned to one
machine fails here first.

    python .ci/numerics_variants.py            # the CI variant (`make test-variants`)
    python .ci/numerics_variants.py --all      # every variant, one after the other, and a summary
    python .ci/numerics_variants.py --list
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

TESTS = [
    "tests/test_speed_equality.py", "tests/test_multilabel_model.py", "tests/test_criterion.py",
    "tests/test_matcher.py", "tests/test_model.py", "tests/test_ops_kernels.py", "tests/test_ops_dispatch.py",
    "tests/test_pretrained.py", "tests/test_swin.py", "tests/test_backbone.py", "tests/test_export_onnx.py",
    "tests/test_boundary_loss.py", "tests/test_amp.py", "tests/test_evaluate.py", "tests/test_multilabel_eval.py",
]
VARIANTS = {
    # The CI variant: as far from a vectorised AVX-512 recording machine as x86-64 goes, on 3 threads.
    "ci": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
           "WORKBENCH_TEST_THREADS": "3"},
    "threads-2": {"WORKBENCH_TEST_THREADS": "2"},
    "threads-3": {"WORKBENCH_TEST_THREADS": "3"},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "aten-avx512": {"ATEN_CPU_CAPABILITY": "avx512"},  # the CPU's best where it lacks AVX-512
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "mkl-avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "mkl-sse42": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def run(name: str, extra: list[str]) -> int:
    env = {**os.environ, **VARIANTS[name]}
    print(f"[variants] {name}: {' '.join(f'{k}={v}' for k, v in VARIANTS[name].items())}", flush=True)
    start = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS, *extra], env=env)
    print(f"[variants] {name}: exit {code} in {time.monotonic() - start:.0f} s", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="every variant, then a summary")
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="these variants")
    parser.add_argument("--list", action="store_true")
    args, extra = parser.parse_known_args()
    if args.list:
        for name, env in VARIANTS.items():
            print(name, " ".join(f"{k}={v}" for k, v in env.items()))
        return 0
    names = list(VARIANTS) if args.all else args.only or ["ci"]
    codes = {name: run(name, extra) for name in names}
    if len(codes) > 1:
        for name, code in codes.items():
            print(f"[variants] {name:14s} {'passed' if code == 0 else f'FAILED (exit {code})'}")
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main())
