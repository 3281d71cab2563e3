import pytest
import torch

import workbench as wb
from workbench.harness.runners import DEFAULT_ATTRIBUTES


@pytest.fixture
def tiny_cfg() -> wb.ModelConfig:
    return wb.ModelConfig.tiny(num_classes=3, attributes=DEFAULT_ATTRIBUTES)


@pytest.fixture
def tiny_model(tiny_cfg):
    torch.manual_seed(0)
    return wb.build_model(tiny_cfg)
