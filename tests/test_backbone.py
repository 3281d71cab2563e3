import pytest
import torch

from workbench.model import backbones as bb


@pytest.mark.parametrize("name", ["tiny", "resnet50", "resnet101"])
def test_strides_and_channels(name):
    net = bb.build_backbone(name).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 64, 96))
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    for key, f in feats.items():
        stride = bb.FEATURE_STRIDES[key]
        assert f.shape[-2:] == (64 // stride, 96 // stride)
        assert f.shape[1] == net.out_channels[key]


def test_pretrained_weights_never_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="never downloads"):
        bb.build_backbone("resnet50", pretrained=True)


def test_pretrained_weights_load_from_cache(tmp_path, monkeypatch):
    """A state dict in the cache path (what torchvision would have saved) is loaded with weights_only."""
    from torchvision.models import ResNet50_Weights, resnet50

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = resnet50()
    path = bb.cached_weights_path(ResNet50_Weights.IMAGENET1K_V1)
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), path)
    net = bb.build_backbone("resnet50", pretrained=True)
    assert torch.equal(net.stem[0].weight, reference.conv1.weight)
    assert torch.equal(net.stages["res5"][0].conv1.weight, reference.layer4[0].conv1.weight)


def test_resnet101_is_resnet50_with_a_deeper_res4(tmp_path, monkeypatch):
    """Same stem and channels; res4 has 23 bottlenecks (6 in ResNet-50); its ImageNet weights load from the cache."""
    from torchvision.models import ResNet101_Weights, resnet101

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = resnet101()
    (tmp_path / "checkpoints").mkdir()
    torch.save(reference.state_dict(), bb.cached_weights_path(ResNet101_Weights.IMAGENET1K_V1))
    r50, r101 = bb.build_backbone("resnet50"), bb.build_backbone("resnet101", pretrained=True)
    assert r101.out_channels == r50.out_channels
    assert [len(r101.stages[n]) for n in bb.FEATURE_NAMES] == [3, 4, 23, 3]
    assert [len(r50.stages[n]) for n in bb.FEATURE_NAMES] == [3, 4, 6, 3]
    assert torch.equal(r101.stages["res4"][22].conv3.weight, reference.layer3[22].conv3.weight)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        bb.build_backbone("vit")


# --- MobileNetV3-Large -------------------------------------------------------------------------------------------
def test_mobilenet_v3_strides_and_channels():
    net = bb.build_backbone("mobilenet_v3_large").eval()
    assert net.out_channels == {"res2": 24, "res3": 40, "res4": 112, "res5": 960}
    with torch.no_grad():
        feats = net(torch.randn(2, 3, 96, 128))
    assert list(feats) == ["res2", "res3", "res4", "res5"]
    for key, f in feats.items():
        stride = bb.FEATURE_STRIDES[key]
        assert tuple(f.shape) == (2, net.out_channels[key], 96 // stride, 128 // stride), key


def test_mobilenet_v3_random_init_is_offline(tmp_path, monkeypatch):
    """pretrained=False never looks at the cache or the network."""

    def no_network(*args, **kwargs):
        raise AssertionError("a backbone tried to download")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    net = bb.build_backbone("mobilenet_v3_large")
    assert net.loaded_weights is None
    assert not (tmp_path / "checkpoints").exists()


def test_mobilenet_v3_missing_weights_name_both_files(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="deeplabv3_mobilenet_v3_large.*mobilenet_v3_large.*never downloads"):
        bb.build_backbone("mobilenet_v3_large", pretrained=True)


def _save_to_cache(tmp_path, weights, state_dict):
    path = bb.cached_weights_path(weights)
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    torch.save(state_dict, path)
    return path


def test_mobilenet_v3_loads_deeplabv3_backbone_part(tmp_path, monkeypatch):
    """A DeepLabV3-MobileNetV3 checkpoint (random, saved where torchvision caches it): its backbone part lands
    in our stages, in train-time strides (undilated), and the classifier parts are not needed."""
    from torchvision.models.segmentation import DeepLabV3_MobileNet_V3_Large_Weights, deeplabv3_mobilenet_v3_large

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    torch.manual_seed(0)
    weights = DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1
    reference = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=True,
                                             num_classes=len(weights.meta["categories"]))
    with torch.no_grad():  # non-default BN statistics, so loading them is visible
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    _save_to_cache(tmp_path, weights, reference.state_dict())
    net = bb.build_backbone("mobilenet_v3_large", pretrained=True)
    assert net.loaded_weights == str(weights)
    ref_state = reference.backbone.state_dict()
    ours = net.body.state_dict()
    for key, value in ours.items():
        assert torch.equal(value, ref_state[key]), key
    assert len(ours) == len([k for k in ref_state if not k.endswith("num_batches_tracked")])
    # pretrained -> frozen BN by default ("auto"); res5 is at stride 32 although DeepLabV3 dilates it
    from torchvision.ops import FrozenBatchNorm2d

    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 3, 64, 64))["res5"].shape[-1] == 2


