"""The multi-task Mask2Former in plain PyTorch: one concept per module."""
from workbench.model.outputs import ModelOutput, PixelDecoderOutput


def build_model(cfg):
    """Build `MultiTaskMask2Former` from a `ModelConfig`."""
    from workbench.model.meta_arch import MultiTaskMask2Former

    return MultiTaskMask2Former(cfg)


__all__ = ["ModelOutput", "PixelDecoderOutput", "build_model"]
