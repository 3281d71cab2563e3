"""Published Mask2Former weights: parity with transformers (the reference implementation), the four checkpoint
forms, the load report, errors that name the key, training from a checkpoint, and export back to transformers.

The checkpoints are randomly initialised transformers `Mask2FormerForUniversalSegmentation`s (ResNet-50 or
Swin-T backbone, 32 wide heads, 2 encoder and 3 decoder layers, 6 queries, COCO's 80 names), built once per
module and saved as transformers saves them; the upstream files are the same tensors under upstream's names
(`as_upstream`; Swin's backbone names from model/backbones/swin.py's key map).
"""
import json
import os
import pickle
import re
import shutil

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.pretrained import COCO_INSTANCE_CLASSES, read_checkpoint
from workbench.pretrained.safe_pickle import RefusedPickleError

transformers = pytest.importorskip("transformers", reason="transformers (a dev dependency) is the parity reference")
TOL = 1e-4


def transformers_model(backbone="resnet50", seed=0, **overrides):
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig, SwinConfig

    torch.manual_seed(seed)
    stages = ["stage1", "stage2", "stage3", "stage4"]
    if backbone == "resnet50":
        backbone_config = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64,
                                       layer_type="bottleneck", out_features=stages)
    else:  # Swin-T as upstream's COCO model: window 7, drop path 0.3
        backbone_config = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
                                     drop_path_rate=0.3, out_features=stages)
    id2label = dict(enumerate(COCO_INSTANCE_CLASSES))
    args = dict(backbone_config=backbone_config, feature_size=32, mask_feature_size=32, hidden_dim=32,
                encoder_feedforward_dim=64, dim_feedforward=64, encoder_layers=2, decoder_layers=4,
                num_attention_heads=4, num_queries=6, id2label=id2label,
                label2id={v: k for k, v in id2label.items()})
    args.update(overrides)
    model = Mask2FormerForUniversalSegmentation(Mask2FormerConfig(**args)).eval()
    with torch.no_grad():  # move every tensor off its initial value (zeros, ones, 0/1 statistics)
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return model


class Checkpoints:
    """Per backbone, built on first use: (transformers folder, transformers model, our model loaded from it,
    the load report)."""

    def __init__(self, tmp_path_factory):
        self.tmp, self.built = tmp_path_factory, {}

    def __getitem__(self, backbone):
        from transformers import Mask2FormerForUniversalSegmentation

        if backbone not in self.built:
            path = self.tmp.mktemp(backbone) / "m2f"
            transformers_model(backbone).save_pretrained(path)
            hf = Mask2FormerForUniversalSegmentation.from_pretrained(path).eval()
            model = wb.build_model(wb.pretrained_config(path)).eval()
            self.built[backbone] = (path, hf, model, wb.load_pretrained(model, path))
        return self.built[backbone]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return Checkpoints(tmp_path_factory)


@pytest.fixture(scope="module")
def hf_dir(checkpoints):
    return checkpoints["resnet50"][0]


@pytest.fixture(scope="module")
def hf_model(checkpoints):
    return checkpoints["resnet50"][1]


@pytest.fixture(scope="module")
def ours(checkpoints):
    return checkpoints["resnet50"][2:]


def our_stages(model, x):
    with torch.no_grad():
        feats = model.backbone(x)
        pixel = model.pixel_decoder(feats)
        out = model.decoder(pixel.multi_scale_features, pixel.mask_features, return_aux=True)
    return feats, pixel, out


def their_stages(hf, x):
    with torch.no_grad():
        level = hf.model.pixel_level_module
        feats = level.encoder(x).feature_maps
        pixel = level.decoder(feats)
        out = hf(pixel_values=x, output_auxiliary_logits=True)
    return feats, pixel, out


def stage_diffs(model, hf, x) -> dict[str, float]:
    """Max abs difference per stage, in forward order (backbone maps relative to their magnitude)."""
    feats, pixel, out = our_stages(model, x)
    their_feats, their_pixel, their_out = their_stages(hf, x)
    diffs = {}
    for (name, a), b in zip(feats.items(), their_feats):
        diffs[f"backbone {name} (relative)"] = ((a - b).abs().max() / b.abs().max().clamp_min(1e-6)).item()
    for i, (a, b) in enumerate(zip(pixel.multi_scale_features, their_pixel.multi_scale_features)):
        diffs[f"pixel decoder multi-scale {i}"] = (a - b).abs().max().item()
    diffs["pixel decoder mask features"] = (pixel.mask_features - their_pixel.mask_features).abs().max().item()
    assert len(out.aux) == len(their_out.auxiliary_logits)
    for i, (a, b) in enumerate(zip(out.aux, their_out.auxiliary_logits)):
        diffs[f"decoder prediction {i} class"] = (a.class_logits - b["class_queries_logits"]).abs().max().item()
        diffs[f"decoder prediction {i} mask"] = (a.mask_logits - b["masks_queries_logits"]).abs().max().item()
    diffs["final class logits"] = (out.class_logits - their_out.class_queries_logits).abs().max().item()
    diffs["final mask logits"] = (out.mask_logits - their_out.masks_queries_logits).abs().max().item()
    return diffs


