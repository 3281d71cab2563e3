"""autograd.Function around the compiled kernels (CPU and CUDA share it; the extension picks the device)."""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable


class MSDeformAttnFunction(torch.autograd.Function):
    """Forward and backward both come from workbench._C; spatial_shapes and level_start_index are not
    differentiable. First-order gradients only (no double backward)."""

    @staticmethod
    def forward(ctx, ext, value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                im2col_step: int):
        ctx.ext, ctx.im2col_step = ext, im2col_step
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
        return ext.ms_deform_attn_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                          attention_weights, im2col_step)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = ctx.ext.ms_deform_attn_backward(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output,
            ctx.im2col_step)
        return None, grad_value, None, None, grad_locations, grad_weights, None
