"""Semantic and panoptic inference: parity with upstream Mask2Former and with transformers.

(a) Upstream: `upstream_semantic` / `upstream_panoptic` below transcribe MaskFormer.semantic_inference and
    .panoptic_inference of facebookresearch/Mask2Former (mask2former/maskformer_model.py), with its resizing
    (logits up to the padded input, then `sem_seg_postprocess`: crop the padding, resize to the output size),
    which upstream applies before inference whenever instance or panoptic inference is on (its semantic-only
    configs resize the summed scores instead: the same where output size = input size). Ours must equal them on
    the same logits: panoptic maps and segment ids exactly, semantic scores to float rounding.
(b) transformers 5.23.0 (`post_process_semantic_segmentation` / `post_process_panoptic_segmentation` of
    `Mask2FormerImageProcessor`, the torchvision backend once called "fast", and of `Mask2FormerImageProcessorPil`;
    same thresholds, `label_ids_to_fuse` = our stuff classes). Where its definitions differ from upstream's
    (and ours):
    - resizing: it resizes the mask logits to a fixed 384 x 384 (no padding crop); semantic scores are resized to
      `target_sizes` after the sum, panoptic mask *probabilities* (after the sigmoid) before the argmax;
    - mask threshold: its "original area" of a query is score x prob >= 0.5 (it multiplies the probabilities
      by the scores in place first), upstream's prob >= 0.5;
    - painting: it paints every pixel a query wins; upstream only those where that query's prob >= 0.5 too
      (the rest stay void, 0);
    - overlap: it keeps a query when won / area > threshold, upstream when >= threshold;
    - fusing: `label_ids_to_fuse` plays upstream's stuff role, but each fused repeat adds a segments_info entry
      with the same id, and the id counter restarts from the fused id, so a later new segment can reuse an id;
    - nothing kept: its map is float -1, upstream's int32 0; its scores are rounded to 6 digits.
    The comparisons use inputs where these agree (384 x 384 masks, no target size, saturated mask logits whose
    winners are always above 0.5, fused repeats last); `test_transformers_differs_*` pin two differences.
"""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import workbench as wb
from workbench.model.panoptic_inference import panoptic_inference
from workbench.model.semantic_inference import semantic_inference

C, STUFF = 5, (3, 4)  # classes 0-2 things, 3-4 stuff


# ---- (a) upstream, transcribed from maskformer_model.py -------------------------------------------------------
def upstream_resize(mask_logits, padded_size, image_size, output_size):
    x = F.interpolate(mask_logits[None], size=padded_size, mode="bilinear", align_corners=False)[0]
    x = x[:, : image_size[0], : image_size[1]]  # sem_seg_postprocess
    return F.interpolate(x[None], size=output_size, mode="bilinear", align_corners=False)[0]


def upstream_semantic(mask_cls, mask_pred):
    return torch.einsum("qc,qhw->chw", F.softmax(mask_cls, dim=-1)[..., :-1], mask_pred.sigmoid())


def upstream_panoptic(mask_cls, mask_pred, num_classes, stuff, object_mask_threshold=0.8, overlap_threshold=0.8):
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    mask_pred = mask_pred.sigmoid()
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]
    cur_prob_masks = cur_scores.view(-1, 1, 1) * cur_masks
    panoptic_seg = torch.zeros(cur_masks.shape[-2:], dtype=torch.int32)
    segments_info, current_segment_id = [], 0
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info
    cur_mask_ids = cur_prob_masks.argmax(0)
    stuff_memory_list = {}
    for k in range(cur_classes.shape[0]):
        pred_class = cur_classes[k].item()
        isthing = pred_class not in stuff
        mask_area = (cur_mask_ids == k).sum().item()
        original_area = (cur_masks[k] >= 0.5).sum().item()
        mask = (cur_mask_ids == k) & (cur_masks[k] >= 0.5)
        if mask_area > 0 and original_area > 0 and mask.sum().item() > 0:
            if mask_area / original_area < overlap_threshold:
                continue
            if not isthing:
                if int(pred_class) in stuff_memory_list:
                    panoptic_seg[mask] = stuff_memory_list[int(pred_class)]
                    continue
                stuff_memory_list[int(pred_class)] = current_segment_id + 1
            current_segment_id += 1
            panoptic_seg[mask] = current_segment_id
            segments_info.append({"id": current_segment_id, "isthing": bool(isthing), "category_id": int(pred_class)})
    return panoptic_seg, segments_info


