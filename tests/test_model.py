"""The whole model through its public API, including one test per seed bug."""
import pytest
import torch

import workbench as wb
from workbench.harness.synthetic import random_images, synthetic_batch


def batch(n=2, size=64, seed=0):
    return synthetic_batch(3, {"color": 3, "size": 3}, batch=n, size=size, seed=seed)


def test_training_forward_returns_only_scalar_losses(tiny_model):
    """Seed bug 1: forward returned predictions while training; the train loop summed a non-scalar."""
    tiny_model.train()
    losses = tiny_model(batch())
    assert isinstance(losses, dict) and losses
    assert all(isinstance(k, str) and k.startswith("loss_") for k in losses)
    assert all(torch.is_tensor(v) and v.dim() == 0 for v in losses.values())
    total = sum(losses.values())
    assert total.dim() == 0 and torch.isfinite(total)
    total.backward()


def test_losses_are_weighted(tiny_model, tiny_cfg):
    tiny_model.train()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    images = batch()
    weighted = tiny_model(images, generator=g())
    from workbench.model.meta_arch import pad_images
    padded = pad_images([b["image"] for b in images], 32, tiny_cfg.pixel_mean)
    raw = tiny_model.criterion(tiny_model.forward_raw(padded, return_aux=True),
                               tiny_model.targets(images, padded.shape[-2:]), generator=g())
    assert weighted["loss_dice"].item() == pytest.approx(5.0 * raw["loss_dice"].item(), rel=1e-5)
    assert weighted["loss_ce_1"].item() == pytest.approx(2.0 * raw["loss_ce_1"].item(), rel=1e-5)
    # one set of terms per prediction: final + learnable-query prediction + one per layer but the last
    assert len(weighted) == 5 * (tiny_cfg.dec_layers + 1)


def test_attribute_heads_have_a_no_object_slot(tiny_model, tiny_cfg):
    """Seed bug 2: heads sized K made unmatched queries' target K out of range."""
    for spec in tiny_cfg.attributes:
        assert tiny_model.decoder.attribute_heads[spec.name].out_features == spec.num_values + 1
    assert tiny_model.decoder.class_head.out_features == tiny_cfg.num_classes + 1


def test_attribute_logits_come_from_each_images_decoder_output(tiny_model):
    """Seed bug 4: logits from query_feat.weight were identical for every image."""
    tiny_model.eval()
    with torch.no_grad():
        raw = tiny_model.forward_raw(random_images(2, 64, 64, seed=1))
        other = tiny_model.forward_raw(random_images(1, 64, 64, seed=2))
    for name, logits in raw.attribute_logits.items():
        assert logits.shape == (2, 10, 4)
        assert not torch.allclose(logits[0], logits[1], atol=1e-4), name
        assert not torch.allclose(logits[0], other.attribute_logits[name][0], atol=1e-4), name


def test_eval_predictions_are_per_image_and_match_raw_outputs(tiny_model):
    tiny_model.eval()
    items = batch(2)
    with torch.no_grad():
        together = tiny_model(items)
        alone = [tiny_model([item])[0] for item in items]
        raw = tiny_model.forward_raw(torch.stack([i["image"].float() for i in items]))
    for b in range(2):
        assert torch.equal(together[b]["query_index"], alone[b]["query_index"])
        for name in ("color", "size"):
            assert torch.allclose(together[b]["attribute_scores"][name], alone[b]["attribute_scores"][name],
                                  atol=1e-5)
            probs = raw.attribute_logits[name][b].softmax(-1)[together[b]["query_index"]]
            assert torch.equal(together[b]["attributes"][name], probs[:, :-1].argmax(-1))
    assert not torch.allclose(together[0]["attribute_scores"]["color"], together[1]["attribute_scores"]["color"])


def test_eval_output_contract(tiny_model, tiny_cfg):
    tiny_model.eval()
    items = batch(2)
    items[1]["image"] = items[1]["image"][:, :50, :40]  # different sizes, padded inside
    with torch.no_grad():
        preds = tiny_model(items)
    assert len(preds) == 2
    p = preds[1]
    k = tiny_cfg.test_topk
    assert p["masks"].dtype == torch.bool and p["masks"].shape == (k, 50, 40)
    for key in ("scores", "labels", "query_index"):
        assert p[key].shape == (k,)
    assert set(p["attributes"]) == set(p["attribute_scores"]) == {"color", "size"}
    assert int(p["labels"].max()) < tiny_cfg.num_classes and int(p["query_index"].max()) < tiny_cfg.num_queries
    assert torch.all(p["scores"][:-1] >= 0) and torch.all(p["attribute_scores"]["size"] <= 1)


