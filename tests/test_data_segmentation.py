"""Per-task targets of SegmentationDataset, their alignment through augmentation, and the synthetic stuff."""
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pytest
import yaml
from PIL import Image

from workbench.cli import main
from workbench.data.coco_panoptic import id_to_rgb, ignore_mask, load_coco_panoptic, read_panoptic_png
from workbench.data.masks import mask_to_rle
from workbench.data.schema import load_schema, schema_from_dict
from workbench.data.segmentation import SegmentationDataset
from workbench.data.synthetic import SynthConfig, make_image, synthetic_schema, synthetic_splits
from workbench.data.transforms import Compose, CropPad, HFlip, Resize
from workbench.errors import UsageError

H, W = 20, 30
SCHEMA = schema_from_dict({"categories": ["car", {"name": "road", "isthing": False}],
                           "attributes": {"color": ["red", "blue"],
                                          "state": {"values": ["wet", "dry", "icy"], "kind": "multi"}}})


def dataset(tmp_path, **kwargs) -> SegmentationDataset:
    """road (top rows, attributes), two cars of different colours, a crowd of cars, void elsewhere, and a
    marked ignore region (labelme __ignore__) in the bottom-right corner."""
    ids = np.zeros((H, W), np.int32)
    ids[:6] = 1
    ids[8:14, 1:6] = 2
    ids[8:12, 10:18] = 3
    ids[15:19, 2:9] = 4
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = np.arange(W)[None]  # the image says where its pixels came from
    image[..., 1] = np.arange(H)[:, None]
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "pan").mkdir()
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "pan" / "a.png")
    ignore = np.zeros((H, W), bool)
    ignore[16:, 24:] = True
    segments = [{"id": 1, "category_id": 2, "iscrowd": 0, "attributes": {"state": [0, 2]}},
                {"id": 2, "category_id": 1, "iscrowd": 0, "attributes": {"color": 0}},
                {"id": 3, "category_id": 1, "iscrowd": 0, "attributes": {"color": 1}},
                {"id": 4, "category_id": 1, "iscrowd": 1}]
    data = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
            "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments,
                             "ignore_segmentation": mask_to_rle(ignore)}], **SCHEMA.coco_header()}
    (tmp_path / "pan.json").write_text(json.dumps(data))
    return SegmentationDataset.from_coco_panoptic(tmp_path / "pan.json", **kwargs)


def fresh(tmp_path, name):
    (tmp_path / name).mkdir()
    return tmp_path / name


@dataclass(frozen=True)
class Fixed:
    """A deterministic augmentation step (the transform every draw returns)."""

    transform: object

    def get_transform(self, height, width, rng):
        return self.transform


def compose(*transforms):
    return Compose([Fixed(t) for t in transforms])


def source_masks(ds):
    """Each original segment's mask, the crowd and the marked ignore region, keyed by segment id."""
    r = ds.records[0]
    ids = read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], H, W)
    return {k: ids == k for k in (1, 2, 3, 4)}, ignore_mask(r)


def test_panoptic_targets_one_per_non_crowd_segment_stuff_included(tmp_path):
    ds = dataset(tmp_path)
    item = ds[0]
    inst = item["instances"]
    masks, marked = source_masks(ds)
    assert inst["labels"].tolist() == [1, 0, 0]  # road (stuff), car red, car blue; the crowd is no target
    for t, k in enumerate((1, 2, 3)):
        np.testing.assert_array_equal(inst["masks"][t].numpy(), masks[k])
    assert inst["attributes"]["color"].tolist() == [-1, 0, 1]
    assert inst["attributes"]["state"].tolist() == [[True, False, True], [False] * 3, [False] * 3]
    assert inst["attribute_labeled"]["state"].tolist() == [True, False, False]
    np.testing.assert_array_equal(inst["ignore"].numpy(), masks[4] | marked)  # crowd + marked; void is not
    assert "sem_seg" not in item
    instance = dataset(fresh(tmp_path, "i"), task="instance")[0]
    assert instance["instances"]["labels"].tolist() == [0, 0]  # things only