def random_logits(seed, q=12, h=16, w=16, confident=8):
    """Class logits where `confident` queries clear 0.8 on a random class; mask logits: each coarse cell owned
    by a random query (positive there), plus noise, so queries overlap a little, some a lot."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(q, C + 1, generator=g)
    picked = torch.randperm(q, generator=g)[:confident]
    cls[picked, torch.randint(0, C, (confident,), generator=g)] += 7.0
    owner = torch.randint(0, q, (1, h // 4, w // 4), generator=g)
    coarse = torch.where(owner == torch.arange(q)[:, None, None], 3.0, -3.0) + 2 * torch.randn(q, h // 4, w // 4,
                                                                                               generator=g)
    masks = F.interpolate(coarse[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return cls, masks + 0.3 * torch.randn(q, h, w, generator=g)


def assert_upstream_panoptic(cls, masks, padded, image, output, **thresholds):
    ours = panoptic_inference(cls, {}, masks, padded, image, output, stuff_classes=STUFF, **thresholds)
    seg, info = upstream_panoptic(cls, upstream_resize(masks, padded, image, output), C, STUFF, **thresholds)
    assert torch.equal(ours["panoptic_seg"], seg)
    assert [{k: s[k] for k in ("id", "isthing", "category_id")} for s in ours["segments_info"]] == info
    probs = cls.softmax(-1)
    for s in ours["segments_info"]:
        assert s["score"] == pytest.approx(float(probs[s["query_index"]].max()), abs=1e-7)
        assert int(probs[s["query_index"]].argmax()) == s["category_id"]
    return ours


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sizes", [((64, 64), (64, 64), (64, 64)), ((64, 64), (60, 52), (90, 70))])
def test_semantic_and_panoptic_equal_upstream_on_random_logits(seed, sizes):
    cls, masks = random_logits(seed)
    padded, image, output = sizes
    ours = semantic_inference(cls, masks, padded, image, output)["sem_seg"]
    theirs = upstream_semantic(cls, upstream_resize(masks, padded, image, output))
    assert ours.shape == (C, *output)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert len(assert_upstream_panoptic(cls, masks, padded, image, output)["segments_info"]) >= 3


def test_chunked_cpu_path_equals_upstream(monkeypatch):
    """Many queries at a large size take several chunks (postprocess._mask_chunks): still upstream's result."""
    from workbench.model import postprocess
    monkeypatch.setattr(postprocess, "CPU_CHUNK_BYTES", 4 * 64 * 64 * 3)  # 3 masks a chunk
    cls, masks = random_logits(7, q=20, confident=14)
    out = assert_upstream_panoptic(cls, masks, (64, 64), (64, 64), (64, 64))
    assert len(out["segments_info"]) >= 3
    sem = semantic_inference(cls, masks, (64, 64), (64, 64))["sem_seg"]
    torch.testing.assert_close(sem, upstream_semantic(cls, upstream_resize(masks, (64, 64), (64, 64), (64, 64))))


def confident(labels, q):
    cls = torch.full((q, C + 1), -5.0)
    cls[:, C] = 5.0  # every other query: no object
    for i, c in labels.items():
        cls[i, C], cls[i, c] = -5.0, 5.0 + 0.1 * i  # distinct scores > 0.99
    return cls


def box(q, boxes, size=16):
    m = torch.full((q, size, size), -10.0)
    for i, (y0, y1, x0, x1) in boxes.items():
        m[i, y0:y1, x0:x1] = 10.0
    return m


def test_all_queries_below_threshold_give_an_empty_map():
    cls, masks = random_logits(0, confident=0)
    cls[:, :C] -= 5
    out = assert_upstream_panoptic(cls, masks, (16, 16), (16, 16), (16, 16))
    assert out["segments_info"] == [] and out["panoptic_seg"].dtype == torch.int32 and not out["panoptic_seg"].any()