# ---- parity with transformers ----
@pytest.mark.parametrize("size", [(64, 96), (72, 88)], ids=["multiple-of-32", "not-multiple-of-32-or-7"])
@pytest.mark.parametrize("backbone", ["resnet50", "swin_t"])
def test_parity_with_transformers(checkpoints, backbone, size):
    _, hf_model, model, _ = checkpoints[backbone]
    torch.manual_seed(1)
    x = torch.randn(2, 3, *size)  # the same normalised batch for both
    diffs = stage_diffs(model, hf_model, x)
    print("\n".join(f"  {k:40s} {v:.3g}" for k, v in diffs.items()))
    first_bad = next((k for k, v in diffs.items() if v >= TOL), None)
    assert first_bad is None, f"ours and transformers diverge first at {first_bad}: {diffs[first_bad]:.3g}"


def test_pretrained_config_reads_the_architecture(hf_dir):
    cfg = wb.pretrained_config(hf_dir, num_classes=3, attributes={"color": ["r", "g"]})
    assert (cfg.backbone, cfg.hidden_dim, cfg.mask_dim, cfg.num_queries, cfg.nheads) == ("resnet50", 32, 32, 6, 4)
    assert (cfg.enc_layers, cfg.enc_dim_feedforward, cfg.dec_layers, cfg.dim_feedforward) == (2, 64, 3, 64)
    assert cfg.num_classes == 3 and cfg.attribute_names == ("color",) and cfg.backbone_norm == "frozen_bn"
    assert wb.pretrained_config(hf_dir).num_classes == 80


# ---- the other checkpoint forms hold the same model ----
UPSTREAM_NAMES = [  # ours -> upstream, written independently of workbench/pretrained/upstream.py
    (r"backbone\.stem\.0\.weight", r"backbone.stem.conv1.weight"),
    (r"backbone\.stem\.1\.(\w+)", r"backbone.stem.conv1.norm.\1"),
    (r"backbone\.stages\.(res\d)\.(\d+)\.conv(\d)\.weight", r"backbone.\1.\2.conv\3.weight"),
    (r"backbone\.stages\.(res\d)\.(\d+)\.bn(\d)\.(\w+)", r"backbone.\1.\2.conv\3.norm.\4"),
    (r"backbone\.stages\.(res\d)\.(\d+)\.downsample\.0\.weight", r"backbone.\1.\2.shortcut.weight"),
    (r"backbone\.stages\.(res\d)\.(\d+)\.downsample\.1\.(\w+)", r"backbone.\1.\2.shortcut.norm.\3"),
    (r"pixel_decoder\.level_embed", r"sem_seg_head.pixel_decoder.transformer.level_embed"),
    (r"pixel_decoder\.encoder\.(\d+)\.ffn\.0\.(\w+)", r"sem_seg_head.pixel_decoder.transformer.encoder.layers.\1.linear1.\2"),
    (r"pixel_decoder\.encoder\.(\d+)\.ffn\.3\.(\w+)", r"sem_seg_head.pixel_decoder.transformer.encoder.layers.\1.linear2.\2"),
    (r"pixel_decoder\.encoder\.(\d+)\.(.*)", r"sem_seg_head.pixel_decoder.transformer.encoder.layers.\1.\2"),
    (r"pixel_decoder\.lateral_conv\.0\.weight", r"sem_seg_head.pixel_decoder.adapter_1.weight"),
    (r"pixel_decoder\.lateral_conv\.1\.(\w+)", r"sem_seg_head.pixel_decoder.adapter_1.norm.\1"),
    (r"pixel_decoder\.output_conv\.0\.weight", r"sem_seg_head.pixel_decoder.layer_1.weight"),
    (r"pixel_decoder\.output_conv\.1\.(\w+)", r"sem_seg_head.pixel_decoder.layer_1.norm.\1"),
    (r"pixel_decoder\.(.*)", r"sem_seg_head.pixel_decoder.\1"),
    (r"decoder\.cross_attention\.(\d+)\.attn\.(.*)", r"sem_seg_head.predictor.transformer_cross_attention_layers.\1.multihead_attn.\2"),
    (r"decoder\.cross_attention\.(\d+)\.norm\.(.*)", r"sem_seg_head.predictor.transformer_cross_attention_layers.\1.norm.\2"),
    (r"decoder\.self_attention\.(\d+)\.attn\.(.*)", r"sem_seg_head.predictor.transformer_self_attention_layers.\1.self_attn.\2"),
    (r"decoder\.self_attention\.(\d+)\.norm\.(.*)", r"sem_seg_head.predictor.transformer_self_attention_layers.\1.norm.\2"),
    (r"decoder\.ffn\.(\d+)\.net\.0\.(.*)", r"sem_seg_head.predictor.transformer_ffn_layers.\1.linear1.\2"),
    (r"decoder\.ffn\.(\d+)\.net\.3\.(.*)", r"sem_seg_head.predictor.transformer_ffn_layers.\1.linear2.\2"),
    (r"decoder\.ffn\.(\d+)\.norm\.(.*)", r"sem_seg_head.predictor.transformer_ffn_layers.\1.norm.\2"),
    (r"decoder\.class_head\.(.*)", r"sem_seg_head.predictor.class_embed.\1"),
    (r"decoder\.(.*)", r"sem_seg_head.predictor.\1"),
]


