import pytest
import torch

import workbench as wb
from workbench.harness.runners import DEFAULT_ATTRIBUTES

# The suite's models are tiny: with several intra-op threads, synchronisation costs more than the work
# (and on a loaded 2-core machine, 10-20x more). Tests that exercise threading set their own count.
torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg() -> wb.ModelConfig:
    return wb.ModelConfig.tiny(num_classes=3, attributes=DEFAULT_ATTRIBUTES)


@pytest.fixture
def tiny_model(tiny_cfg):
    torch.manual_seed(0)
    return wb.build_model(tiny_cfg)