def test_a_stuff_class_of_two_queries_is_one_segment_things_stay_apart():
    cls = confident({0: 3, 1: 3, 2: 0, 3: 0}, 6)  # two sky queries, two person queries
    masks = box(6, {0: (0, 4, 0, 16), 1: (4, 8, 0, 16), 2: (8, 16, 0, 8), 3: (8, 16, 8, 16)})
    out = assert_upstream_panoptic(cls, masks, (64, 64), (64, 64), (64, 64))
    info = out["segments_info"]
    assert [(s["category_id"], s["query_index"], s["isthing"]) for s in info] == [(3, 0, False), (0, 2, True),
                                                                                 (0, 3, True)]
    assert int((out["panoptic_seg"] == 1).sum()) == 32 * 64  # both sky queries' pixels under the first one's id


@pytest.mark.parametrize("one_mask_per_chunk", [False, True])
def test_overlap_threshold_rejects_a_mostly_hidden_query_and_ties_go_to_the_first(one_mask_per_chunk, monkeypatch):
    if one_mask_per_chunk:  # the tie between queries 2 and 3 is then decided across chunks
        from workbench.model import postprocess
        monkeypatch.setattr(postprocess, "CPU_CHUNK_BYTES", 4)
    cls = confident({0: 1, 1: 2, 2: 0}, 4)
    cls[3] = cls[2]  # query 3 duplicates query 2 exactly: the tie goes to 2, so 3 wins nothing
    masks = box(4, {0: (0, 8, 0, 8), 1: (0, 8, 0, 10), 2: (8, 16, 8, 16), 3: (8, 16, 8, 16)})
    out = assert_upstream_panoptic(cls, masks, (16, 16), (16, 16), (16, 16))
    # query 1 (score above query 0's) wins 8x10 of its 8x10 pixels; query 0 keeps none of its own -> rejected
    assert [s["query_index"] for s in out["segments_info"]] == [1, 2]
    loose = assert_upstream_panoptic(cls, box(4, {0: (0, 8, 0, 8), 1: (0, 8, 6, 10), 2: (8, 16, 8, 16)}),
                                     (16, 16), (16, 16), (16, 16), overlap_threshold=0.7)
    assert [s["query_index"] for s in loose["segments_info"]] == [0, 1, 2]  # query 0 keeps 48/64 = 0.75 >= 0.7
    strict = panoptic_inference(cls, {}, box(4, {0: (0, 8, 0, 8), 1: (0, 8, 6, 10), 2: (8, 16, 8, 16)}),
                                (16, 16), (16, 16), stuff_classes=STUFF, overlap_threshold=0.8)
    assert [s["query_index"] for s in strict["segments_info"]] == [1, 2]
    at = assert_upstream_panoptic(cls, box(4, {0: (0, 8, 0, 10), 1: (0, 8, 8, 12), 2: (8, 16, 8, 16)}),
                                  (16, 16), (16, 16), (16, 16), overlap_threshold=0.8)
    assert [s["query_index"] for s in at["segments_info"]] == [0, 1, 2]  # 64 / 80 = 0.8 exactly: kept (>=)


def test_segments_carry_their_querys_attributes():
    cls = confident({1: 0, 2: 3}, 3)
    masks = box(3, {1: (0, 8, 0, 16), 2: (8, 16, 0, 16)})
    color = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 4.0]])  # K=2 + no object
    tags = torch.tensor([[0.0, 0.0, 0.0], [2.0, -2.0, 0.5], [-3.0, -3.0, -3.0]])  # multi, K=3
    out = panoptic_inference(cls, {"color": color, "tags": tags}, masks, (16, 16), (16, 16),
                             stuff_classes=STUFF, multi_label={"tags": 0.65})
    thing, stuff = out["segments_info"]
    assert thing["attributes"] == {"color": 1, "tags": [0]}  # sigmoid(2) = 0.88 passes 0.65, sigmoid(0.5) = 0.62 not
    assert thing["attribute_scores"]["color"] == pytest.approx(float(color[1].softmax(-1)[1]))
    assert stuff["attributes"] == {"color": -1, "tags": []}  # no object wins the colour; no tag passes
    assert stuff["attribute_scores"]["color"] == pytest.approx(float(color[2].softmax(-1)[0]))
    assert thing["attribute_scores"]["tags"] == pytest.approx([float(torch.sigmoid(torch.tensor(2.0)))])


