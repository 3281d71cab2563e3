"""Multi-task Mask2Former workbench: every query predicts a mask, a category and independent attributes."""
from workbench import model
from workbench.config import AttributeSpec, LossConfig, ModelConfig
from workbench.model import ModelOutput, build_model

__version__ = "0.1.0"
__all__ = ["AttributeSpec", "LossConfig", "ModelConfig", "ModelOutput", "build_model", "model"]