def test_semantic_targets_one_per_class_and_attributes_only_where_segments_agree(tmp_path):
    item = dataset(tmp_path, task="semantic")[0]
    inst = item["instances"]
    masks, marked = source_masks(dataset(fresh(tmp_path, "b")))
    assert inst["labels"].tolist() == [0, 1]
    np.testing.assert_array_equal(inst["masks"][0].numpy(), masks[2] | masks[3] | masks[4])  # crowd pixels are car
    np.testing.assert_array_equal(inst["masks"][1].numpy(), masks[1])
    assert inst["attributes"]["color"].tolist() == [-1, -1]  # the two cars disagree; road has none
    assert inst["attributes"]["state"][1].tolist() == [True, False, True]
    assert inst["attribute_labeled"]["state"].tolist() == [False, True]
    void = ~(masks[1] | masks[2] | masks[3] | masks[4])
    np.testing.assert_array_equal(inst["ignore"].numpy(), void | marked)  # label 255
    sem = item["sem_seg"].numpy()
    assert (sem[masks[1]] == 1).all() and (sem[masks[3]] == 0).all() and (sem[void] == 255).all()


def test_semantic_attribute_kept_when_every_segment_agrees(tmp_path):
    ds = dataset(tmp_path, task="semantic")
    ds.records[0]["segments_info"][2]["attributes"] = {"color": 0, "state": -1}
    assert ds[0]["instances"]["attributes"]["color"].tolist() == [0, -1]


@pytest.mark.parametrize("transforms", [
    (HFlip(),),
    (CropPad(3, 7, 14, 16),),
    (HFlip(), CropPad(5, 12, 20, 25)),  # the window leaves the image: padding
    (Resize(40, 60), HFlip(), CropPad(10, 5, 30, 30)),
])
def test_crops_and_flips_keep_masks_ignore_and_attributes_aligned(tmp_path, transforms):
    plain = dataset(tmp_path)
    ds = dataset(fresh(tmp_path, "x"), augmentation=compose(*transforms))
    masks, marked = source_masks(plain)

    def moved(mask):
        for t in transforms:
            mask = t.apply_masks(mask[None])[0]
        return mask

    item = ds[0]
    inst = item["instances"]
    image = item["image"].numpy()
    colour_of = {2: 0, 3: 1}
    for t in range(len(inst["labels"])):
        mask = inst["masks"][t].numpy()
        x, y = image[0][mask].astype(int), image[1][mask].astype(int)  # where the pixels came from
        origin = {k for k, m in masks.items() if m[y, x].all()}
        assert len(origin) == 1, "each target's pixels come from one segment"
        (k,) = origin
        np.testing.assert_array_equal(mask, moved(masks[k]))
        assert inst["attributes"]["color"][t].item() == colour_of.get(k, -1)
    np.testing.assert_array_equal(inst["ignore"].numpy(), moved(masks[4] | marked))
    sem = dataset(fresh(tmp_path, "s"), task="semantic",
                  augmentation=compose(*transforms))[0]["instances"]["ignore"].numpy()
    padding = ~moved(np.ones((H, W), bool))
    assert (sem[padding]).all()  # semantic: padding is label 255, as upstream pads
    assert not inst["ignore"].numpy()[padding & ~moved(masks[4] | marked)].any()  # panoptic: void, not ignore


def test_semantic_pngs_train_semantic_only(tmp_path):
    (tmp_path / "lab").mkdir()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "lab" / "a.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "classes.yaml").write_text("[road, car]")
    ds = SegmentationDataset.from_semantic(tmp_path / "lab", tmp_path, tmp_path / "classes.yaml")
    assert ds[0]["instances"]["labels"].tolist() == [0]
    with pytest.raises(UsageError, match="semantic label PNGs have no instances"):
        SegmentationDataset.from_semantic(tmp_path / "lab", tmp_path, tmp_path / "classes.yaml", task="panoptic")


# --- synthetic data --------------------------------------------------------------------------------------------
def tree_digest(folder) -> str:
    """JSON/YAML bytes and PNG pixels (not the PNG encoder's bytes) of every file under `folder` but synth's
    record of what it wrote (`.synth.sha256`, issue 24: newer than the digest)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ".synth.sha256":
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(np.asarray(Image.open(p)).tobytes() if p.suffix == ".png" else p.read_bytes())
    return h.hexdigest()


def test_instance_demo_files_are_unchanged_by_the_stuff_option(tmp_path):
    """Digest of synthetic_splits' output computed with the code before stuff existed (main at 67209c4)."""
    synthetic_splits(tmp_path, 3, 2, image_size=64, progress=False)
    synthetic_splits(tmp_path / "p", 2, 1, image_size=64, progress=False, patterns=True)
    assert tree_digest(tmp_path) == "203fd2e6a86747c40af23dad8171d3694296ee6970b9a484c020a3a3b66704d0"