def test_model_returns_its_task_and_predicts_any_task_from_one_forward():
    torch.manual_seed(0)
    cfg = wb.ModelConfig.tiny(num_classes=C, task="panoptic", stuff_classes=STUFF, object_mask_threshold=0.0)
    model = wb.build_model(cfg).eval()
    batch = [{"image": torch.randint(0, 255, (3, 60, 50), dtype=torch.uint8), "height": 90, "width": 75}]
    with torch.no_grad():
        pan = model(batch)[0]
        both = model.predict(batch, tasks=("semantic", "instance", "panoptic"))[0]
    assert set(pan) == {"panoptic_seg", "segments_info"} and pan["panoptic_seg"].shape == (90, 75)
    assert torch.equal(pan["panoptic_seg"], both["panoptic_seg"]) and both["sem_seg"].shape == (C, 90, 75)
    assert pan["segments_info"], "threshold 0 keeps some query"
    assert not set(both["labels"].tolist()) & set(STUFF)  # instances are things, as upstream with PANOPTIC_ON
    with pytest.raises(ValueError, match="tasks must name"):
        model.predict(batch, tasks=("panoptc",))
    assert set(wb.build_model(cfg.replace(task="semantic")).eval()(batch)[0]) == {"sem_seg"}


# ---- the task in the config ---------------------------------------------------------------------------------------
def test_task_and_stuff_classes_round_trip_through_a_config_file(tmp_path):
    from workbench.config import RunConfig
    from workbench.config_file import dump_yaml, read_yaml, run_config_from_dict
    cfg = RunConfig(model=wb.ModelConfig.tiny(num_classes=C, task="panoptic", stuff_classes=[4, 3],
                                                 object_mask_threshold=0.5, overlap_threshold=0.6))
    dump_yaml(cfg, tmp_path / "run.yaml")
    back = run_config_from_dict(read_yaml(tmp_path / "run.yaml"))
    assert back == cfg and back.model.stuff_classes == (4, 3) and back.model.thing_classes == (0, 1, 2)
    for preset in ("tiny", "coco_r50", "coco_swin_l"):
        model = getattr(wb.ModelConfig, preset)()
        assert (model.task, model.stuff_classes, model.object_mask_threshold, model.overlap_threshold) == (
            "instance", (), 0.8, 0.8)


@pytest.mark.parametrize("model, message", [
    ({"task": "panoptc"}, r"model: task must be one of \('instance', 'semantic', 'panoptic'\), got 'panoptc'"),
    ({"stuff_classes": [2, 5]}, r"stuff_classes must be class indices in \[0, 5\) \(num_classes\), got \[5\]"),
    ({"stuff_classes": [1, 1]}, "stuff_classes lists a class twice"),
    ({"stuff_classes": [True]}, r"stuff_classes\[0\]: expected int, got bool True"),  # the config file's type check
    ({"stuff_classes": "sky"}, "stuff_classes must be a list of class indices, got 'sky'"),
    ({"overlap_threshold": 1.5}, r"overlap_threshold must be in \[0, 1\], got 1.5"),
])
def test_bad_task_settings_are_config_errors_naming_the_field(model, message):
    from workbench.config_file import ConfigError, run_config_from_dict
    with pytest.raises(ConfigError, match=message):
        run_config_from_dict({"model": {"preset": "tiny", "num_classes": C, **model}})


# ---- (b) transformers ------------------------------------------------------------------------------------------
@pytest.fixture(params=["Mask2FormerImageProcessor", "Mask2FormerImageProcessorPil"])
def proc(request):
    """transformers' processor of either backend (torchvision, the former "fast" one, and PIL)."""
    tf = pytest.importorskip("transformers", reason="transformers (a dev dependency) is the parity reference")
    return getattr(tf, request.param)()


