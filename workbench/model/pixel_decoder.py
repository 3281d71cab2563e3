"""Mask2Former's pixel decoder: a deformable-attention encoder over res3-res5, then an FPN step to stride 4.

Produces the per-pixel `mask_features` that query embeddings are dotted with, and the three multi-scale maps
(strides 32, 16, 8) the transformer decoder cross-attends to, in turn.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from workbench.model.activation_checkpoint import run_segment
from workbench.model.chunks import chunk_slices
from workbench.model.outputs import PixelDecoderOutput
from workbench.model.position_encoding import SinePositionEncoding
from workbench.ops import MSDeformAttn

TRANSFORMER_FEATURES = ("res3", "res4", "res5")
# Rows of the encoder FFN's (tokens, d_ffn) hidden computed per pass in CPU inference: ~L2-sized (fastest of
# 128-1024 rows at d_ffn 1024 here; 0.92x of a 512^2 raw forward, 0.95x at 256^2).
CPU_FFN_CHUNK_BYTES = 2 << 20


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32 if channels % 32 == 0 else max(1, channels // 4), channels)


def _xavier_conv(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.kaiming_uniform_(conv.weight, a=1)  # detectron2's c2_xavier_fill
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0.0)
    return conv


class DeformableEncoderLayer(nn.Module):
    """Post-norm: deformable self-attention over all levels, then FFN. src/pos (B, S, D)."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int, dropout: float):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        # ReLU not in place: the first Linear's (B, S, d_ffn) output is a view of a 2-D product, and an in-place
        # op on a view makes autograd rebuild the whole base in backward (CopySlices: a clone, a zero fill and
        # two copies of it per layer; the step's time measured the same). Same values, same gradients.
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ffn), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(d_ffn, d_model))
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, level_shapes=None):
        attended = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index,
                                  level_shapes=level_shapes)
        src = self.norm1(src + self.dropout(attended))
        if _ffn_by_rows(self, src):
            return self.ffn_by_rows(src)
        return self.norm2(src + self.dropout(self.ffn(src)))

    def ffn_by_rows(self, src: torch.Tensor, rows: int | None = None) -> torch.Tensor:
        """norm2(src + FFN(src)) for eval mode without autograd, `rows` tokens at a time (default: the multiple
        of 64 rows nearest below a CPU_FFN_CHUNK_BYTES hidden; a shorter tail joins the chunk before it). Why:
        on a CPU the one-pass FFN's hidden (B, S, d_ffn) is tens of MiB of fresh memory per layer (44 MiB at
        512^2), paid in page faults by the bias copy, the ReLU and the residual more than in arithmetic; chunks
        stay in cache. The products, ReLU and LayerNorm are per row, so each row equals the one-pass value to
        float rounding (~1e-6; bit for bit on some CPUs, not all: the BLAS picks kernels by the number of rows).
        Chunks of 64 rows or more, with no short tail, keep the rows on the large-matrix kernels."""
        linear1, linear2 = self.ffn[0], self.ffn[3]
        flat = src.reshape(-1, src.shape[-1])
        out = torch.empty_like(flat)
        if rows is None:
            rows = max(1, CPU_FFN_CHUNK_BYTES // (flat.element_size() * linear1.out_features * 64)) * 64
        for chunk in chunk_slices(flat.shape[0], rows):
            x = flat[chunk]
            out[chunk] = self.norm2(x + linear2(torch.relu(linear1(x))))
        return out.view_as(src)


def _ffn_by_rows(layer: DeformableEncoderLayer, src: torch.Tensor) -> bool:
    """Whether `layer` runs its FFN by chunks of rows: CPU inference in eager mode (not training, no dropout
    module switched back to training, no autograd, not traced, compiled or exported: those keep the one-pass
    FFN)."""
    return (src.device.type == "cpu" and not any(m.training for m in layer.modules()) and not torch.is_grad_enabled()
            and not (torch.compiler.is_compiling() or torch.compiler.is_exporting() or torch.jit.is_tracing()
                     or torch.onnx.is_in_onnx_export()))


def reference_points(level_shapes: Sequence[tuple[int, int]], batch: int, device) -> torch.Tensor:
    """Pixel centres of every level (L pairs (H, W)), normalised to [0, 1], repeated for each level:
    (B, S, L, 2) as (x, y)."""
    points = []
    for h, w in level_shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h,
            (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w,
            indexing="ij",
        )
        points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))
    ref = torch.cat(points, 0)  # (S, 2)
    return ref[None, :, None, :].expand(batch, -1, len(level_shapes), -1)