def as_upstream(model, skip: str | None = None) -> dict[str, np.ndarray]:
    """Our state dict under upstream's names, as numpy arrays (the model zoo's .pkl content); keys starting
    with `skip` left out."""
    out = {}
    for key, value in model.state_dict().items():
        if skip and key.startswith(skip):
            continue
        pattern, template = next((p, t) for p, t in UPSTREAM_NAMES if re.fullmatch(p, key))
        out[re.sub(pattern, template, key)] = value.numpy().copy()
    out["criterion.empty_weight"] = np.ones(81, np.float32)
    return out


def same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def upstream_pkl(ours, tmp_path_factory):
    path = tmp_path_factory.mktemp("upstream") / "model_final_test.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": as_upstream(ours[0]), "__author__": "test", "matching_heuristics": True}, f, protocol=2)
    return path


def test_upstream_pkl_and_pth_load_the_same_model(ours, upstream_pkl, tmp_path):
    model = ours[0]
    assert wb.pretrained_config(upstream_pkl) == model.cfg  # the architecture, from names and shapes alone
    from_pkl = wb.build_model(model.cfg).eval()
    report = wb.load_pretrained(from_pkl, upstream_pkl)
    assert same_state(from_pkl, model)
    assert report.kind == "upstream_pkl" and report.naming == "upstream"
    assert ("criterion.empty_weight", "loss weights of the checkpoint's classes; ours are built from the config") \
        in report.dropped

    pth = tmp_path / "model_final.pth"
    torch.save({"model": {k: torch.from_numpy(v) for k, v in as_upstream(model).items()}, "iteration": 10}, pth)
    from_pth = wb.build_model(model.cfg).eval()
    assert wb.load_pretrained(from_pth, pth).kind == "detectron2_pth"
    assert same_state(from_pth, model)


def test_sharded_and_lone_safetensors(ours, hf_model, tmp_path):
    model = ours[0]
    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="20MB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    sharded = wb.build_model(model.cfg).eval()
    assert wb.load_pretrained(sharded, tmp_path / "sharded").kind == "transformers_dir"
    assert same_state(sharded, model)

    hf_model.save_pretrained(tmp_path / "single")
    lone = tmp_path / "lone" / "weights.safetensors"
    lone.parent.mkdir()
    shutil.copy(tmp_path / "single" / "model.safetensors", lone)
    cfg = wb.pretrained_config(lone)  # no config.json: the architecture from names and shapes
    assert cfg == model.cfg
    single = wb.build_model(cfg).eval()
    report = wb.load_pretrained(single, lone)
    assert report.kind == "safetensors" and report.class_rows.matched_by == "position"
    assert same_state(single, model)


# ---- class-head rows carried over by name; the report ----
def test_class_rows_carried_by_name_and_reported(ours, upstream_pkl, hf_dir):
    source = ours[0]
    cfg = wb.pretrained_config(upstream_pkl, num_classes=3, attributes={"color": ["r", "g", "b"]})
    categories = ["dog", "unicorn", "person"]
    for path in (upstream_pkl, hf_dir):  # COCO's names for upstream, id2label for transformers
        torch.manual_seed(0)
        model = wb.build_model(cfg)
        fresh = {k: v.clone() for k, v in model.state_dict().items()}
        report = wb.load_pretrained(model, path, categories=categories)
        w, b = model.decoder.class_head.weight, model.decoder.class_head.bias
        sw, sb = source.decoder.class_head.weight, source.decoder.class_head.bias
        dog, person = COCO_INSTANCE_CLASSES.index("dog"), COCO_INSTANCE_CLASSES.index("person")
        assert torch.equal(w[0], sw[dog]) and torch.equal(b[0], sb[dog])
        assert torch.equal(w[2], sw[person]) and torch.equal(b[2], sb[person])
        assert torch.equal(w[3], sw[80]) and torch.equal(b[3], sb[80])  # no-object row, always
        assert torch.equal(w[1], fresh["decoder.class_head.weight"][1])  # unicorn: as initialised
        for name, value in model.decoder.attribute_heads.state_dict().items():
            assert torch.equal(value, fresh[f"decoder.attribute_heads.{name}"])

        rows = report.class_rows
        assert rows.carried == {"dog": "dog", "person": "person"} and rows.new == ("unicorn",)
        assert len(rows.dropped) == 78 and "cat" in rows.dropped and rows.matched_by == "name"
        new_keys = [k for k, _ in report.new]
        assert "decoder.attribute_heads.color.weight" in new_keys and "decoder.class_head rows unicorn" in new_keys
        assert "decoder.class_head.weight" in report.loaded and "backbone.stem.0.weight" in report.loaded
        text = str(report)
        assert "unicorn" in text and "attribute head" in text and "carried by name: 2 + no-object" in text
        record = json.loads(json.dumps(report.to_dict()))  # JSON-serialisable for the run directory
        assert record["class_rows"]["new"] == ["unicorn"] and record["kind"] == report.kind


