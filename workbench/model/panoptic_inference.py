"""Panoptic inference for one image: upstream Mask2Former's `panoptic_inference`, with attributes per segment.

Upstream's rules, in its order:
1. each query's score and label = max of its softmax over C+1; a query is kept when its label is a real class
   and its score > `object_mask_threshold`;
2. each pixel goes to the kept query with the largest score x sigmoid(mask) (first query on ties);
3. kept queries in query order: the pixels a query won *and* where its own mask probability is >= 0.5 form its
   segment; it is dropped when it won nothing, its mask (prob >= 0.5) is empty, that segment is empty, or it
   won < `overlap_threshold` of its mask;
4. a stuff class becomes one segment: a later query of the same stuff class paints its pixels with the first
   one's id and adds no segment of its own (so the segment's score, query and attributes are the first one's).
Ids count from 1 in that order; 0 = void.

Rules 3-4 are applied to all kept queries at once (each pixel belongs to at most one query, so painting order
does not matter); only the per-query decisions are a Python loop over the kept queries.
"""
from __future__ import annotations

from typing import Collection

import torch

from workbench.model.postprocess import _mask_chunks, resize_mask_logits


def attribute_predictions(attribute_logits: dict[str, torch.Tensor], query: int,
                          multi_label: dict[str, float]) -> tuple[dict, dict]:
    """One query's attribute values and scores, as instance inference reports them.

    attribute_logits {name: (Q, K+1) single | (Q, K) multi}. Single: the top real value and its probability;
    the value is -1 when the no-object slot's probability exceeds it. Multi: the values whose sigmoid exceeds
    the group's threshold (ascending) and their probabilities."""
    values, scores = {}, {}
    for name, logits in attribute_logits.items():
        logits = logits.detach()  # reported as Python numbers
        if name in multi_label:
            probs = logits[query].float().sigmoid()
            chosen = torch.nonzero(probs > multi_label[name]).flatten()
            values[name], scores[name] = chosen.tolist(), probs[chosen].tolist()
            continue
        probs = logits[query].float().softmax(-1)
        best, value = probs[:-1].max(-1)
        values[name] = -1 if bool(probs[-1] > best) else int(value)
        scores[name] = float(best)
    return values, scores


def _winners(mask_logits: torch.Tensor, scores: torch.Tensor, padded_size, image_size, output_size):
    """Kept queries' mask_logits (N, h, w), scores (N,) -> per pixel the winning query (H, W) int64 (argmax
    of score x sigmoid, first on ties) and each query's mask prob >= 0.5 (N, H, W) bool, a chunk of queries
    at a time (a running max with strict > keeps the first query on ties, as one argmax would)."""
    n = mask_logits.shape[0]
    above = torch.empty((n, *output_size), dtype=torch.bool, device=mask_logits.device)
    best = torch.full(output_size, -1.0, device=mask_logits.device)
    winner = torch.zeros(output_size, dtype=torch.int64, device=mask_logits.device)
    pixels = max(padded_size[0] * padded_size[1], output_size[0] * output_size[1])
    for chunk in _mask_chunks(n, pixels, mask_logits.device):
        probs = resize_mask_logits(mask_logits[chunk].float(), padded_size, image_size, output_size).sigmoid_()
        torch.ge(probs, 0.5, out=above[chunk])
        value, index = probs.mul_(scores[chunk].view(-1, 1, 1)).max(0)
        better = value > best
        best = torch.where(better, value, best)
        winner = torch.where(better, index + chunk.start, winner)
    return winner, above


def panoptic_inference(class_logits: torch.Tensor, attribute_logits: dict[str, torch.Tensor],
                       mask_logits: torch.Tensor, padded_size: tuple[int, int], image_size: tuple[int, int],
                       output_size: tuple[int, int] | None = None, stuff_classes: Collection[int] = (),
                       object_mask_threshold: float = 0.8, overlap_threshold: float = 0.8,
                       multi_label: dict[str, float] | None = None) -> dict:
    """One image's logits -> {"panoptic_seg": int32 (H_out, W_out) segment ids (0 = void), "segments_info":
    [{"id", "category_id", "isthing", "score", "query_index", "attributes", "attribute_scores"}]}.

    class_logits (Q, C+1), attribute_logits {name: (Q, K+1) | (Q, K)}, mask_logits (Q, h, w) at stride 4;
    masks are resized as instance inference resizes them (padding cropped, then to `output_size`).
    multi_label {name: threshold} names the multi-label groups (see `attribute_predictions`).
    """
    output_size = tuple(output_size or image_size)
    multi_label = dict(multi_label or {})
    num_classes = class_logits.shape[-1] - 1
    stuff = {int(c) for c in stuff_classes}
    scores, labels = class_logits.detach().float().softmax(-1).max(-1)
    kept = torch.nonzero((labels != num_classes) & (scores > object_mask_threshold)).flatten()
    panoptic_seg = torch.zeros(output_size, dtype=torch.int32, device=mask_logits.device)
    if kept.numel() == 0:
        return {"panoptic_seg": panoptic_seg, "segments_info": []}
    winner, above = _winners(mask_logits.detach()[kept], scores[kept], padded_size, image_size, output_size)
    n = kept.numel()
    won = torch.bincount(winner.flatten(), minlength=n)  # upstream's mask_area
    mask_area = above.flatten(1).sum(1)  # upstream's original_area
    inside = above.gather(0, winner[None])[0]  # the winner's own prob >= 0.5
    segment_area = torch.bincount(winner[inside], minlength=n)
    lookup = torch.zeros(n, dtype=torch.int32)  # kept query -> segment id it paints (0 = none)
    segments_info, stuff_ids = [], {}
    for k, (w, m, s) in enumerate(zip(won.tolist(), mask_area.tolist(), segment_area.tolist())):
        if not (w > 0 and m > 0 and s > 0) or w / m < overlap_threshold:
            continue
        q, label = int(kept[k]), int(labels[kept[k]])
        if label in stuff and label in stuff_ids:
            lookup[k] = stuff_ids[label]
            continue
        lookup[k] = len(segments_info) + 1
        if label in stuff:
            stuff_ids[label] = int(lookup[k])
        values, value_scores = attribute_predictions(attribute_logits, q, multi_label)
        segments_info.append({"id": int(lookup[k]), "category_id": label, "isthing": label not in stuff,
                              "score": float(scores[q]), "query_index": q, "attributes": values,
                              "attribute_scores": value_scores})
    painted = lookup.to(winner.device)[winner]
    panoptic_seg = torch.where(inside, painted, panoptic_seg)
    return {"panoptic_seg": panoptic_seg, "segments_info": segments_info}
