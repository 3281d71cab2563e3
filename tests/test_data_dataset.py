"""The Dataset yields the model's batch format, augments consistently, and feeds the tiny model."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import workbench as wb
from workbench.config import AugmentConfig
from workbench.data.dataset import CocoAttributeDataset, collate, detectron2_dicts
from workbench.data.labelme import convert_labelme
from workbench.data.problems import DataError
from workbench.data.schema import load_schema, schema_from_dict
from workbench.data.synthetic import COLORS, SynthConfig, synthesize
from workbench.data.transforms import build_augmentation

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "data" / "schema.yaml")


@pytest.fixture(scope="module")
def coco_path(tmp_path_factory):
    """The committed sample converted to COCO-with-attributes next to its images."""
    folder = tmp_path_factory.mktemp("sample")
    shutil.copytree(REPO / "data" / "sample", folder, dirs_exist_ok=True)
    convert_labelme(folder, SCHEMA, out=folder / "coco.json", progress=False)
    return folder / "coco.json"


def test_item_matches_the_batch_contract(coco_path):
    ds = CocoAttributeDataset(coco_path)
    coco = json.loads(coco_path.read_text())
    assert len(ds) == len(coco["images"]) == 4
    item = ds[0]
    assert set(item) == {"image", "instances", "image_id", "file_name", "height", "width"}
    image, inst = item["image"], item["instances"]
    assert image.dtype == torch.uint8 and image.shape == (3, item["height"], item["width"])
    t = len(inst["labels"])
    assert t == sum(a["image_id"] == item["image_id"] for a in coco["annotations"]) and t > 0
    assert inst["labels"].dtype == torch.int64 and inst["labels"].shape == (t,)
    assert inst["masks"].dtype == torch.bool and inst["masks"].shape == (t, item["height"], item["width"])
    assert inst["boxes"].dtype == torch.float32 and inst["boxes"].shape == (t, 4)
    assert list(inst["attributes"]) == SCHEMA.attribute_names
    assert all(v.dtype == torch.int64 and v.shape == (t,) for v in inst["attributes"].values())
    assert isinstance(item["image_id"], int) and Path(item["file_name"]).is_file()
    pixels = np.asarray(Image.open(item["file_name"]).convert("RGB"))
    assert np.array_equal(image.permute(1, 2, 0).numpy(), pixels)


def test_labels_boxes_and_attributes_follow_the_file(coco_path):
    coco = json.loads(coco_path.read_text())
    ann = coco["annotations"][0]
    del ann["attributes"]["size"]  # unlabeled -> -1
    ds = CocoAttributeDataset(coco, image_root=coco_path.parent)
    inst = ds[0]["instances"]
    assert inst["labels"][0].item() == SCHEMA.label_of()[ann["category_id"]]
    assert inst["attributes"]["color"][0].item() == ann["attributes"]["color"]
    assert inst["attributes"]["size"][0].item() == -1
    x, y, w, h = ann["bbox"]
    assert inst["boxes"][0].tolist() == [x, y, x + w, y + h]


def test_augmented_items_keep_masks_attributes_and_boxes_together(coco_path):
    aug = build_augmentation(AugmentConfig(image_size=96, min_scale=0.5, max_scale=2.0), train=True)
    ds = CocoAttributeDataset(coco_path, augmentation=aug, seed=3)
    colours = SCHEMA.model_attributes()["color"]
    checked = dropped = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            inst = item["instances"]
            t = len(inst["labels"])
            assert inst["masks"].shape == (t, 96, 96) and inst["boxes"].shape == (t, 4)
            assert all(len(v) == t for v in inst["attributes"].values())
            assert all(m.any() for m in inst["masks"])  # nothing empty is kept
            dropped += len(ds.records[i]["annotations"]) - t
            image = item["image"].permute(1, 2, 0).numpy().astype(float)
            for m, c, box in zip(inst["masks"].numpy(), inst["attributes"]["color"].tolist(), inst["boxes"].tolist()):
                ys, xs = np.nonzero(m)
                assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                if m.sum() >= 30:  # enough pixels for a stable mean colour
                    mean = image[m].mean(axis=0)
                    nearest = min(COLORS, key=lambda n: np.linalg.norm(mean - np.array(COLORS[n])))
                    assert nearest == colours[c]
                    checked += 1
    assert checked > 10 and dropped > 0  # the crop did remove some instances, and the rest was verified


def test_deterministic_per_seed_epoch_and_index(coco_path):
    aug = build_augmentation(AugmentConfig.synthetic(min_scale=0.5, max_scale=1.5), train=True)
    a, b = CocoAttributeDataset(coco_path, augmentation=aug, seed=1), CocoAttributeDataset(coco_path, augmentation=aug, seed=1)
    assert torch.equal(a[2]["image"], b[2]["image"]) and torch.equal(a[2]["instances"]["masks"], b[2]["instances"]["masks"])
    before = a[2]["image"]
    a.set_epoch(1)
    assert not torch.equal(before, a[2]["image"])
    c = CocoAttributeDataset(coco_path, augmentation=aug, seed=2)
    assert not torch.equal(before, c[2]["image"])


def test_loader_collates_to_a_list(coco_path):
    loader = DataLoader(CocoAttributeDataset(coco_path), batch_size=3, collate_fn=collate)
    batch = next(iter(loader))
    assert isinstance(batch, list) and len(batch) == 3 and all("instances" in b for b in batch)


def test_detectron2_dicts(coco_path):
    dicts = detectron2_dicts(coco_path)
    coco = json.loads(coco_path.read_text())
    assert len(dicts) == 4
    d = dicts[0]
    assert set(d) == {"file_name", "height", "width", "image_id", "annotations"} and Path(d["file_name"]).is_file()
    a = d["annotations"][0]
    assert a["bbox_mode"] == 1 and a["bbox"] == coco["annotations"][0]["bbox"]
    assert a["category_id"] == coco["annotations"][0]["category_id"] - 1  # contiguous 0..C-1
    assert set(a["attributes"]) == {"color", "size"} and a["segmentation"]["counts"]


def test_schema_that_does_not_match_the_file_is_refused(coco_path):
    other = schema_from_dict({"categories": ["circle", "square", "triangle"],
                              "attributes": {"color": ["red", "green", "blue"], "size": ["small", "large"]}})
    with pytest.raises(DataError) as e:
        CocoAttributeDataset(coco_path, schema=other)
    assert e.value.codes == ["schema_mismatch"]
    CocoAttributeDataset(coco_path, schema=SCHEMA)


def test_image_size_different_from_the_json_is_an_error(coco_path, tmp_path):
    coco = json.loads(coco_path.read_text())
    coco["images"][0]["width"] += 1
    for a in coco["annotations"]:
        if a["image_id"] == coco["images"][0]["id"]:
            a["segmentation"]["size"][1] += 1  # keep the file consistent, only the image disagrees
    ds = CocoAttributeDataset(coco, image_root=coco_path.parent)
    with pytest.raises(DataError, match="image_size_mismatch"):
        ds[0]


def test_committed_sample_is_what_synth_writes(tmp_path):
    synthesize(tmp_path, 4, seed=0, progress=False)
    for path in sorted((REPO / "data" / "sample").iterdir()):
        if path.suffix == ".json":
            assert json.loads(path.read_text()) == json.loads((tmp_path / path.name).read_text())
        else:
            assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(tmp_path / path.name)))
    assert load_schema(tmp_path / "schema.yaml") == SCHEMA


def test_synthetic_ground_truth_survives_the_converter(tmp_path):
    """The generator's visible masks and labels come back unchanged through labelme -> COCO -> Dataset."""
    from workbench.data.synthetic import make_image

    cfg = SynthConfig(image_size=96)
    synthesize(tmp_path, 6, seed=11, cfg=cfg, progress=False)
    convert_labelme(tmp_path, SCHEMA, out=tmp_path / "coco.json", progress=False)
    ds = CocoAttributeDataset(tmp_path / "coco.json")
    for i in range(6):
        truth = make_image(np.random.default_rng([11, i]), cfg)
        inst = ds[i]["instances"]
        assert np.array_equal(inst["masks"].numpy(), truth.masks)
        assert [SCHEMA.category_names[k] for k in inst["labels"]] == truth.categories
        assert [SCHEMA.model_attributes()["color"][k] for k in inst["attributes"]["color"]] == truth.colors
        assert [SCHEMA.model_attributes()["size"][k] for k in inst["attributes"]["size"]] == truth.sizes
        assert 2 <= len(truth.categories) <= 5


