"""Swin backbones (workbench/model/backbones/swin.py): parity with transformers' SwinBackbone and torchvision, key maps,
presets, odd sizes, and the options that do not apply to Swin."""
import dataclasses

import pytest
import torch

import workbench as wb
from workbench.model import backbones as bb
from workbench.model.backbones import swin as S

TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))  # two blocks per stage: one shifted


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter random (transformers zeroes the position-bias tables and sets LayerNorms to 1/0, which
    would hide a wrong bias index or a swapped norm)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)


def _transformers_backbone(tmp_path, window: int):
    """A random transformers SwinBackbone, saved with save_pretrained and read back as the file's tensors."""
    pytest.importorskip("transformers")
    from safetensors.torch import load_file
    from transformers import SwinConfig
    from transformers.models.swin.modeling_swin import SwinBackbone

    config = SwinConfig(embed_dim=TINY["embed_dim"], depths=list(TINY["depths"]), num_heads=list(TINY["num_heads"]),
                        window_size=window, out_features=["stage1", "stage2", "stage3", "stage4"])
    reference = SwinBackbone(config).eval()
    _randomise(reference)
    reference.save_pretrained(tmp_path)
    return reference, load_file(str(tmp_path / "model.safetensors"))


# 224 = 32 x 7 (every stage a whole number of windows); 200x264: not a multiple of 32 nor of 7, res5 is 7x9 (one
# window high: torchvision would drop the vertical shift there); 64x96: res5 2x3, smaller than the window.
@pytest.mark.parametrize("size", [(224, 224), (200, 264), (64, 96)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_parity_with_transformers_swin_backbone(tmp_path, size):
    reference, state = _transformers_backbone(tmp_path, window=7)
    ours = S.SwinBackbone(**TINY, window_size=7).eval()
    ours.load_state_dict(S.transformers_swin_keys(TINY["depths"]).to_ours(state), strict=True)
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(images).feature_maps
        got = ours(images)
    assert list(got) == ["res2", "res3", "res4", "res5"]
    diffs = {}
    for (name, g), e in zip(got.items(), expected):
        assert g.shape == e.shape, name
        diffs[name] = (g - e).abs().max().item()
    print(f"Swin vs transformers SwinBackbone at {size}: max abs diff per stage {diffs}")
    assert max(diffs.values()) < 1e-4, diffs


def test_transformers_key_map_round_trips_the_file(tmp_path):
    """to_source gives back every tensor of the saved file (less what the map ignores), bit for bit: the
    direction an export to transformers needs."""
    _, state = _transformers_backbone(tmp_path, window=7)
    key_map = S.transformers_swin_keys(TINY["depths"])
    back = key_map.to_source(key_map.to_ours(state))
    assert set(back) == {k for k in state if k not in key_map.ignored}
    assert all(torch.equal(back[k], state[k]) for k in back)
    # an unmapped trunk tensor is an error naming it, not a silent partial load
    with pytest.raises(KeyError, match="embeddings.position_embeddings"):
        key_map.to_ours({**state, "embeddings.position_embeddings": torch.zeros(1)})
    del state["encoder.layers.0.blocks.1.attention.self.key.bias"]
    with pytest.raises(KeyError, match="blocks.1.attention.self.key.bias"):
        key_map.to_ours(state)


def test_torchvision_imagenet_weights_load_and_match(tmp_path, monkeypatch):
    """A torchvision SwinTransformer state dict saved where its weights enum caches it: `pretrained=True` loads it
    (through torchvision_swin_keys) and our res5 equals torchvision's features + final norm. 448^2 keeps every
    stage larger than the window, where torchvision's shift rule and ours agree."""
    from torchvision.models import Swin_T_Weights
    from torchvision.models.swin_transformer import SwinTransformer

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setitem(S.SWIN_VARIANTS, "swin_t", dataclasses.replace(S.SWIN_VARIANTS["swin_t"], **TINY))
    reference = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                                window_size=[7, 7]).eval()
    _randomise(reference)
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), bb.cached_weights_path(Swin_T_Weights.IMAGENET1K_V1))
    net = bb.build_backbone("swin_t", pretrained=True).eval()
    assert net.loaded_weights == str(Swin_T_Weights.IMAGENET1K_V1)
    net.norms["res5"].load_state_dict(reference.norm.state_dict())
    images = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        expected = reference.norm(reference.features(images)).permute(0, 3, 1, 2)
        diff = (net(images)["res5"] - expected).abs().max().item()
    assert diff < 1e-4, diff


