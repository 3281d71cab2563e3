"""The multi-task Mask2Former in plain PyTorch: one concept per module."""
from workbench.model.criterion import SetCriterion
from workbench.model.matcher import HungarianMatcher
from workbench.model.meta_arch import MultiTaskMask2Former, build_criterion, build_matcher
from workbench.model.outputs import ModelOutput, PixelDecoderOutput


def build_model(cfg) -> MultiTaskMask2Former:
    """Build `MultiTaskMask2Former` from a `ModelConfig`."""
    return MultiTaskMask2Former(cfg)


__all__ = ["HungarianMatcher", "ModelOutput", "MultiTaskMask2Former", "PixelDecoderOutput", "SetCriterion",
           "build_criterion", "build_matcher", "build_model"]
