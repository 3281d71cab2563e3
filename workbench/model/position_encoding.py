"""Sine positional encoding (DETR), normalised to the map so it is resolution independent."""
from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """x (B, C, H, W) -> (B, 2 * num_pos_feats, H, W); only x's shape, device and dtype are used.

    The map depends on (H, W, device, dtype) only, so it is kept per size: a forward needs one per feature
    level, the same at every step (about 20 small ops each). Not kept while tracing or compiling, where the
    size may be symbolic.
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        self.num_pos_feats, self.temperature = num_pos_feats, temperature
        self._maps: dict[tuple, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tracing = (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
                   or not (isinstance(h, int) and isinstance(w, int)))
        if tracing:
            return self.encode(h, w, x.device)[None].expand(b, -1, -1, -1).to(x.dtype)
        key = (h, w, x.device, x.dtype)
        pos = self._maps.get(key)
        if pos is None:
            if len(self._maps) >= 32:  # many image sizes (inference on raw images): keep the newest only
                self._maps.clear()
            pos = self._maps[key] = self.encode(h, w, x.device).to(x.dtype)
        return pos[None].expand(b, -1, -1, -1)

    def encode(self, h, w, device) -> torch.Tensor:
        """(2 * num_pos_feats, H, W) float32."""
        eps, scale = 1e-6, 2 * math.pi
        y_embed = torch.arange(1, h + 1, device=device, dtype=torch.float32)[:, None].expand(h, w)
        x_embed = torch.arange(1, w + 1, device=device, dtype=torch.float32)[None, :].expand(h, w)
        y_embed = y_embed / (h + eps) * scale
        x_embed = x_embed / (w + eps) * scale
        dim_t = torch.arange(self.num_pos_feats, device=device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = x_embed[..., None] / dim_t
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=3).flatten(2)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=3).flatten(2)
        return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