# ---- errors name the key; nothing is loaded ----
def test_trunk_tensor_that_does_not_map_or_fit_is_an_error_naming_the_key(ours, hf_dir, tmp_path):
    model = ours[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def write(state):
        path = tmp_path / "bad.pth"
        torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, path)
        return path

    extra = as_upstream(model)
    extra["sem_seg_head.predictor.extra_proj.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"sem_seg_head\.predictor\.extra_proj\.weight.*no place"):
        wb.load_pretrained(model, write(extra))

    narrow = as_upstream(model)
    key = "sem_seg_head.predictor.transformer_ffn_layers.1.linear1.weight"
    narrow[key] = narrow[key][:10]
    with pytest.raises(ValueError, match=re.escape(key) + r".*shape \(10, 32\).*decoder\.ffn\.1\.net\.0\.weight"):
        wb.load_pretrained(model, write(narrow))

    missing = as_upstream(model)
    del missing["backbone.res4.3.conv2.norm.running_var"]
    with pytest.raises(ValueError, match=r"backbone\.stages\.res4\.3\.bn2\.running_var"):
        wb.load_pretrained(model, write(missing))

    from safetensors.torch import load_file, save_file
    partial = load_file(str(hf_dir / "model.safetensors"))
    del partial["model.transformer_module.decoder.layers.1.self_attn.k_proj.weight"]
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match=r"layers\.1\.self_attn\.q_proj\.weight \+ .*v_proj\.weight: only part"):
        wb.load_pretrained(model, tmp_path / "partial.safetensors")

    deeper = wb.build_model(model.cfg.replace(dec_layers=2))
    with pytest.raises(ValueError, match=r"_layers\.2\..*does not have"):
        wb.load_pretrained(deeper, write(as_upstream(model)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched by the failures


def test_restricted_unpickler_refuses_pickled_classes(tmp_path):
    path = tmp_path / "model_final_evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(2)}, "payload": shutil.rmtree}, f)
    with pytest.raises(RefusedPickleError, match=r"model_final_evil\.pkl.*shutil\.rmtree"):
        read_checkpoint(path)
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(2)}, "when": __import__("datetime").date(2020, 1, 1)}, f)
    with pytest.raises(RefusedPickleError, match=r"datetime\.date"):
        read_checkpoint(path)


