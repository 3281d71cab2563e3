"""Typed model outputs. Batch-first everywhere; shapes in field comments."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    """Raw predictions of one decoder stage (the final one carries the others in `aux`).

    class_logits      (B, Q, C+1)  last column is "no object"
    attribute_logits  {name: (B, Q, K_name+1)}  single groups: last column is that head's "no object";
                      {name: (B, Q, K_name)} multi-label groups: one sigmoid logit per value
    mask_logits       (B, Q, h, w) at the mask-feature stride (4)
    aux               earlier stages, first = prediction from the learnable queries; empty unless requested
    attention_masks   (B, Q, h_l, w_l) bool per stage, True = position masked out for the *next* layer's
                      cross-attention; filled only by `forward_raw(..., return_attention=True)`
    """

    class_logits: torch.Tensor
    attribute_logits: dict[str, torch.Tensor]
    mask_logits: torch.Tensor
    aux: list["ModelOutput"] = field(default_factory=list)
    attention_mask: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.class_logits.shape[0]

    @property
    def num_queries(self) -> int:
        return self.class_logits.shape[1]

    def select(self, index: int) -> "ModelOutput":
        """The outputs of one image of the batch, keeping a batch dim of 1."""
        sl = slice(index, index + 1)
        return ModelOutput(
            class_logits=self.class_logits[sl],
            attribute_logits={k: v[sl] for k, v in self.attribute_logits.items()},
            mask_logits=self.mask_logits[sl],
            aux=[a.select(index) for a in self.aux],
            attention_mask=None if self.attention_mask is None else self.attention_mask[sl],
        )

    def detach(self) -> "ModelOutput":
        return ModelOutput(
            class_logits=self.class_logits.detach(),
            attribute_logits={k: v.detach() for k, v in self.attribute_logits.items()},
            mask_logits=self.mask_logits.detach(),
            aux=[a.detach() for a in self.aux],
            attention_mask=self.attention_mask,
        )


@dataclass
class PixelDecoderOutput:
    """mask_features (B, mask_dim, H/4, W/4); multi_scale_features: hidden-dim maps at strides 32, 16, 8."""

    mask_features: torch.Tensor
    multi_scale_features: list[torch.Tensor]
