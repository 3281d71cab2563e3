"""Masked-attention transformer decoder with a class head, one head per attribute, and a mask head.

Every prediction (from the learnable queries, then after each layer) reads the *decoder output* of that
stage: class, attribute and mask heads all see the same `decoder_norm(output)`. Reading attribute logits from
`query_feat.weight` instead (a seed bug) gives identical logits for every image; tests/test_model.py guards it.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from workbench.config import AttributeSpec
from workbench.model.activation_checkpoint import run_segment
from workbench.model.outputs import ModelOutput
from workbench.model.position_encoding import SinePositionEncoding


def attend(attn: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
           blocked: torch.Tensor | None = None) -> torch.Tensor:
    """`attn(query, key, value, attn_mask=blocked, need_weights=False)[0]` for a batch-first module, in ~10
    tensor operations instead of the ~40 of `nn.MultiheadAttention.forward` (its checks, layout transposes and
    mask conversion): the same in-projections, scaled dot-product attention and out-projection, the same
    parameters (so checkpoints and pretrained weights are unchanged).

    query (B, L, D), key and value (B, S, D), blocked (B, L, S) bool, True = not attended -> (B, L, D).
    """
    b, length, dim = query.shape
    heads = attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    q = F.linear(query, w_q, b_q).view(b, length, heads, -1).transpose(1, 2)
    k = F.linear(key, w_k, b_k).view(b, key.shape[1], heads, -1).transpose(1, 2)
    v = F.linear(value, w_v, b_v).view(b, value.shape[1], heads, -1).transpose(1, 2)
    # Under CPU autocast the attention itself runs in float32: torch's CPU attention kernel is 1.1-3x slower
    # (forward + backward) in bf16 at these shapes, and autocast would cast float32 inputs back to bf16.
    widen = q.device.type == "cpu" and torch.is_autocast_enabled("cpu")
    if widen:
        q, k, v = q.float(), k.float(), v.float()
    mask = None
    if blocked is not None:  # additive, as nn.MultiheadAttention turns a bool mask; shared by the heads
        mask = torch.zeros(blocked.shape, dtype=q.dtype, device=q.device).masked_fill_(blocked, float("-inf"))
        mask = mask[:, None]
    with torch.autocast("cpu", enabled=False) if widen else contextlib.nullcontext():
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=attn.dropout if attn.training else 0.0)
    return attn.out_proj(out.transpose(1, 2).reshape(b, length, dim))


class CrossAttentionLayer(nn.Module):
    """Post-norm cross-attention from queries (B, Q, D) to memory (B, S, D)."""

    def __init__(self, d_model: int, nheads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, memory, attn_mask, pos, query_pos):
        """attn_mask (B, Q, S) bool, True = position not attended."""
        out = attend(self.attn, tgt + query_pos, memory + pos, memory, attn_mask)
        return self.norm(tgt + self.dropout(out))


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nheads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, nheads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, query_pos):
        q = k = tgt + query_pos
        out = attend(self.attn, q, k, tgt)
        return self.norm(tgt + self.dropout(out))


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        # ReLU not in place, as in the pixel decoder's FFN: in place on the Linear's view costs a CopySlices
        self.net = nn.Sequential(nn.Linear(d_model, dim_feedforward), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(dim_feedforward, d_model))
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt):
        return self.norm(tgt + self.dropout(self.net(tgt)))


class MLP(nn.Module):
    """Linear layers with ReLU between them (the mask embedding)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Queries attend round-robin to the multi-scale maps, each layer masked by the previous mask prediction.

    forward(multi_scale_features [3 x (B, D, h_l, w_l)], mask_features (B, mask_dim, H, W)) -> ModelOutput
    whose `aux` holds the `dec_layers` earlier predictions (first: learnable queries only).
    """

    checkpoint_segments = False  # recompute each layer's activations in the backward (activation_checkpoint.py)

    def __init__(self, num_classes: int, attributes: tuple[AttributeSpec, ...], hidden_dim: int, num_queries: int,
                 nheads: int, dim_feedforward: int, dec_layers: int, mask_dim: int, in_channels: int,
                 num_feature_levels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads, self.num_layers, self.num_feature_levels = nheads, dec_layers, num_feature_levels
        self.position = SinePositionEncoding(hidden_dim // 2)
        self.cross_attention = nn.ModuleList(CrossAttentionLayer(hidden_dim, nheads, dropout) for _ in range(dec_layers))
        self.self_attention = nn.ModuleList(SelfAttentionLayer(hidden_dim, nheads, dropout) for _ in range(dec_layers))
        self.ffn = nn.ModuleList(FFNLayer(hidden_dim, dim_feedforward, dropout) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # learnable query features
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnable query positions
        self.level_embed = nn.Embedding(num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList(
            nn.Identity() if in_channels == hidden_dim else nn.Conv2d(in_channels, hidden_dim, 1)
            for _ in range(num_feature_levels)
        )
        self.class_head = nn.Linear(hidden_dim, num_classes + 1)
        # single groups: K_a + 1 outputs, unmatched queries are trained towards index K_a ("no object");
        # multi groups: K_a sigmoid logits (their "no object" is the class head's).
        self.attribute_heads = nn.ModuleDict(
            OrderedDict((a.name, nn.Linear(hidden_dim, a.num_logits)) for a in attributes)
        )
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def predict(self, output: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int]):
        """Heads on one stage's decoder output (B, Q, D) -> (ModelOutput, attention mask for the next layer).

        The attention mask (B, Q, h, w) is True where the predicted mask is below 0.5: the next cross-attention
        ignores those positions.
        """
        decoded = self.decoder_norm(output)
        class_logits = self.class_head(decoded)
        attribute_logits = {name: head(decoded) for name, head in self.attribute_heads.items()}
        mask_embed = self.mask_embed(decoded)
        mask_logits = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        resized = F.interpolate(mask_logits, size=attn_size, mode="bilinear", align_corners=False)
        attn_mask = (resized.sigmoid() < 0.5).detach()
        return ModelOutput(class_logits, attribute_logits, mask_logits), attn_mask

    def layer(self, i: int, output: torch.Tensor, src: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
              query_pos: torch.Tensor) -> torch.Tensor:
        """Decoder layer i: masked cross-attention to `src` (B, S, D), self-attention, FFN; (B, Q, D) -> (B, Q, D)."""
        output = self.cross_attention[i](output, src, mask, pos, query_pos)
        output = self.self_attention[i](output, query_pos)
        return self.ffn[i](output)

    def forward(self, multi_scale_features: list[torch.Tensor], mask_features: torch.Tensor,
                return_aux: bool = False, return_attention: bool = False) -> ModelOutput:
        if len(multi_scale_features) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature maps, got {len(multi_scale_features)}")
        srcs, pos, sizes = [], [], []
        for lvl, x in enumerate(multi_scale_features):
            sizes.append(tuple(x.shape[-2:]))
            pos.append(self.position(x).flatten(2).transpose(1, 2))
            srcs.append(self.input_proj[lvl](x).flatten(2).transpose(1, 2) + self.level_embed.weight[lvl])
        b = mask_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        output = self.query_feat.weight.unsqueeze(0).expand(b, -1, -1)

        stages: list[ModelOutput] = []
        pred, attn_mask = self.predict(output, mask_features, sizes[0])
        for i in range(self.num_layers):
            if return_attention:
                pred.attention_mask = attn_mask
            stages.append(pred)
            lvl = i % self.num_feature_levels
            mask = attn_mask.flatten(2)  # (B, Q, S)
            mask = mask & ~mask.all(-1, keepdim=True)  # a query that masks everything attends everywhere
            output = run_segment(self, None, self.layer, i, output, srcs[lvl], mask, pos[lvl], query_pos)
            pred, attn_mask = self.predict(output, mask_features, sizes[(i + 1) % self.num_feature_levels])
        if return_attention:
            pred.attention_mask = attn_mask
        if return_aux:
            pred.aux = stages
        return pred
