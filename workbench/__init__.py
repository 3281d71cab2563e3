"""Multi-task Mask2Former workbench: every query predicts a mask, a category and independent attributes."""
from workbench import model
from workbench.config import AttributeSpec, LossConfig, ModelConfig
from workbench.model import ModelOutput, build_model
from workbench.pretrained import LoadReport, load_pretrained, pretrained_config

__version__ = "0.1.0"
__all__ = ["AttributeSpec", "LoadReport", "LossConfig", "ModelConfig", "ModelOutput", "build_model", "load_pretrained",
           "model", "pretrained_config"]