def test_unknown_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_checkpoint(tmp_path / "nowhere.pkl")
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"w\.bin.*unknown checkpoint kind"):
        read_checkpoint(tmp_path / "w.bin")
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match=r"folder.*config\.json"):
        read_checkpoint(tmp_path / "folder")
    from safetensors.torch import save_file
    save_file({"encoder.weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"other\.safetensors.*neither"):
        read_checkpoint(tmp_path / "other.safetensors")


# ---- export back to transformers ----
def test_export_round_trip_through_transformers(ours, hf_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import Mask2FormerForUniversalSegmentation

    from workbench.pretrained import export_transformers

    source = ours[0]
    model = wb.build_model(source.cfg.replace(num_classes=2, attributes={"color": ["r", "g", "b"]})).eval()
    wb.load_pretrained(model, hf_dir, categories=["cat", "dog"])
    with torch.no_grad():
        model.decoder.attribute_heads.color.weight.normal_()
    out = export_transformers(model, tmp_path / "export", ["cat", "dog"])
    hf, info = Mask2FormerForUniversalSegmentation.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert hf.config.id2label == {0: "cat", 1: "dog"}
    x = torch.randn(1, 3, 64, 64)
    _, _, mine = our_stages(model, x)
    theirs = hf.eval()(pixel_values=x)
    assert (mine.class_logits - theirs.class_queries_logits).abs().max() < TOL
    assert (mine.mask_logits - theirs.masks_queries_logits).abs().max() < TOL
    heads = load_file(str(out / "attribute_heads.safetensors"))
    assert torch.equal(heads["color.weight"], model.decoder.attribute_heads.color.weight)
    with pytest.raises(FileExistsError, match="not empty"):
        export_transformers(model, out, ["cat", "dog"])
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700: an export is shared


def test_exported_attribute_heads_say_which_are_multi_label(ours, tmp_path):
    """A reader of attribute_heads.safetensors must know softmax over K+1 from K sigmoids and their threshold."""
    import json

    from safetensors import safe_open

    from workbench.config import AttributeSpec
    from workbench.pretrained import export_transformers

    cfg = ours[0].cfg.replace(num_classes=2, attributes={"color": ["r", "g", "b"]})
    cfg = cfg.replace(attributes=cfg.attributes + (AttributeSpec("pattern", ("stripes", "dots"), kind="multi"),))
    out = export_transformers(wb.build_model(cfg).eval(), tmp_path / "export", ["cat", "dog"])
    with safe_open(str(out / "attribute_heads.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["attributes"])
        assert f.get_slice("pattern.weight").get_shape()[0] == 2 and f.get_slice("color.weight").get_shape()[0] == 4
    assert meta["color"] == {"values": ["r", "g", "b"], "kind": "single"}
    assert meta["pattern"]["kind"] == "multi" and meta["pattern"]["threshold"] == cfg.attributes[1].threshold


# ---- the upstream implementation itself, when importable ----
@pytest.mark.parametrize("yaml", ["maskformer2_R50_bs16_50ep.yaml", "swin/maskformer2_swin_tiny_bs16_50ep.yaml"])
def test_parity_with_upstream_detectron2(tmp_path, yaml):
    pytest.importorskip("detectron2", reason="detectron2 is not importable: upstream parity not run")
    mask2former = pytest.importorskip("mask2former", reason="upstream Mask2Former is not importable: "
                                      "upstream parity not run")
    from pathlib import Path

    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model as build_d2_model
    from detectron2.projects.deeplab import add_deeplab_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    mask2former.add_maskformer2_config(cfg)
    cfg.merge_from_file(str(Path(mask2former.__file__).parents[1] / "configs" / "coco" / "instance-segmentation"
                            / yaml))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.MASK_FORMER.HIDDEN_DIM", 32,
                         "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.SEM_SEG_HEAD.MASK_DIM", 32,
                         "MODEL.MASK_FORMER.NHEADS", 4, "MODEL.MASK_FORMER.DIM_FEEDFORWARD", 64,
                         "MODEL.MASK_FORMER.DEC_LAYERS", 4, "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS", 2,
                         "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", 6])
    torch.manual_seed(0)
    upstream = build_d2_model(cfg).eval()
    DetectionCheckpointer(upstream, save_dir=str(tmp_path)).save("model_final")
    path = tmp_path / "model_final.pth"
    model = wb.build_model(wb.pretrained_config(path)).eval()
    wb.load_pretrained(model, path)
    x = torch.randn(1, 3, 72, 88)
    with torch.no_grad():
        theirs = upstream.sem_seg_head(upstream.backbone(x))
    _, _, mine = our_stages(model, x)
    diffs = {"class": (mine.class_logits - theirs["pred_logits"]).abs().max().item(),
             "mask": (mine.mask_logits - theirs["pred_masks"]).abs().max().item()}
    for i, (a, b) in enumerate(zip(mine.aux, theirs["aux_outputs"])):
        diffs[f"prediction {i} class"] = (a.class_logits - b["pred_logits"]).abs().max().item()
        diffs[f"prediction {i} mask"] = (a.mask_logits - b["pred_masks"]).abs().max().item()
    print(diffs)
    assert max(diffs.values()) < TOL, diffs


# ---- training from a checkpoint ----
@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    from workbench.data.synthetic import synthetic_splits

    return synthetic_splits(tmp_path_factory.mktemp("shapes"), 4, 2, image_size=64, progress=False)


def write_config(path, train_json, val_json, weights=None, **solver):
    model = {"loss": {"num_points": 64}, **({"weights": str(weights)} if weights else {})}
    solver = {"batch_size": 2, "max_iter": 2, "log_period": 1, **solver}
    path.write_text(json.dumps({"model": model, "solver": solver, "data": {"train": str(train_json), "val": str(val_json)},
                                "augment": {"image_size": 64, "min_scale": 0.9, "max_scale": 1.1,
                                            "test_shortest_edge": 0}}))  # JSON is YAML
    return path


def test_train_from_yaml_weights_with_frozen_trunk(ours, hf_dir, shapes_data, tmp_path, capsys):
    from workbench.cli import main
    from workbench.engine.checkpoint import load_checkpoint

    config = write_config(tmp_path / "cfg.yaml", *shapes_data, weights=hf_dir, freeze="trunk", head_lr_multiplier=10.0)
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu",
                 "--no-eval"]) == 0
    out = capsys.readouterr().out
    assert out.index("[pretrained]") < out.index("[workbench] device")  # the report comes before the first step
    report = json.loads((tmp_path / "run" / "pretrained_report.json").read_text())
    assert report["class_rows"]["new"] == ["circle", "square", "triangle"]
    assert {"decoder.attribute_heads.color.weight", "decoder.attribute_heads.size.weight"} <= \
        {n["key"] for n in report["new"]}
    final = load_checkpoint(tmp_path / "run" / "model_final.pt")
    assert final["config"]["model"]["hidden_dim"] == 32 and final["config"]["model"]["num_classes"] == 3
    trained, source = final["model"], ours[0].state_dict()
    for key in ("backbone.stem.0.weight", "pixel_decoder.encoder.0.ffn.0.weight", "decoder.ffn.2.net.0.weight"):
        assert torch.equal(trained[key], source[key])  # frozen trunk: exactly the checkpoint's
    assert not torch.equal(trained["decoder.class_head.weight"][-1], source["decoder.class_head.weight"][-1])

    # the fine-tuned run evaluates like any other (segm AP, attribute accuracy on its data.val)
    assert main(["eval", "--run", str(tmp_path / "run"), "--device", "cpu", "--json"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "AP" in metrics["segm"] and {"color", "size"} <= set(metrics["attributes"])

    # `workbench export-weights`: the trained run as a transformers folder, names from the run's data
    from safetensors.torch import load_file
    from transformers import Mask2FormerForUniversalSegmentation

    assert main(["export-weights", str(tmp_path / "run"), "--format", "transformers", str(tmp_path / "hub")]) == 0
    exported = Mask2FormerForUniversalSegmentation.from_pretrained(tmp_path / "hub").eval()
    assert exported.config.id2label == {0: "circle", 1: "square", 2: "triangle"}
    assert torch.equal(exported.class_predictor.weight, trained["decoder.class_head.weight"])
    assert torch.equal(load_file(str(tmp_path / "hub" / "attribute_heads.safetensors"))["size.bias"],
                       trained["decoder.attribute_heads.size.bias"])


def test_weights_flag_overrides_the_yaml_and_resume_does_not_reload(hf_dir, shapes_data, tmp_path, monkeypatch):
    from workbench.cli import main
    from workbench.engine.cli import load_train_config
    from workbench.engine.trainer import train
    from workbench.pretrained import training

    config = write_config(tmp_path / "cfg.yaml", *shapes_data, weights=tmp_path / "missing.pkl")
    with pytest.raises(FileNotFoundError, match=r"missing\.pkl"):
        load_train_config(str(config))
    assert main(["train", "--config", str(config), "--weights", str(hf_dir), "--out", str(tmp_path / "run"),
                 "--device", "cpu", "--no-eval"]) == 0
    assert (tmp_path / "run" / "pretrained_report.json").is_file()

    def reload(*args, **kwargs):
        raise AssertionError("resume reloaded the pretrained weights over last.pt")

    monkeypatch.setattr(training, "load_pretrained", reload)
    cfg = load_train_config(str(config), weights=str(hf_dir))
    result = train(cfg, tmp_path / "run", device="cpu", resume=True, progress=False, max_iter=3)
    assert result.steps == 2  # resumed at its last step (2 = max_iter): nothing reloaded, nothing retrained


def test_head_lr_multiplier_and_freeze():
    from workbench.config import SolverConfig
    from workbench.engine.optim import freeze_parameters, param_groups

    model = wb.build_model(wb.ModelConfig.tiny(num_classes=3, attributes={"color": ["r", "g"]}))
    groups = param_groups(model, SolverConfig(head_lr_multiplier=10.0), 1.0)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.decoder.class_head.weight)] == 10.0
    assert lr_of[id(model.decoder.attribute_heads.color.weight)] == 10.0
    assert lr_of[id(model.decoder.ffn[0].net[0].weight)] == 1.0 and lr_of[id(model.backbone.stem[0][0].weight)] == 0.1
    freeze_parameters(model, "trunk")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"decoder.class_head.weight", "decoder.class_head.bias",
                         "decoder.attribute_heads.color.weight", "decoder.attribute_heads.color.bias"}
    assert sum(len(g["params"]) for g in param_groups(model, SolverConfig(), 1.0)) == 4
    with pytest.raises(ValueError, match="solver.freeze"):
        SolverConfig(freeze="heads")


