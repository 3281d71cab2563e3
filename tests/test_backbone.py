import pytest
import torch

from workbench.model import backbone as bb


@pytest.mark.parametrize("name", ["tiny", "resnet50"])
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


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        bb.build_backbone("vit")