def test_mobilenet_v3_falls_back_to_imagenet_weights(tmp_path, monkeypatch):
    from torchvision.models import MobileNet_V3_Large_Weights, mobilenet_v3_large

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = mobilenet_v3_large()
    _save_to_cache(tmp_path, MobileNet_V3_Large_Weights.IMAGENET1K_V1, reference.state_dict())
    net = bb.build_backbone("mobilenet_v3_large", pretrained=True, norm="bn")
    assert net.loaded_weights == str(MobileNet_V3_Large_Weights.IMAGENET1K_V1)
    assert torch.equal(net.body["16"][0].weight, reference.features[16][0].weight)
    assert torch.equal(net.body["4"].block[1][0].weight, reference.features[4].block[1][0].weight)


# --- frozen BatchNorm ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenet_v3_large", "resnet50"])
def test_frozen_bn_does_not_change_in_train_mode(name):
    from torchvision.ops import FrozenBatchNorm2d

    torch.manual_seed(0)
    net = bb.build_backbone(name, norm="frozen_bn").train()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    frozen = [m for m in net.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen
    # affine and statistics are buffers: no parameters, hence no gradients and nothing an optimiser can move
    assert all(len(list(m.parameters())) == 0 for m in frozen)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    feats = net(torch.randn(2, 3, 64, 64))
    sum(f.mean() for f in feats.values()).backward()
    after = net.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), f"{key} changed in a train-mode forward"
    for m in frozen:
        assert all(b.grad is None for b in m.buffers())


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "resnet50"])
def test_trainable_bn_updates_statistics(name):
    """The contrast: with norm="bn" a train-mode forward moves the running statistics."""
    torch.manual_seed(0)
    net = bb.build_backbone(name, norm="bn").train()
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = bns[0].running_mean.clone()
    net(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before, bns[0].running_mean)
    assert bns[0].weight.requires_grad


def test_norm_auto_follows_pretrained(tmp_path, monkeypatch):
    """"auto": trainable BN from scratch, frozen BN when pretrained (upstream's fine-tuning choice)."""
    from torchvision.models import ResNet50_Weights, resnet50
    from torchvision.ops import FrozenBatchNorm2d

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert isinstance(bb.build_backbone("resnet50").stem[1], torch.nn.BatchNorm2d)
    _save_to_cache(tmp_path, ResNet50_Weights.IMAGENET1K_V1, resnet50().state_dict())
    assert isinstance(bb.build_backbone("resnet50", pretrained=True).stem[1], FrozenBatchNorm2d)
    assert isinstance(bb.build_backbone("resnet50", pretrained=True, norm="bn").stem[1], torch.nn.BatchNorm2d)


def test_backbone_from_config_reads_norm():
    import workbench as wb
    from torchvision.ops import FrozenBatchNorm2d

    cfg = wb.ModelConfig.tiny(backbone="mobilenet_v3_large", backbone_norm="frozen_bn")
    net = bb.backbone_from_config(cfg)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    with pytest.raises(ValueError, match="backbone_norm"):
        wb.ModelConfig.tiny(backbone_norm="sync_bn")
    with pytest.raises(ValueError, match="BatchNorm from scratch"):
        bb.build_backbone("tiny", norm="frozen_bn")


def test_model_builds_the_backbone_its_config_asks_for():
    from torchvision.ops import FrozenBatchNorm2d

    import workbench as wb

    model = wb.build_model(wb.ModelConfig.tiny(backbone="resnet50", backbone_norm="frozen_bn"))
    norms = [m for m in model.backbone.modules() if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d))]
    assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
