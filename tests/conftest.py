import os

import pytest
import torch

import workbench as wb
from workbench.harness.runners import DEFAULT_ATTRIBUTES

# The suite's models are tiny: with several intra-op threads, synchronisation costs more than the work
# (and on a loaded 2-core machine, 10-20x more). Tests that exercise threading set their own count.
# WORKBENCH_TEST_THREADS runs the suite at another count (.ci/numerics_variants.py: results must hold at any).
TEST_THREADS = int(os.environ.get("WORKBENCH_TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)

NUMERICS_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "WORKBENCH_TEST_THREADS")


def pytest_report_header(config) -> list[str]:
    """Which CPU kernels ran: a numeric failure on another machine starts from these lines."""
    import platform

    cpu = platform.processor() or "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    forced = ", ".join(f"{k}={os.environ[k]}" for k in NUMERICS_ENV if k in os.environ) or "none"
    return [f"cpu: {cpu}; torch kernels: {torch.backends.cpu.get_cpu_capability()}; threads: {TEST_THREADS}; "
            f"forced: {forced}"]


@pytest.fixture
def tiny_cfg() -> wb.ModelConfig:
    return wb.ModelConfig.tiny(num_classes=3, attributes=DEFAULT_ATTRIBUTES)


@pytest.fixture
def tiny_model(tiny_cfg):
    torch.manual_seed(0)
    return wb.build_model(tiny_cfg)