def shapes_tensor(level_shapes: Sequence[tuple[int, int]], device) -> torch.Tensor:
    """L pairs (H, W) -> (L, 2) int64. Built with one `torch.full` per size rather than `torch.as_tensor`, which
    under torch.export copies the example's sizes into the graph as constants (the ONNX graph would then be
    right at the export size only)."""
    return torch.stack([torch.stack([torch.full((), int_or_sym, dtype=torch.long, device=device)
                                     for int_or_sym in hw]) for hw in level_shapes])


class MSDeformAttnPixelDecoder(nn.Module):
    """features {"res2".."res5"} -> PixelDecoderOutput(mask_features (B, mask_dim, H/4, W/4),
    multi_scale_features [(B, D, H/32, W/32), (B, D, H/16, W/16), (B, D, H/8, W/8)])."""

    # recompute each encoder layer's and the FPN level's activations in the backward (activation_checkpoint.py)
    checkpoint_segments = False

    def __init__(self, in_channels: dict[str, int], conv_dim: int, mask_dim: int, enc_layers: int,
                 nheads: int, dim_feedforward: int, n_points: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        # coarsest first, as upstream: the decoder's first layer looks at stride 32
        self.transformer_features = tuple(reversed(TRANSFORMER_FEATURES))
        self.input_proj = nn.ModuleList(
            nn.Sequential(_xavier_conv(nn.Conv2d(in_channels[name], conv_dim, 1)), _group_norm(conv_dim))
            for name in self.transformer_features
        )
        n_levels = len(self.transformer_features)
        self.level_embed = nn.Parameter(torch.empty(n_levels, conv_dim))
        nn.init.normal_(self.level_embed)
        self.position = SinePositionEncoding(conv_dim // 2)
        self.encoder = nn.ModuleList(
            DeformableEncoderLayer(conv_dim, dim_feedforward, n_levels, nheads, n_points, dropout)
            for _ in range(enc_layers)
        )
        self.lateral_conv = nn.Sequential(_xavier_conv(nn.Conv2d(in_channels["res2"], conv_dim, 1, bias=False)),
                                          _group_norm(conv_dim))
        self.output_conv = nn.Sequential(_xavier_conv(nn.Conv2d(conv_dim, conv_dim, 3, padding=1, bias=False)),
                                         _group_norm(conv_dim), nn.ReLU(inplace=True))
        self.mask_features = _xavier_conv(nn.Conv2d(conv_dim, mask_dim, 1))

    def forward(self, features: dict[str, torch.Tensor]) -> PixelDecoderOutput:
        srcs, pos = [], []
        for lvl, name in enumerate(self.transformer_features):
            x = self.input_proj[lvl](features[name])
            srcs.append(x)
            pos.append(self.position(x) + self.level_embed[lvl].view(1, -1, 1, 1))
        b = srcs[0].shape[0]
        # Level sizes as Python ints (symbolic under torch.export, so an ONNX graph keeps a dynamic image size);
        # the tensors are for the compiled kernels.
        level_shapes = [(s.shape[-2], s.shape[-1]) for s in srcs]
        spatial_shapes = shapes_tensor(level_shapes, srcs[0].device)
        sizes = (spatial_shapes[:, 0] * spatial_shapes[:, 1])
        level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)  # (B, S, D)
        pos_flat = torch.cat([p.flatten(2).transpose(1, 2) for p in pos], 1)
        ref = reference_points(level_shapes, b, src_flat.device).to(src_flat.dtype)
        memory = src_flat
        for layer in self.encoder:
            memory = run_segment(self, layer, layer, memory, pos_flat, ref, spatial_shapes, level_start_index,
                                 level_shapes)
        maps = [
            chunk.transpose(1, 2).reshape(b, -1, h, w)
            for chunk, (h, w) in zip(memory.split([h * w for h, w in level_shapes], dim=1), level_shapes)
        ]
        mask_features = run_segment(self, None, self.fpn, features["res2"], maps[-1])
        return PixelDecoderOutput(mask_features=mask_features, multi_scale_features=maps)

    def fpn(self, res2: torch.Tensor, finest: torch.Tensor) -> torch.Tensor:
        """The 1/4-resolution FPN level: res2 (B, C2, H/4, W/4) + the upsampled finest encoder map (B, D, H/8, W/8)
        -> mask features (B, mask_dim, H/4, W/4). Its activations are the pixel decoder's largest (a checkpoint
        segment of its own)."""
        lateral = self.lateral_conv(res2)
        fine = self.output_conv(lateral + F.interpolate(finest, size=lateral.shape[-2:], mode="bilinear",
                                                        align_corners=False))
        return self.mask_features(fine)