def test_dataset_feeds_the_tiny_model_for_one_training_step(coco_path):
    aug = build_augmentation(AugmentConfig.synthetic(), train=True)
    ds = CocoAttributeDataset(coco_path, augmentation=aug)
    cfg = wb.ModelConfig.tiny(num_classes=ds.schema.num_classes, attributes=ds.schema.model_attributes())
    torch.manual_seed(0)
    model = wb.build_model(cfg)
    model.train()
    batch = next(iter(DataLoader(ds, batch_size=2, collate_fn=collate)))
    losses = model(batch)
    assert losses and all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_attr_color", "loss_attr_size"} <= set(losses)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    sum(losses.values()).backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_synth_refuses_leftovers_of_a_bigger_run(tmp_path, capsys):
    from workbench.cli import main

    assert main(["data", "synth", str(tmp_path), "--images", "3", "--seed", "1", "--size", "64"]) == 0
    assert len(list(tmp_path.glob("*.json"))) == 3
    (tmp_path / "coco.json").write_text("{}")  # a converted file next to them is not a leftover
    assert main(["data", "synth", str(tmp_path), "--images", "3", "--seed", "2", "--size", "64"]) == 0  # same names
    assert main(["data", "synth", str(tmp_path), "--images", "2", "--size", "64"]) == 1  # shapes_00002 would linger
    assert "stale_output" in capsys.readouterr().err