def test_synthetic_stuff_bands_cover_the_background_with_their_tone(tmp_path):
    sample = make_image(np.random.default_rng([0, 3]), SynthConfig(image_size=64, stuff=True))
    assert [s["label"].split()[0] for s in sample.shapes[:2]] == ["sky", "ground"]
    train, _ = synthetic_splits(tmp_path, 4, 1, image_size=64, progress=False, task="panoptic")
    records, schema = load_coco_panoptic(train)  # image names resolve from the JSON
    assert schema.stuff_classes == (3, 4) and schema == synthetic_schema(stuff=True)
    for r in records:
        ids = read_panoptic_png(r["pan_seg_file_name"], r["segments_info"], 64, 64)
        assert (ids > 0).all(), "no void: every pixel is sky, ground or a shape"
        image = np.asarray(Image.open(r["file_name"])).astype(float)
        by_label = {s["category_id"]: s for s in r["segments_info"] if not s["isthing"]}
        sky, ground = by_label[3], by_label[4]
        rows_sky = np.nonzero((ids == sky["id"]).any(axis=1))[0]
        rows_ground = np.nonzero((ids == ground["id"]).any(axis=1))[0]
        assert rows_sky.max() < rows_ground.min(), "sky above the horizon, ground below"
        for s in (sky, ground):
            tone = ("light", "dark")[s["attributes"]["tone"]]
            mean = image[ids == s["id"]].mean()
            name = "sky" if s is sky else "ground"
            expected = {("sky", "light"): 200, ("sky", "dark"): 110, ("ground", "light"): 160, ("ground", "dark"): 60}
            assert abs(mean - expected[(name, tone)]) < 25
        assert all(s["attributes"]["tone"] == -1 for s in r["segments_info"] if s["isthing"])
    sem_train, _ = synthetic_splits(tmp_path / "s", 2, 1, image_size=64, progress=False, task="semantic")
    ds = SegmentationDataset.from_semantic(sem_train / "labels", sem_train.parent, sem_train / "classes.yaml")
    assert not ds[0]["instances"]["ignore"].any() and {3, 4} <= set(ds[0]["instances"]["labels"].tolist())


def test_cli_synth_task_panoptic_writes_a_stuff_schema(tmp_path):
    assert main(["data", "synth", str(tmp_path / "d"), "--images", "2", "--size", "48", "--task", "panoptic"]) == 0
    schema = load_schema(tmp_path / "d" / "schema.yaml")
    assert schema.stuff_classes == (3, 4) and "tone" in schema.attribute_names
    assert yaml.safe_load((tmp_path / "d" / "schema.yaml").read_text())["categories"][3]["isthing"] is False
    assert main(["data", "convert", str(tmp_path / "d"), "--schema", str(tmp_path / "d" / "schema.yaml"),
                 "--out", str(tmp_path / "d" / "pan"), "--task", "panoptic"]) == 0


def test_open_dataset_picks_the_reader_by_format(tmp_path):
    from workbench.data.dataset import CocoAttributeDataset
    from workbench.data.segmentation import open_dataset

    pan_train, _ = synthetic_splits(tmp_path / "p", 2, 1, image_size=48, progress=False, task="panoptic")
    sem_train, _ = synthetic_splits(tmp_path / "s", 2, 1, image_size=48, progress=False, task="semantic")
    coco_train, _ = synthetic_splits(tmp_path / "i", 2, 1, image_size=48, progress=False)
    pan = open_dataset(pan_train, "panoptic")
    assert isinstance(pan, SegmentationDataset) and pan.task == "panoptic" and len(pan[0]["instances"]["labels"]) >= 3
    sem = open_dataset(sem_train, "semantic")
    assert sem[0]["sem_seg"].shape == (48, 48)
    assert isinstance(open_dataset(coco_train, "instance"), CocoAttributeDataset)
    with pytest.raises(UsageError, match="trains task 'instance'"):
        open_dataset(coco_train, "panoptic")
