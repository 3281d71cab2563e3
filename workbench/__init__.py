"""Multi-task Mask2Former workbench: every query predicts a mask, a category and independent attributes."""
from workbench import threads as _threads

_threads.configure_environment()  # before anything below imports torch: its OpenMP runtime reads it once

from workbench import model  # noqa: E402
from workbench.config import AttributeSpec, LossConfig, ModelConfig  # noqa: E402
from workbench.model import ModelOutput, build_model  # noqa: E402
from workbench.pretrained import LoadReport, load_pretrained, pretrained_config  # noqa: E402

__version__ = "0.1.0"
__all__ = ["AttributeSpec", "LoadReport", "LossConfig", "ModelConfig", "ModelOutput", "build_model", "load_pretrained",
           "model", "pretrained_config"]
