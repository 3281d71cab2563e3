"""Instance inference for one image: upstream's top-k over queries x classes, carrying attributes along.

Each kept instance remembers its `query_index`, so attribute predictions come from *that query of this
image's* decoder output, and tools can trace an instance back to its query.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from workbench.model.chunks import chunk_slices


def resize_mask_logits(mask_logits: torch.Tensor, padded_size: tuple[int, int], image_size: tuple[int, int],
                       output_size: tuple[int, int]) -> torch.Tensor:
    """(K, h, w) logits at stride 4 -> (K, H_out, W_out): up to the padded input, crop padding, resize."""
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, *output_size))
    x = F.interpolate(mask_logits[None], size=padded_size, mode="bilinear", align_corners=False)
    x = x[:, :, : image_size[0], : image_size[1]]
    if tuple(image_size) != tuple(output_size):
        x = F.interpolate(x, size=output_size, mode="bilinear", align_corners=False)
    return x[0]


CPU_CHUNK_BYTES = 2 << 20  # float32 mask logits resized per pass on a CPU: ~L2-sized (fastest of 1-8 MiB here)


def _mask_chunks(n: int, pixels: int, device: torch.device) -> list[slice]:
    """Slices of the n distinct masks resized and scored together. On a CPU, a pass over all n masks at image
    size allocates a few hundred MiB of fresh float temporaries whose first touch (page faults) costs more than
    the arithmetic; chunks of <= CPU_CHUNK_BYTES stay in cache and reuse freed memory (2-3x faster at 512^2 and
    above). Each chunk holds at least as many masks as torch has threads (a short tail joins the chunk before
    it): torch splits a one-mask sum across threads, which rounds differently. Masks are then identical to one
    pass over all n and scores equal to the last bit (bit-identical at the sizes measured, 256^2 to 800 x 1200;
    at odd pixel counts a score can differ in its last bit, as the vectorised sigmoid computes the few elements
    at a chunk's end with its scalar path). On a GPU: one chunk."""
    if device.type != "cpu":
        return [slice(0, n)]
    return chunk_slices(n, max(torch.get_num_threads(), CPU_CHUNK_BYTES // (4 * max(pixels, 1))))


def _masks_and_scores(mask_logits: torch.Tensor, query_index: torch.Tensor, padded_size: tuple[int, int],
                      image_size: tuple[int, int], output_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """mask_logits (Q, h, w), query_index (N,) -> masks bool (N, H, W) and mask scores (N,) = mean probability
    inside the mask.

    Why not simply resize mask_logits[query_index]: the top-k over queries x classes keeps a query once per
    class it scores for, and resizing is per mask, so each distinct query is resized once and the results are
    gathered (bit-identical, 1.2-2x less work; no gather when query_index is already sorted and distinct, as the
    inspector's all-queries call), a chunk of masks at a time (`_mask_chunks`). Each pixel is touched by as few
    passes as the formula allows (the inspector's image switch pays them for every query): the area is an
    integer count of the bool mask read as bytes (exact at any size), and the logits outside the mask are set to
    -inf in place, whose sigmoid is exactly 0, so summing the sigmoids gives, bit for bit, the sum of
    probability x mask without a float copy of the mask or a product pass.
    """
    unique, inverse = torch.unique(query_index, return_inverse=True)
    n = unique.shape[0]
    masks = torch.empty((n, *output_size), dtype=torch.bool, device=mask_logits.device)
    scores = torch.empty(n, dtype=torch.float32, device=mask_logits.device)
    pixels = max(padded_size[0] * padded_size[1], output_size[0] * output_size[1])
    for chunk in _mask_chunks(n, pixels, mask_logits.device):
        logits = resize_mask_logits(mask_logits[unique[chunk]].float(), padded_size, image_size, output_size)
        inside = torch.gt(logits, 0, out=masks[chunk]).flatten(1)
        area = inside.view(torch.uint8).sum(1, dtype=torch.int64).to(logits.dtype)
        probs = F.threshold_(logits, 0.0, float("-inf")).sigmoid_()  # outside the mask: sigmoid(-inf) = 0
        scores[chunk] = probs.flatten(1).sum(1) / (area + 1e-6)
    if n == query_index.shape[0] and torch.equal(unique, query_index):
        return masks, scores
    return masks[inverse], scores[inverse]


def instance_inference(class_logits: torch.Tensor, attribute_logits: dict[str, torch.Tensor],
                       mask_logits: torch.Tensor, padded_size: tuple[int, int], image_size: tuple[int, int],
                       output_size: tuple[int, int] | None = None, topk: int = 100,
                       multi_label: dict[str, float] | None = None, stuff_classes: Sequence[int] = ()) -> dict:
    """One image's logits -> predictions.

    class_logits (Q, C+1), attribute_logits {name: (Q, K+1)}, mask_logits (Q, h, w). Returns
    masks bool (N, H, W), scores (N,) = class prob x mask score, labels (N,), class_scores (N,),
    mask_scores (N,), query_index (N,), attributes {name: (N,)} = top real value (no-object excluded),
    attribute_scores {name: (N,)} = its probability, attribute_no_object {name: (N,)} = no-object probability.

    multi_label {name: threshold} names the multi-label groups (logits (Q, K), sigmoid): they are not in
    `attributes` / `attribute_no_object`; instead attribute_probs {name: (N, K)} holds every value's
    probability and attribute_sets {name: (N, K) bool} the predicted set (prob > threshold), and
    attribute_scores[name] (N,) = the mean over the K values of the probability of the decision taken
    (p where predicted, 1 - p where not), so ranking modes treat a multi group like a single one.

    stuff_classes: dropped from the top-k (after it is taken, so fewer than `topk` may remain), as upstream's
    instance inference drops stuff when panoptic inference is on: instances are things.
    """
    multi_label = dict(multi_label or {})
    output_size = tuple(output_size or image_size)
    num_classes = class_logits.shape[1] - 1
    probs = class_logits.float().softmax(-1)[:, :-1]  # (Q, C)
    k = min(topk, probs.numel())
    class_scores, flat = probs.flatten().topk(k, sorted=True)
    labels = flat % num_classes
    query_index = torch.div(flat, num_classes, rounding_mode="floor")
    if len(stuff_classes):
        thing = ~torch.isin(labels, torch.as_tensor(list(stuff_classes), device=labels.device))
        class_scores, labels, query_index = class_scores[thing], labels[thing], query_index[thing]
    masks, mask_scores = _masks_and_scores(mask_logits, query_index, padded_size, image_size, output_size)
    attributes, attribute_scores, attribute_no_object = {}, {}, {}
    attribute_probs, attribute_sets = {}, {}
    for name, attr_logits in attribute_logits.items():
        if name in multi_label:
            value_probs = attr_logits[query_index].float().sigmoid()  # (N, K)
            chosen = value_probs > multi_label[name]
            attribute_probs[name], attribute_sets[name] = value_probs, chosen
            attribute_scores[name] = torch.where(chosen, value_probs, 1 - value_probs).mean(-1)
            continue
        attr_probs = attr_logits[query_index].float().softmax(-1)  # (N, K+1)
        value_scores, values = attr_probs[:, :-1].max(-1)
        attributes[name], attribute_scores[name] = values, value_scores
        attribute_no_object[name] = attr_probs[:, -1]
    out = {
        "masks": masks,
        "scores": class_scores * mask_scores,
        "labels": labels,
        "class_scores": class_scores,
        "mask_scores": mask_scores,
        "query_index": query_index,
        "attributes": attributes,
        "attribute_scores": attribute_scores,
        "attribute_no_object": attribute_no_object,
    }
    if multi_label:  # keys only for models with multi-label groups: single-only outputs are as before
        out["attribute_probs"], out["attribute_sets"] = attribute_probs, attribute_sets
    return out
