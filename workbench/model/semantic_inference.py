"""Semantic inference for one image: upstream Mask2Former's `semantic_inference`.

Every query votes for every class with its class probability (no-object column dropped) times its mask
probability: sem_seg[c] = sum_q softmax(class_logits)[q, c] * sigmoid(mask_logits)[q]. The argmax over classes
is the label map; the scores themselves are what upstream's SemSegEvaluator reads.

The mask logits are resized as the instance path resizes them (up to the padded input, padding cropped, then
to the output size) *before* the sigmoid: upstream does this whenever instance or panoptic inference is on
(`sem_seg_postprocess_before_inference`); its semantic-only configs resize the summed scores instead, which
differs only when the output size differs from the input size (test-time resizing).
"""
from __future__ import annotations

import torch

from workbench.model.postprocess import _mask_chunks, resize_mask_logits


def semantic_inference(class_logits: torch.Tensor, mask_logits: torch.Tensor, padded_size: tuple[int, int],
                       image_size: tuple[int, int], output_size: tuple[int, int] | None = None) -> dict:
    """class_logits (Q, C+1), mask_logits (Q, h, w) -> {"sem_seg": float32 (C, H_out, W_out) class scores}.

    On a CPU the queries are resized and summed a cache-sized chunk at a time (postprocess._mask_chunks), so
    the (Q, H, W) probabilities of all queries never exist at once; the sums agree with one einsum to float
    rounding.
    """
    output_size = tuple(output_size or image_size)
    probs = class_logits.float().softmax(-1)[:, :-1]  # (Q, C)
    num_queries, num_classes = probs.shape
    sem_seg = probs.new_zeros((num_classes, output_size[0] * output_size[1]))
    pixels = max(padded_size[0] * padded_size[1], output_size[0] * output_size[1])
    for chunk in _mask_chunks(num_queries, pixels, mask_logits.device):
        masks = resize_mask_logits(mask_logits[chunk].float(), padded_size, image_size, output_size).sigmoid_()
        sem_seg.addmm_(probs[chunk].T, masks.flatten(1))  # (C, q) @ (q, H*W)
    return {"sem_seg": sem_seg.view(num_classes, *output_size)}
