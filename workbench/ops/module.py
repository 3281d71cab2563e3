"""`MSDeformAttn`: Deformable-DETR's multi-scale deformable attention as an nn.Module."""
from __future__ import annotations

import math

import torch
from torch import nn

from workbench.ops.dispatch import ms_deform_attn
from workbench.ops.reference import ms_deform_attn_levels


class MSDeformAttn(nn.Module):
    """Each query attends to `n_points` learned offsets around its reference point on each of `n_levels` maps.

    backend="auto" runs the compiled kernel for the input's device (workbench._C), else the reference with a
    warning; see `workbench.ops.ms_deform_attn`.

    While `torch.onnx.export` runs (`torch.onnx.is_in_onnx_export()`), the reference runs instead, whatever
    `backend` says: it is made of standard ONNX ops (grid_sample), the compiled kernels are not. It then needs
    `level_shapes`, the (H, W) of each level as Python ints, so the exported graph keeps a dynamic image size.

    query (N, Lq, C), reference_points (N, Lq, L, 2) in [0, 1], value_input (N, S, C),
    spatial_shapes (L, 2), level_start_index (L,), padding_mask (N, S) True = padded,
    level_shapes: L pairs (H, W) matching spatial_shapes -> (N, Lq, C).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4,
                 backend: str = "auto") -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.backend = backend
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR init: offsets start on a ring of directions, growing with the point index."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(self, query, reference_points, value_input, spatial_shapes, level_start_index, padding_mask=None,
                level_shapes=None):
        n, lq, _ = query.shape
        _, s, _ = value_input.shape
        exporting = torch.onnx.is_in_onnx_export()
        if exporting and level_shapes is None:
            raise ValueError("MSDeformAttn under torch.onnx.export needs level_shapes=[(H, W), ...] (Python ints): "
                             "reading them from spatial_shapes would freeze the image size into the graph")
        if not exporting:  # int() of a tensor is data-dependent under export
            expected = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
            if expected != s:
                raise ValueError(f"value has {s} positions but spatial_shapes sum to {expected}")
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, s, self.n_heads, self.d_model // self.n_heads)
        per_head = self.n_levels * self.n_points * 2
        offsets = self.sampling_offsets(query).view(n, lq, self.n_heads, per_head)
        weights = self.attention_weights(query).view(n, lq, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, lq, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] != 2:
            raise ValueError(f"reference_points last dim must be 2, got {reference_points.shape[-1]}")
        # locations = reference point + offset / (W, H) of its level, broadcast over one contiguous last dim of
        # (level, point, xy) per head: the same elementwise values as a six-dimensional broadcast, which torch
        # runs 8-10x slower (its innermost dim, xy, is 2 wide).
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)  # (L, 2)
        scale = normalizer[:, None, :].expand(self.n_levels, self.n_points, 2).reshape(per_head)
        start = reference_points[:, :, None, :, None, :].expand(n, lq, 1, self.n_levels, self.n_points, 2)
        locations = (start.reshape(n, lq, 1, per_head) + offsets / scale).view(
            n, lq, self.n_heads, self.n_levels, self.n_points, 2)
        if exporting:
            return self.output_proj(ms_deform_attn_levels(value, list(level_shapes), locations, weights))
        # The kernels want one dtype (autocast may leave value in half and the locations in float) and the
        # level bookkeeping on value's device; all of it contiguous. The CPU kernel computes in float32, so a
        # bf16/fp16 value on a CPU (autocast's, or a model cast to bf16) is widened, exactly, and the result
        # narrowed back (the op is a few percent of a step).
        dtype = value.dtype
        if value.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
            dtype = torch.float32
        out = ms_deform_attn(
            value.to(dtype).contiguous(), spatial_shapes.to(value.device), level_start_index.to(value.device),
            locations.to(dtype).contiguous(), weights.to(dtype).contiguous(), backend=self.backend)
        return self.output_proj(out.to(value.dtype))