def test_pretrained_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        bb.build_backbone("swin_t", pretrained=True)
    with pytest.raises(ValueError, match="no ImageNet weights for Swin-L"):
        bb.build_backbone("swin_l", window_size=12, pretrained=True)
    with pytest.raises(ValueError, match="window 7.*backbone_window_size"):
        bb.backbone_from_config(wb.ModelConfig.coco_swin_b(pretrained_backbone=True))
    with pytest.raises(ValueError, match="window 7.*backbone_window_size"):
        S.SwinBackbone(**TINY, window_size=12).load_imagenet("Swin_B_Weights.IMAGENET1K_V1")


@pytest.mark.parametrize("depths", [(2, 2, 6, 2), (2, 2, 18, 2)], ids=["swin_t", "swin_l"])
@pytest.mark.parametrize("make", [S.transformers_swin_keys, S.upstream_swin_keys, S.torchvision_swin_keys],
                         ids=lambda f: f.__name__)
def test_key_maps_cover_every_key_once(make, depths):
    net = S.SwinBackbone(embed_dim=8, depths=depths, num_heads=(1, 1, 1, 1), window_size=3)
    ours = set(net.state_dict())
    key_map = make(depths)
    assert set(key_map.sources).isdisjoint(key_map.new)
    assert set(key_map.sources) | set(key_map.new) == ours
    used = [s for srcs in key_map.sources.values() for s in srcs]
    assert len(used) == len(set(used)), "a source tensor feeds two of our keys"
    assert set(used).isdisjoint(key_map.ignored)
    assert not any("relative_position_index" in k for k in ours), "recomputed buffers are not checkpointed"


def test_relative_position_index_is_recomputed_as_transformers():
    """The buffer the maps ignore is the one every source computes from the window."""
    pytest.importorskip("transformers")
    from transformers.models.swin.modeling_swin import SwinRelativePositionBias

    attn = S.SwinBackbone(**TINY, window_size=5).stages["res2"].blocks[0].attn
    assert torch.equal(attn.relative_position_index, SwinRelativePositionBias(1, (5, 5)).relative_position_index)


def test_upstream_swin_parity_when_importable():
    """Upstream's own D2 SwinTransformer through upstream_swin_keys (needs detectron2 + Mask2Former installed)."""
    upstream = pytest.importorskip("mask2former.modeling.backbone.swin",
                                   reason="upstream Mask2Former (and detectron2) not importable")
    ref = upstream.SwinTransformer(embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4], window_size=7,
                                   drop_path_rate=0.0)
    ref.eval()
    _randomise(ref)
    ours = S.SwinBackbone(**TINY, window_size=7).eval()
    ours.load_state_dict(S.upstream_swin_keys(TINY["depths"]).to_ours(ref.state_dict()), strict=True)
    images = torch.randn(1, 3, 200, 264)
    with torch.no_grad():
        expected, got = ref(images), ours(images)
    for name in expected:
        assert (got[name] - expected[name]).abs().max().item() < 1e-5, name


# --- presets -------------------------------------------------------------------------------------------------------
def test_variants_are_upstreams():
    """Sizes from upstream's configs/coco/instance-segmentation/swin/*.yaml (EMBED_DIM, DEPTHS, NUM_HEADS)."""
    sizes = {n: (v.embed_dim, v.depths, v.num_heads) for n, v in S.SWIN_VARIANTS.items()}
    assert sizes == {
        "swin_t": (96, (2, 2, 6, 2), (3, 6, 12, 24)),
        "swin_s": (96, (2, 2, 18, 2), (3, 6, 12, 24)),
        "swin_b": (128, (2, 2, 18, 2), (4, 8, 16, 32)),
        "swin_l": (192, (2, 2, 18, 2), (6, 12, 24, 48)),
    }
    assert tuple(S.SWIN_VARIANTS) == bb.SWIN_NAMES and set(bb.SWIN_NAMES) <= set(bb.BACKBONE_NAMES)
    assert S.swin_variant_name(192, [2, 2, 18, 2], [6, 12, 24, 48]) == "swin_l"
    with pytest.raises(ValueError, match="no Swin variant"):
        S.swin_variant_name(96, [2, 2, 6, 2], [4, 8, 16, 32])


@pytest.mark.parametrize("preset", ["coco_r50", "coco_r101", "coco_swin_t", "coco_swin_s", "coco_swin_b",
                                    "coco_swin_l"])
