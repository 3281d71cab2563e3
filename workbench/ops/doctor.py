"""`workbench doctor`: what this environment has, what will run where, and a fix line for each problem.

Covers the places our users' setups broke: torch vs toolkit vs driver, CUDA_HOME, a stale compiled build, GPU
architectures the build does not cover, and which GPU a run will use.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys

import torch

from workbench.device import cpu_has_native_bf16, resolve_device
from workbench.ops.build_info import REBUILD, Problem, stale_build_problems
from workbench.ops.dispatch import backend_info
from workbench.ops.toolkit import find_toolkit


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check torch/CUDA/compiled ops and say how to fix what is wrong")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--device", default=None, help="device a run would use: auto (default), cpu, cuda, cuda:N")
    p.set_defaults(func=run)


def _arch_covers(archs: str, major: int, minor: int) -> bool:
    """Whether a TORCH_CUDA_ARCH_LIST-style string has code that runs on compute capability major.minor:
    SASS for the same major and a minor <= ours, or PTX for any older capability."""
    for entry in archs.replace(",", ";").replace(" ", ";").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        ptx = entry.endswith("+PTX")
        try:
            a_major, a_minor = (int(x) for x in entry.removesuffix("+PTX").split(".")[:2])
        except ValueError:
            continue
        if (a_major == major and a_minor <= minor) or (ptx and (a_major, a_minor) <= (major, minor)):
            return True
    return False


def _driver() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def collect(device: str | None = None) -> dict:
    """The whole report as a dict (what `--json` prints)."""
    problems: list[Problem] = []
    toolkit, toolkit_notes = find_toolkit()
    ops = backend_info()

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                         "memory_gib": round(props.total_memory / 2**30, 1)})

    try:
        chosen, device_error = str(resolve_device(device)), None
    except (ValueError, RuntimeError) as exc:
        chosen, device_error = None, str(exc)
        problems.append(Problem(device_error, "pick a visible device (--device cpu / cuda:0) or set "
                                              "CUDA_VISIBLE_DEVICES before starting"))

    if not ops["compiled"]:
        problems.append(Problem(f"compiled ops unavailable: {ops['reason']}; the slow reference will run",
                                ops["fix"] or REBUILD))
    build = ops["build"]
    problems += stale_build_problems(build, torch.__version__, torch.version.cuda)
    if ops["compiled"] and not ops["cpu_openmp"]:
        problems.append(Problem("the CPU kernels were compiled without OpenMP and run on one thread",
                                "rebuild with a compiler that supports -fopenmp: " + REBUILD))
    if gpus and ops["compiled"] and not ops["with_cuda"]:
        problems.append(Problem("a GPU is visible but workbench._C has no CUDA kernels (built without nvcc?)",
                                "install a CUDA toolkit matching torch's CUDA "
                                f"{torch.version.cuda}, then " + REBUILD))
    if gpus and ops["with_cuda"] and build:
        for gpu in gpus:
            major, minor = (int(x) for x in gpu["capability"].split("."))
            if not _arch_covers(build.get("cuda_archs", ""), major, minor):
                problems.append(Problem(
                    f"GPU {gpu['index']} ({gpu['name']}, sm_{major}{minor}) is not covered by the built archs "
                    f"{build.get('cuda_archs')!r}",
                    f"TORCH_CUDA_ARCH_LIST=\"{major}.{minor}\" {REBUILD}"))
    if torch.version.cuda and toolkit.version and toolkit.version.split(".")[0] != torch.version.cuda.split(".")[0]:
        problems.append(Problem(
            f"nvcc {toolkit.version} ({toolkit.home}) does not match torch's CUDA {torch.version.cuda}; "
            "a rebuild would skip or fail the CUDA kernels",
            f"set CUDA_HOME to a CUDA {torch.version.cuda.split('.')[0]}.x toolkit"))

    return {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "torch": {"version": torch.__version__, "cuda": torch.version.cuda,
                  "cuda_available": torch.cuda.is_available(), "threads": torch.get_num_threads(),
                  "cpu_bf16": cpu_has_native_bf16()},
        "toolkit": {"cuda_home": toolkit.home, "found": toolkit.how, "nvcc": toolkit.nvcc,
                    "nvcc_version": toolkit.version, "notes": toolkit_notes,
                    "CUDA_HOME": os.environ.get("CUDA_HOME"), "nvcc_on_path": shutil.which("nvcc")},
        "driver": _driver(),
        "gpus": gpus,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "device": {"requested": device or "auto", "resolved": chosen, "error": device_error},
        "compiled_ops": ops,
        "problems": [{"message": p.message, "fix": p.fix} for p in problems],
        "ok": not problems,
    }


def format_report(report: dict) -> str:
    t, k, ops, dev = report["torch"], report["toolkit"], report["compiled_ops"], report["device"]
    build = ops["build"] or {}
    lines = [
        f"python        {report['python']['version']} ({report['python']['executable']})",
        f"torch         {t['version']}  CUDA {t['cuda'] or 'none (CPU-only build)'}  "
        f"cuda available: {t['cuda_available']}  threads: {t['threads']}  CPU bf16 (solver.amp): "
        f"{'native' if t['cpu_bf16'] else 'emulated, slower than float32'}",
        f"CUDA toolkit  {k['cuda_home'] or 'not found'} ({k['found']}); nvcc {k['nvcc_version'] or '-'}; "
        f"$CUDA_HOME={k['CUDA_HOME'] or 'unset'}; nvcc on PATH: {k['nvcc_on_path'] or 'none'}",
        *[f"              note: {n}" for n in k["notes"]],
        f"driver        {report['driver'] or 'no nvidia-smi'}",
        f"GPUs          {len(report['gpus'])} visible (CUDA_VISIBLE_DEVICES="
        f"{report['cuda_visible_devices'] if report['cuda_visible_devices'] is not None else 'unset'}; "
        "set it before the process starts)",
        *[f"              cuda:{g['index']} {g['name']} sm_{g['capability'].replace('.', '')} "
          f"{g['memory_gib']} GiB" for g in report["gpus"]],
        f"device        {dev['requested']} -> {dev['resolved'] or 'ERROR: ' + str(dev['error'])}",
        f"compiled ops  {'built' if ops['compiled'] else 'NOT AVAILABLE'}; usable backends: "
        f"{', '.join(ops['backends'])}; CUDA kernels: {ops['with_cuda']} (archs {build.get('cuda_archs') or '-'}); "
        f"OpenMP: {ops['cpu_openmp']}",
        f"              built against torch {build.get('torch', '?')} / CUDA {build.get('torch_cuda', '?')} / "
        f"nvcc {build.get('nvcc') or '-'} at {build.get('built_at', '?')}" if build else
        f"              {ops['reason'] or 'no build record'}",
    ]
    if report["problems"]:
        lines.append(f"\n{len(report['problems'])} problem(s):")
        for p in report["problems"]:
            lines += [f"  - {p['message']}", f"    fix: {p['fix']}"]
    else:
        lines.append("\nno problems found")
    return "\n".join(lines)


def run(args) -> int:
    report = collect(args.device)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1
