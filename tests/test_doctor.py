"""`workbench doctor`, stale-build detection, CUDA toolkit discovery and device resolution."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from workbench.cli import main
from workbench.device import resolve_device
from workbench.ops.build_info import REBUILD, read_provenance, stale_build_problems
from workbench.ops.doctor import _arch_covers
from workbench.ops.toolkit import find_toolkit

BUILT = {"torch": "2.14.1+cu130", "torch_cuda": "13.0", "with_cuda": True, "cuda_archs": "8.0;9.0", "nvcc": "13.0"}


# --- stale build detection ---------------------------------------------------------------------------------

def test_matching_build_has_no_problems():
    assert stale_build_problems(BUILT, "2.14.1+cu130", "13.0") == []
    assert stale_build_problems(None, "2.14.1+cu130", "13.0") == []  # nothing built: reported elsewhere


def test_build_against_other_torch_is_stale():
    problems = stale_build_problems(BUILT, "2.15.0+cu130", "13.0")
    assert len(problems) == 1
    assert "torch 2.14.1+cu130" in problems[0].message and "2.15.0+cu130" in problems[0].message
    assert problems[0].fix == REBUILD and "make setup" in REBUILD


def test_build_against_other_cuda_is_stale():
    problems = stale_build_problems(BUILT, "2.14.1+cu128", "12.8")
    assert any("CUDA 13.0" in p.message and "12.8" in p.message for p in problems)
    cpu_torch = stale_build_problems(BUILT, "2.14.1+cpu", None)
    assert any("CPU-only" in p.message for p in cpu_torch)


def test_cpu_only_build_ignores_cuda_version():
    built = dict(BUILT, with_cuda=False)
    assert stale_build_problems(built, "2.14.1+cu128", "12.8") == []


def test_provenance_is_read_from_the_file_bytes(tmp_path):
    fake = tmp_path / "_C.so"
    fake.write_bytes(b"\x7fELF junk" + b"WORKBENCH_BUILD_INFO<<" + json.dumps(BUILT).encode() + b">>" + b"\x00more")
    assert read_provenance(fake) == BUILT
    (tmp_path / "old.so").write_bytes(b"\x7fELF no record")
    assert read_provenance(tmp_path / "old.so") is None


def test_installed_extension_carries_provenance():
    if os.environ.get("WORKBENCH_BUILD_OPS") == "0":
        pytest.skip("WORKBENCH_BUILD_OPS=0: the compiled ops were not built on purpose")
    built = read_provenance()
    assert built is not None and built["torch"] == torch.__version__
    assert stale_build_problems(built, torch.__version__, torch.version.cuda) == []


@pytest.mark.parametrize("archs,capability,covered", [
    ("8.0;9.0", (8, 0), True), ("8.0;9.0", (8, 6), True), ("8.0;9.0", (9, 0), True),
    ("8.0;9.0", (7, 5), False), ("8.0;9.0", (10, 0), False), ("8.0;9.0+PTX", (10, 0), True),
    ("8.6", (8, 0), False), ("", (8, 0), False),
])
def test_arch_coverage(archs, capability, covered):
    assert _arch_covers(archs, *capability) is covered


# --- CUDA toolkit discovery ---------------------------------------------------------------------------------

def fake_toolkit(root, nvcc_script=None):
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime.h").write_text("")
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(nvcc_script or "#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    return root


def test_toolkit_from_cuda_home(tmp_path):
    home = fake_toolkit(tmp_path / "cuda-13.0")
    toolkit, notes = find_toolkit({"CUDA_HOME": str(home), "PATH": ""})
    assert toolkit.home == str(home) and toolkit.how == "$CUDA_HOME" and toolkit.version == "13.0"
    assert notes == []


def test_bad_cuda_home_is_reported_and_skipped(tmp_path):
    home = fake_toolkit(tmp_path / "real")
    toolkit, notes = find_toolkit({"CUDA_HOME": str(tmp_path / "nowhere"), "CUDA_PATH": str(home), "PATH": ""})
    assert toolkit.home == str(home) and toolkit.how == "$CUDA_PATH"
    assert any("nowhere" in n and "ignored" in n for n in notes)


def test_toolkit_derived_through_an_nvcc_wrapper(tmp_path):
    """A wrapper script on PATH (as in some images): the root comes from `nvcc -dryrun`, not from its path."""
    home = fake_toolkit(tmp_path / "cuda-13.0")
    wrapper_dir = tmp_path / "wrapper-bin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / "nvcc"
    wrapper.write_text(f"#!/bin/sh\necho '#$ TOP={home}/bin/..'\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    toolkit, _ = find_toolkit({"PATH": str(wrapper_dir)})
    assert toolkit.home == str(home.resolve()) and "derived from nvcc on PATH" in toolkit.how


# --- device resolution ---------------------------------------------------------------------------------------

def test_resolve_cpu_and_bad_spec():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="expected 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu1")


def test_resolve_auto_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is unavailable"):
        resolve_device("cuda")


def test_explicit_index_is_honoured_and_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(RuntimeError, match=r"only 2 GPU\(s\) are visible.*'2,3'.*before the process starts"):
        resolve_device("cuda:2")


# --- the command ---------------------------------------------------------------------------------------------

def test_doctor_json_has_the_expected_keys(capsys):
    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    for key in ("python", "torch", "toolkit", "driver", "gpus", "cuda_visible_devices", "device", "compiled_ops",
                "problems", "ok"):
        assert key in report, key
    assert report["torch"]["version"] == torch.__version__
    for key in ("compiled", "backends", "with_cuda", "cpu_openmp", "build", "stale"):
        assert key in report["compiled_ops"], key
    assert code == (0 if report["ok"] else 1)
    assert all(p["fix"] for p in report["problems"])


def test_doctor_reports_a_missing_device_with_a_fix(capsys):
    code = main(["doctor", "--json", "--device", "cuda:99"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not report["ok"]
    assert report["device"]["resolved"] is None and "cuda:99" in report["device"]["error"]
    assert any("cuda:99" in p["message"] for p in report["problems"])


def test_doctor_text_report_runs_as_a_command():
    out = subprocess.run([sys.executable, "-m", "workbench", "doctor", "--device", "cpu"], capture_output=True,
                         text=True, timeout=120)
    assert "compiled ops" in out.stdout and "device        cpu -> cpu" in out.stdout, out.stdout + out.stderr
    assert out.returncode in (0, 1)
    assert ("no problems found" in out.stdout) == (out.returncode == 0)


@pytest.mark.parametrize("native", [True, False])
def test_doctor_says_whether_solver_amp_bf16_pays_on_this_cpu(monkeypatch, capsys, native):
    import workbench.ops.doctor as doctor_module

    monkeypatch.setattr(doctor_module, "cpu_has_native_bf16", lambda: native)
    main(["doctor", "--json"])
    assert json.loads(capsys.readouterr().out)["torch"]["cpu_bf16"] is native
    main(["doctor"])
    text = capsys.readouterr().out
    assert ("CPU bf16 (solver.amp): native" in text) is native
    assert ("emulated, slower than float32" in text) is not native