def test_cached_images_give_the_same_items_and_stay_unchanged(coco_path, tmp_path):
    """data.cache_images (issue 14): items equal the uncached ones, epoch after epoch, also when an augmentation
    writes into the image it is given; a missing image is reported when the dataset is built, naming it."""
    aug = build_augmentation(AugmentConfig(image_size=96, min_scale=0.5, max_scale=2.0), train=True)

    def scribbling(image, masks, rng):  # writes into its input, as a user's augmentation may
        image[:4] = 255
        return aug(image, masks, rng)

    plain = CocoAttributeDataset(coco_path, augmentation=scribbling, seed=3)
    cached = CocoAttributeDataset(coco_path, augmentation=scribbling, seed=3, cache_images=True)
    assert cached.images is not None and plain.images is None
    for epoch in range(2):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["instances"]["masks"], b["instances"]["masks"])
    assert not (cached.images[0][:4] == 255).all()
    data = json.loads(coco_path.read_text())
    data["images"][0]["file_name"] = "missing.png"
    broken = tmp_path / "coco.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(DataError, match="missing.png"):
        CocoAttributeDataset(broken, image_root=coco_path.parent, cache_images=True)


def test_high_bit_depth_grayscale_is_scaled_not_clipped(tmp_path):
    """PIL's convert("RGB") clips 16/32-bit grayscale to 255 (and floats to 0): a blank image, trained on and
    drawn in silence. 16-bit keeps its high byte, float [0, 1] is scaled by 255, other ranges are named."""
    from PIL import Image

    from workbench.data.dataset import read_image
    from workbench.data.problems import DataError

    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(tmp_path / "gray16.png")  # mode I;16
    Image.fromarray(ramp.astype(np.int32), mode="I").save(tmp_path / "gray32.tif")
    Image.fromarray((ramp / 65535.0).astype(np.float32), mode="F").save(tmp_path / "float.tif")
    want = (ramp >> 8).astype(np.uint8)
    for name in ("gray16.png", "gray32.tif"):
        image = read_image(tmp_path / name)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert np.array_equal(image[..., 0], want) and np.array_equal(image[..., 2], want), name
    assert np.abs(read_image(tmp_path / "float.tif")[..., 1].astype(int) - want).max() <= 1
    Image.fromarray((ramp.astype(np.int32) * 4), mode="I").save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"wide\.tif.*32-bit integer image with values outside 0\.\.65535"):
        read_image(tmp_path / "wide.tif")