def test_forward_raw_contract(tiny_model, tiny_cfg):
    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model.forward_raw(random_images(2, 64, 96))
        with_aux = tiny_model.forward_raw(random_images(2, 64, 96), return_aux=True, return_attention=True)
    assert isinstance(out, wb.ModelOutput)
    assert out.class_logits.shape == (2, 10, 4)
    assert out.mask_logits.shape == (2, 10, 16, 24)
    assert out.aux == []
    assert len(with_aux.aux) == tiny_cfg.dec_layers
    assert with_aux.aux[0].attention_mask.dtype == torch.bool
    with pytest.raises(ValueError, match="multiple of 32"):
        tiny_model.forward_raw(random_images(1, 50, 64))


def test_train_eval_switching(tiny_model):
    items = batch(1)
    tiny_model.train()
    assert isinstance(tiny_model(items), dict)
    tiny_model.eval()
    with torch.no_grad():
        assert isinstance(tiny_model(items), list)
    tiny_model.train()
    assert isinstance(tiny_model(items), dict)


def test_training_needs_instances(tiny_model):
    tiny_model.train()
    with pytest.raises(KeyError, match="instances"):
        tiny_model([{"image": torch.zeros(3, 32, 32, dtype=torch.uint8)}])


def test_tiny_model_overfits_one_image():
    torch.manual_seed(0)
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes={"color": ["r", "g", "b"], "size": ["s", "m", "l"]})
    model = wb.build_model(cfg).train()
    items = batch(1, size=64, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first, steps_to_half = None, None
    for step in range(100):
        total = sum(model(items, generator=torch.Generator().manual_seed(step)).values())
        opt.zero_grad()
        total.backward()
        opt.step()
        first = first if first is not None else total.item()
        if total.item() < 0.5 * first:
            steps_to_half = step + 1
            break
    assert steps_to_half is not None, f"loss did not halve in 100 steps (first {first:.2f}, last {total.item():.2f})"


def test_batch_padding_is_zero_after_normalisation(tiny_cfg):
    from workbench.model.meta_arch import pad_images

    padded = pad_images([torch.full((3, 40, 50), 7, dtype=torch.uint8)], 32, tiny_cfg.pixel_mean)
    assert padded.shape == (1, 3, 64, 64)
    mean = torch.tensor(tiny_cfg.pixel_mean).view(3, 1, 1)
    assert torch.allclose(padded[0, :, 40:, :], mean.expand(3, 24, 64))
    assert torch.all(padded[0, :, :40, :50] == 7)


def test_position_encoding_kept_per_size_equals_a_fresh_one():
    """The sine map is kept per (H, W, device, dtype) (issue 14): a kept map equals a fresh computation, and
    another size (even with the same H, or the same number of positions) gets its own map."""
    from workbench.model.position_encoding import SinePositionEncoding

    enc = SinePositionEncoding(8)
    for h, w in [(4, 6), (4, 6), (4, 5), (6, 4), (3, 8)]:
        got = enc(torch.zeros(2, 1, h, w))
        assert got.shape == (2, 16, h, w)
        assert torch.equal(got[1], enc.encode(h, w, torch.device("cpu")))
    assert len(enc._maps) == 4
    assert enc(torch.zeros(1, 1, 4, 6, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("train", [True, False])
def test_lean_attention_equals_multihead_attention(train):
    """The decoder's `attend` (issue 14: ~10 ops instead of nn.MultiheadAttention's ~40) gives the module's
    own output exactly, with a per-query mask shared by the heads and without one, in train and eval mode."""
    from torch import nn

    from workbench.model.decoder import attend

    torch.manual_seed(0)
    attn = nn.MultiheadAttention(32, 4, batch_first=True).train(train)
    q, k, v = torch.randn(3, 5, 32), torch.randn(3, 7, 32), torch.randn(3, 7, 32)
    blocked = torch.rand(3, 5, 7) > 0.5
    blocked[:, :, 0] = False  # every query attends somewhere
    want = attn(q, k, v, attn_mask=blocked.repeat_interleave(4, dim=0), need_weights=False)[0]
    assert torch.equal(attend(attn, q, k, v, blocked), want)
    assert torch.equal(attend(attn, q, q, v[:, :5]), attn(q, q, v[:, :5], need_weights=False)[0])