def test_preset_backbone_strides_and_channels(preset, monkeypatch):
    """Each preset's backbone, built from the config; Swin-S/B/L with 2 blocks per stage (their widths, heads and
    window are the preset's; only the depth is cut, to keep the test fast)."""
    for name in ("swin_s", "swin_b", "swin_l"):
        monkeypatch.setitem(S.SWIN_VARIANTS, name, dataclasses.replace(S.SWIN_VARIANTS[name], depths=(2, 2, 2, 2)))
    cfg = getattr(wb.ModelConfig, preset)()
    net = bb.backbone_from_config(cfg).eval()
    if cfg.backbone.startswith("swin"):
        width = S.SWIN_VARIANTS[cfg.backbone].embed_dim
        assert net.out_channels == {"res2": width, "res3": 2 * width, "res4": 4 * width, "res5": 8 * width}
        assert net.window_size == cfg.backbone_window_size
    else:
        assert net.out_channels == {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 96))
    for name, f in feats.items():
        stride = bb.FEATURE_STRIDES[name]
        assert tuple(f.shape) == (1, net.out_channels[name], 64 // stride, 96 // stride), name


def test_drop_path_follows_config():
    net = bb.backbone_from_config(wb.ModelConfig.coco_swin_t())
    probs = [b.stochastic_depth.p for s in net.stages.values() for b in s.blocks]
    assert probs[0] == 0.0 and probs[-1] == pytest.approx(0.3) and probs == sorted(probs) and len(probs) == 12


# --- any input size ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (33, 65), (97, 31), (50, 7)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_odd_input_sizes(size):
    net = S.SwinBackbone(**TINY, window_size=7).train()
    images = torch.randn(2, 3, *size, requires_grad=True)
    feats = net(images)
    for name, f in feats.items():
        stride = bb.FEATURE_STRIDES[name]
        assert tuple(f.shape[-2:]) == (-(-size[0] // stride), -(-size[1] // stride)), name
    sum(f.square().mean() for f in feats.values()).backward()
    assert torch.isfinite(images.grad).all()


def test_forward_does_not_depend_on_previous_sizes():
    """A pure function of the input size: a small image first does not change the next result (transformers'
    classification SwinModel shrinks its windows in place)."""
    net = S.SwinBackbone(**TINY, window_size=7).eval()
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = net(images)["res5"]
        net(torch.randn(1, 3, 32, 32))
        assert torch.equal(net(images)["res5"], before)


# --- options that do not apply -------------------------------------------------------------------------------------
def test_options_that_do_not_apply_are_errors():
    with pytest.raises(ValueError, match="backbone_norm.*BatchNorm backbones only"):
        bb.build_backbone("swin_t", norm="frozen_bn")
    with pytest.raises(ValueError, match="backbone_window_size"):
        bb.backbone_from_config(wb.ModelConfig.coco_swin_b(backbone="resnet50"))
    with pytest.raises(ValueError, match="backbone_drop_path_rate"):
        wb.ModelConfig.tiny(backbone_drop_path_rate=1.0)
    with pytest.raises(ValueError, match="backbone_window_size"):
        wb.ModelConfig.tiny(backbone_window_size=0)


def test_config_file_presets():
    from workbench.config_file import ConfigError, model_from_dict

    cfg = model_from_dict({"preset": "coco_swin_l", "num_classes": 5, "num_queries": 50})
    assert (cfg.backbone, cfg.backbone_window_size, cfg.num_classes, cfg.num_queries) == ("swin_l", 12, 5, 50)
    with pytest.raises(ConfigError, match="model.preset.*coco_swin_t"):
        model_from_dict({"preset": "coco_swin_xl"})


def test_docstring_examples():
    import doctest

    assert doctest.testmod(S).failed == 0


def test_model_trains_and_predicts_with_a_swin_backbone(monkeypatch):
    """The whole multi-task model on a (shrunk) swin_t: losses are finite, every Swin parameter gets a gradient,
    and inference returns predictions at an image size that is not a multiple of the window."""
    from workbench.harness.synthetic import synthetic_batch

    monkeypatch.setitem(S.SWIN_VARIANTS, "swin_t", dataclasses.replace(S.SWIN_VARIANTS["swin_t"], **TINY))
    torch.manual_seed(0)
    model = wb.build_model(wb.ModelConfig.tiny(backbone="swin_t", attributes={"color": ["r", "g", "b"]},
                                               backbone_drop_path_rate=0.2))
    batch = synthetic_batch(3, {"color": 3}, batch=2, size=96)
    losses = model.train()(batch)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    preds = model.eval()(batch)
    assert len(preds) == 2 and preds[0]["masks"].shape[-2:] == (96, 96)