# ---- Swin-T: the other forms and export ----
def test_swin_checkpoint_forms_and_export(checkpoints, tmp_path):
    from safetensors.torch import save_file
    from transformers import Mask2FormerForUniversalSegmentation

    from workbench.model.backbones.swin import SWIN_VARIANTS, upstream_swin_keys
    from workbench.pretrained import export_transformers

    path, hf, model, report = checkpoints["swin_t"]
    cfg = model.cfg
    assert (cfg.backbone, cfg.backbone_window_size, cfg.backbone_drop_path_rate) == ("swin_t", 7, 0.3)
    assert cfg.backbone_norm == "auto" and report.naming == "transformers"

    state = model.state_dict()
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    upstream = {k: v.numpy() for k, v in upstream_swin_keys(SWIN_VARIANTS["swin_t"].depths)
                .to_source(backbone, prefix="backbone.").items()}
    upstream.update({k: v for k, v in as_upstream(model, skip="backbone.").items()})
    pkl = tmp_path / "model_final_swin.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": upstream}, f)
    assert wb.pretrained_config(pkl) == cfg  # Swin sizes and window from shapes; drop path: upstream's 0.3
    from_pkl = wb.build_model(cfg).eval()
    wb.load_pretrained(from_pkl, pkl)
    assert same_state(from_pkl, model)

    lone = tmp_path / "lone.safetensors"
    shutil.copy(path / "model.safetensors", lone)
    assert wb.pretrained_config(lone) == cfg

    out = export_transformers(model, tmp_path / "export", COCO_INSTANCE_CLASSES)
    again, info = Mask2FormerForUniversalSegmentation.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x = torch.randn(1, 3, 72, 88)
    _, _, mine = our_stages(model, x)
    theirs = again.eval()(pixel_values=x)
    assert (mine.class_logits - theirs.class_queries_logits).abs().max() < TOL
    assert (mine.mask_logits - theirs.masks_queries_logits).abs().max() < TOL