def saturated(seed, q=8, size=96):
    """A background stuff query covering the image and boxes on top (logits +-12: every pixel's winner has prob
    > 0.95 at 384 x 384, so both mask thresholds agree); stuff repeats come last (transformers' id counter)."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(q, C + 1, generator=g)
    labels = [3] + torch.randint(0, 3, (q - 3,), generator=g).tolist() + [4, 4]
    for i, c in enumerate(labels):
        cls[i, c] += 9.0 + 0.5 * torch.rand((), generator=g).item()
    cls[q - 3, C] += 20.0  # one query says "no object"
    masks = torch.full((q, size, size), -12.0)
    masks[0] = 6.0
    for i in range(1, q):
        y, x = torch.randint(0, size - 24, (2,), generator=g).tolist()
        dy, dx = torch.randint(8, 40, (2,), generator=g).tolist()
        masks[i, y : y + dy, x : x + dx] = 12.0
    return cls, masks


@pytest.mark.parametrize("seed", range(4))
def test_semantic_equals_transformers_at_its_384_size(seed, proc):
    cls, masks = random_logits(seed, h=96, w=96)
    out = SimpleNamespace(class_queries_logits=cls[None], masks_queries_logits=masks[None])
    theirs = proc.post_process_semantic_segmentation(out, return_segmentation_scores=True)[0]
    ours = semantic_inference(cls, masks, (384, 384), (384, 384))["sem_seg"]
    torch.testing.assert_close(ours, theirs.segmentation_scores, rtol=1e-5, atol=1e-6)
    top2 = ours.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 1e-4
    assert torch.equal(ours.argmax(0)[clear], theirs.segmentation[clear])


@pytest.mark.parametrize("seed", range(6))
def test_panoptic_equals_transformers_where_definitions_agree(seed, proc):
    cls, masks = saturated(seed)
    out = SimpleNamespace(class_queries_logits=cls[None], masks_queries_logits=masks[None])
    theirs = proc.post_process_panoptic_segmentation(out, threshold=0.8, overlap_mask_area_threshold=0.8,
                                                     label_ids_to_fuse=set(STUFF))[0]
    ours = panoptic_inference(cls, {}, masks, (384, 384), (384, 384), stuff_classes=STUFF)
    assert torch.equal(ours["panoptic_seg"], theirs["segmentation"])
    first = {}
    for s in theirs["segments_info"]:  # a fused repeat is listed again under its id: the first one counts
        first.setdefault(s["id"], s)
    assert [(s["id"], s["category_id"], not s["isthing"]) for s in ours["segments_info"]] == [
        (s["id"], s["label_id"], s["was_fused"]) for s in first.values()]
    assert [round(s["score"], 6) for s in ours["segments_info"]] == [s["score"] for s in first.values()]
    assert len(ours["segments_info"]) >= 3


def test_transformers_differs_by_painting_pixels_below_half_probability(proc):
    """A pixel whose winning query has prob < 0.5 there: transformers paints it, upstream (and we) leave it 0."""
    cls = confident({0: 0}, 2)
    masks = torch.full((2, 96, 96), -12.0)
    masks[0, :48] = 12.0
    masks[0, 48:] = -1.0  # prob 0.27 < 0.5: still query 0's argmax, its only kept query
    out = SimpleNamespace(class_queries_logits=cls[None], masks_queries_logits=masks[None])
    theirs = proc.post_process_panoptic_segmentation(out, threshold=0.8, label_ids_to_fuse=set(STUFF))[0]
    ours = panoptic_inference(cls, {}, masks, (384, 384), (384, 384), stuff_classes=STUFF)
    assert (theirs["segmentation"] == 1).all()
    assert (ours["panoptic_seg"][:190] == 1).all() and not ours["panoptic_seg"][200:].any()


def test_transformers_differs_by_reusing_an_id_after_a_fused_repeat(proc):
    """sky, person, sky again, person: transformers' counter restarts at sky's id, so the second person gets the
    first person's id; upstream (and we) give it a new one."""
    cls = confident({0: 3, 1: 0, 2: 3, 3: 0}, 4)
    masks = box(4, {0: (0, 24, 0, 96), 1: (24, 48, 0, 96), 2: (48, 72, 0, 96), 3: (72, 96, 0, 96)}, size=96)
    out = SimpleNamespace(class_queries_logits=cls[None], masks_queries_logits=masks[None])
    theirs = proc.post_process_panoptic_segmentation(out, threshold=0.8, label_ids_to_fuse=set(STUFF))[0]
    ours = panoptic_inference(cls, {}, masks, (384, 384), (384, 384), stuff_classes=STUFF)
    assert sorted(theirs["segmentation"].unique().tolist()) == [1, 2]
    assert sorted(ours["panoptic_seg"].unique().tolist()) == [1, 2, 3]
