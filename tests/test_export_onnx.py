"""`workbench export RUN_DIR --format onnx`: one exported file, run by onnxruntime on CPU at two image sizes,
matches PyTorch's logits and, through the package's post-processing, its instances."""
import contextlib
import io
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import workbench as wb
from workbench.cli import main
from workbench.config import RunConfig
from workbench.config_file import dump_yaml, to_dict
from workbench.deploy.onnx_export import (DEFORMABLE_ATTENTION_NOTE, InferenceGraph, instances_from_outputs,
                                          output_names, prepare_images)
from workbench.engine.checkpoint import save_checkpoint
from workbench.model import build_model

ATTRS = {"color": ["r", "g", "b"], "size": ["s", "m", "l"],  # single-label (K+1 softmax) and multi-label (K sigmoid)
         "pattern": {"values": ["dots", "stripes", "plain"], "kind": "multi", "threshold": 0.4}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run directory with random weights, exported once through the CLI (the slow part, ~30 s)."""
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    cfg = wb.ModelConfig.tiny(num_classes=3, attributes=ATTRS)
    model = build_model(cfg).eval()
    run = RunConfig(model=cfg, device="cpu")
    (root / "run").mkdir()
    dump_yaml(run, root / "run" / "config.yaml")
    save_checkpoint(root / "run" / "model_final.pt", {"model": model.state_dict(), "config": to_dict(run)})
    out = root / "model.onnx"
    out.write_bytes(b"an earlier export")  # replaced only with --overwrite
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        refused = main(["export", str(root / "run"), "--format", "onnx", str(out)])
        assert out.read_bytes() == b"an earlier export" and "pass --overwrite" in errors.getvalue()
        assert main(["export", str(root / "run"), "--format", "onnx", str(out), "--overwrite"]) == 0
    return model, out, root, printed.getvalue(), refused


def test_export_cli_writes_one_self_contained_file(exported):
    model, out, root, printed, refused = exported
    assert refused == 1  # an existing file was kept until --overwrite
    assert DEFORMABLE_ATTENTION_NOTE in printed  # the reference op replaces the compiled kernel, said once
    assert printed.count("deformable attention") == 1
    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == output_names(model.cfg)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert proto.opset_import[0].version >= 16
    assert {n.op_type for n in proto.graph.node} >= {"GridSample"}
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["workbench.size_divisibility"] == "32"
    assert json.loads(meta["workbench.attributes"])["pattern"] == {"values": ["dots", "stripes", "plain"],
                                                                   "kind": "multi", "threshold": 0.4}
    assert not list(root.glob("*.data")) and not list(root.glob("*.partial"))  # weights inside, nothing half-written


def _images(sizes, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for h, w in sizes]


# padded sizes from ONE file: (64, 96) alone, a batch of two images padded to (128, 64), and a 32 px image that
# model(batch) pads to the graph's minimum 64 (pad_batch): padded to 32 the graph gave all-zero scores
@pytest.mark.parametrize("sizes", [[(64, 96)], [(128, 64), (100, 50)], [(32, 32)]],
                         ids=["64x96", "batch2_128x64", "32x32"])
def test_onnxruntime_matches_pytorch_logits_and_instances(exported, sizes):
    model, out, *_ = exported
    images = _images(sizes, seed=len(sizes))
    x = prepare_images(images, model.cfg)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x})
    with torch.no_grad():
        want = InferenceGraph(model)(torch.from_numpy(x))
    diffs = {name: float(np.abs(g - w.numpy()).max()) for name, g, w in zip(output_names(model.cfg), got, want)}
    print(f"max abs diff at {tuple(x.shape[-2:])}: {diffs}")
    assert all(g.shape == tuple(w.shape) for g, w in zip(got, want))
    assert max(diffs.values()) < 1e-3, diffs

    # the package's post-processing on onnxruntime's arrays gives the instances model(batch) gives
    onnx_pred = instances_from_outputs(got, model.cfg, sizes)
    with torch.no_grad():
        torch_pred = model([{"image": im} for im in images])
    for o, t in zip(onnx_pred, torch_pred):
        assert torch.equal(o["labels"], t["labels"]) and torch.equal(o["query_index"], t["query_index"])
        assert o["masks"].shape == t["masks"].shape == (len(t["labels"]), *t["masks"].shape[-2:])
        assert (o["masks"] != t["masks"]).float().mean() < 1e-4  # a pixel with a logit within 1e-6 of 0 may flip
        torch.testing.assert_close(o["scores"], t["scores"], atol=1e-4, rtol=0)
        for name in ("color", "size"):
            assert torch.equal(o["attributes"][name], t["attributes"][name])
        assert torch.equal(o["attribute_sets"]["pattern"], t["attribute_sets"]["pattern"])  # the multi group's sets
        torch.testing.assert_close(o["attribute_probs"]["pattern"], t["attribute_probs"]["pattern"], atol=1e-4, rtol=0)


def test_export_refuses_a_low_opset_and_bad_example_size(tmp_path):
    from workbench.deploy.onnx_export import export_onnx

    model = build_model(wb.ModelConfig.tiny(num_classes=2))
    with pytest.raises(ValueError, match="opset >= 16"):
        export_onnx(model, tmp_path / "m.onnx", opset=15)
    with pytest.raises(ValueError, match="multiples of size_divisibility 32"):
        export_onnx(model, tmp_path / "m.onnx", example_size=(100, 128))
    assert not (tmp_path / "m.onnx").exists()


def test_deformable_attention_under_export_needs_python_level_shapes(monkeypatch):
    from workbench.ops import MSDeformAttn

    attn = MSDeformAttn(32, n_levels=1, n_heads=4, n_points=2)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    q = torch.zeros(1, 4, 32)
    with pytest.raises(ValueError, match="level_shapes"):
        attn(q, torch.zeros(1, 4, 1, 2), q, torch.tensor([[2, 2]]), torch.tensor([0]))
    assert attn(q, torch.zeros(1, 4, 1, 2), q, torch.tensor([[2, 2]]), torch.tensor([0]), level_shapes=[(2, 2)]).shape == (1, 4, 32)