def test_backbone_read_from_names_and_config():
    from workbench.pretrained import transformers as hf
    from workbench.pretrained import upstream

    def blocks(n):
        return {f"backbone.res4.{i}.conv1.weight": torch.zeros(1) for i in range(n)}

    assert upstream.backbone_fields(blocks(6)) == {"backbone": "resnet50"}
    assert upstream.backbone_fields(blocks(23)) == {"backbone": "resnet101"}
    with pytest.raises(ValueError, match="4 res4 blocks"):
        upstream.backbone_fields(blocks(4))
    resnet = {"model_type": "resnet", "depths": [3, 4, 23, 3]}
    assert hf.backbone_fields({}, {"backbone_config": resnet}) == {"backbone": "resnet101"}
    swin = {"model_type": "swin", "embed_dim": 192, "depths": [2, 2, 18, 2], "num_heads": [6, 12, 24, 48],
            "window_size": 12, "drop_path_rate": 0.3}
    assert hf.backbone_fields({}, {"backbone_config": swin}) == \
        {"backbone": "swin_l", "backbone_window_size": 12, "backbone_drop_path_rate": 0.3}
    with pytest.raises(ValueError, match="no Swin variant"):
        hf.backbone_fields({}, {"backbone_config": {**swin, "embed_dim": 100}})


def test_notebook_03_fine_tunes_a_checkpoint_given_in_its_parameters(hf_dir, tmp_path):
    """Notebook 03 with WEIGHTS set: the checkpoint's architecture trains on the demo data (tiny scale here), the
    load report is printed and kept in the run directory."""
    nbformat = pytest.importorskip("nbformat", reason="notebook extra not installed")
    nbclient = pytest.importorskip("nbclient", reason="notebook extra not installed")
    from notebook_parameters import small_parameters
    from test_notebooks import ROOT, inject_parameters

    workdir = tmp_path / "nb"
    workdir.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / "03_train.ipynb", as_version=4)
    values = small_parameters("03_train", tmp_path)
    values.update(WEIGHTS=str(hf_dir), MAX_ITER=2, CHUNKS=1)
    inject_parameters(nb, values)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"[pretrained] {hf_dir}" in printed and "class rows new (3): circle, square, triangle" in printed
    run = tmp_path / "work" / "run"
    report = json.loads((run / "pretrained_report.json").read_text())
    assert len(report["loaded"]) > 300 and report["class_rows"]["new"] == ["circle", "square", "triangle"]
    import yaml

    model_cfg = yaml.safe_load((run / "config.yaml").read_text())["model"]
    assert (model_cfg["backbone"], model_cfg["num_classes"], model_cfg["num_queries"]) == ("resnet50", 3, 6)
    assert (run / "model_final.pt").is_file()


def test_damaged_or_foreign_checkpoint_files_are_named_errors_the_cli_reports(tmp_path):
    """`--weights` given a damaged file: a WorkbenchError naming it (the CLI prints one line), not a raw
    SafetensorError, JSONDecodeError or a 'refused' message for what is only corrupt."""
    from workbench.engine.checkpoint import CheckpointError
    from workbench.errors import WorkbenchError

    noise = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    for name, match in (("noise.safetensors", r"noise\.safetensors: not a readable \.safetensors"),
                        ("noise.pkl", r"noise\.pkl: not a readable pickle"),
                        ("noise.pth", r"noise\.pth: corrupt or truncated")):
        (tmp_path / name).write_bytes(noise)
        with pytest.raises(WorkbenchError, match=match):
            read_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="corrupt"):
        read_checkpoint(tmp_path / "noise.pth")
    torch.save({"model": {"w": torch.ones(2)}}, tmp_path / "protocol4.pth", pickle_protocol=4)  # intact
    with pytest.raises(CheckpointError, match=r"protocol4\.pth: written with a pickle protocol.*pickle_protocol=2"):
        read_checkpoint(tmp_path / "protocol4.pth")
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "mask2former",\n "id2label": {0: "cat"}}')
    with pytest.raises(WorkbenchError, match=r"hub/config\.json:2:15: invalid JSON"):
        read_checkpoint(folder)
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(WorkbenchError, match=r"w\.bin.*unknown checkpoint kind"):
        read_checkpoint(tmp_path / "w.bin")


# ---- issue 24: weights files that would load wrong in silence -------------------------------------------------
def _copy_checkpoint(hf_dir, tmp_path, name="ckpt"):
    folder = tmp_path / name
    shutil.copytree(hf_dir, folder)
    return folder


def test_index_shard_outside_the_checkpoint_folder_is_refused(hf_dir, tmp_path):
    from workbench.pretrained.source import CheckpointFormatError

    folder = _copy_checkpoint(hf_dir, tmp_path)
    from safetensors.torch import load_file

    names = list(load_file(str(folder / "model.safetensors")))
    (folder / "model.safetensors").rename(tmp_path / "outside.safetensors")  # readable, but not the checkpoint's
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {n: "../outside.safetensors" for n in names}}))
    with pytest.raises(CheckpointFormatError, match=r"'\.\./outside\.safetensors', which is not a file name in"):
        read_checkpoint(folder)


def test_non_finite_tensor_is_an_error_naming_it_and_nothing_loads(ours, hf_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from workbench.pretrained.source import CheckpointFormatError

    model = ours[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folder = _copy_checkpoint(hf_dir, tmp_path)
    tensors = load_file(str(folder / "model.safetensors"))
    key = "model.transformer_module.decoder.layers.0.fc1.weight"
    for bad in (float("nan"), float("inf")):
        tensors[key][0, 0] = bad
        save_file(tensors, str(folder / "model.safetensors"))
        with pytest.raises(CheckpointFormatError, match=re.escape(repr(key)) + r".*1 NaN or infinite"):
            wb.load_pretrained(model, folder)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("change, message", [
    (lambda labels: labels.pop("79"), r"id2label names 79 classes but the class head has 80 category rows"),
    (lambda labels: labels.update({"3": labels["2"]}), r"id2label: 'car' names rows 2 and 3"),
], ids=["shorter-than-the-head", "duplicate-name"])
def test_id2label_that_does_not_name_every_row_once_is_an_error(ours, hf_dir, tmp_path, change, message):
    from workbench.pretrained.source import CheckpointFormatError

    folder = _copy_checkpoint(hf_dir, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    change(config["id2label"])
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointFormatError, match=message):
        wb.load_pretrained(ours[0], folder, categories=list(COCO_INSTANCE_CLASSES))


def test_export_then_load_restores_the_trained_attribute_heads(ours, hf_dir, tmp_path):
    """`export-weights` then `--weights` of the export: the same predictions, heads reported as loaded; the files
    get the umask's mode, as the folder does."""
    from workbench.config import AttributeSpec
    from workbench.pretrained import export_transformers

    attributes = {"color": ["r", "g", "b"]}
    cfg = ours[0].cfg.replace(num_classes=2, attributes=attributes)
    cfg = cfg.replace(attributes=cfg.attributes + (AttributeSpec("pattern", ("stripes", "dots"), kind="multi"),))
    trained = wb.build_model(cfg).eval()
    wb.load_pretrained(trained, hf_dir, categories=["cat", "dog"])
    torch.manual_seed(3)
    with torch.no_grad():
        for p in trained.decoder.attribute_heads.parameters():
            p.normal_()
    out = export_transformers(trained, tmp_path / "export", ["cat", "dog"])
    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == {
        n: 0o666 & ~umask for n in ("config.json", "model.safetensors", "attribute_heads.safetensors")}

    loaded = wb.build_model(wb.pretrained_config(out, num_classes=2, attributes=cfg.attributes)).eval()
    report = wb.load_pretrained(loaded, out, categories=["cat", "dog"])
    assert not [k for k, _ in report.new if "attribute_heads" in k]
    assert {"decoder.attribute_heads.color.weight", "decoder.attribute_heads.pattern.bias"} <= set(report.loaded)
    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = trained([{"image": image}])[0], loaded([{"image": image}])[0]
    assert torch.equal(want["labels"], got["labels"]) and torch.equal(want["attributes"]["color"], got["attributes"]["color"])
    assert torch.equal(want["attribute_sets"]["pattern"], got["attribute_sets"]["pattern"])
    torch.testing.assert_close(want["attribute_scores"]["color"], got["attribute_scores"]["color"])

    # a group whose values differ from the file's is fresh, and the report says why
    other = wb.build_model(wb.pretrained_config(out, num_classes=2, attributes={"color": ["r", "g", "x"]})).eval()
    report = wb.load_pretrained(other, out, categories=["cat", "dog"])
    assert any(k == "decoder.attribute_heads.color.weight" and "initialised fresh" in why for k, why in report.new)
