"""One labelme folder -> each task's data set, validated by format (data/task_data.py), as notebook 01 uses it."""
import numpy as np
import pytest
from PIL import Image

from workbench.data.segmentation import open_dataset
from workbench.data.synthetic import SynthConfig, synthesize, synthetic_schema
from workbench.data.task_data import convert_for_task, validate_source
from workbench.errors import UsageError


@pytest.fixture(scope="module")
def labelme(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labelme")
    synthesize(folder, 3, seed=0, cfg=SynthConfig(image_size=64, stuff=True), progress=False)
    return folder


@pytest.mark.parametrize("task,tail", [("instance", "coco.json"), ("panoptic", "panoptic/panoptic.json"),
                                       ("semantic", "semantic")])
def test_each_task_converts_into_a_source_open_dataset_reads(labelme, tmp_path, task, tail):
    schema = synthetic_schema(stuff=True)
    data = convert_for_task(labelme, schema, tmp_path / "out", task, progress=False)
    assert data.source == tmp_path / "out" / tail
    report = validate_source(data.source, schema, data.image_root, progress=False)
    assert report.ok, report
    dataset = open_dataset(data.source, task, data.image_root)
    assert len(dataset) == 3 == report.num_images
    labels = {int(c) for i in range(3) for c in dataset[i]["instances"]["labels"]}
    assert {0, 1, 2, 3, 4} >= labels and {3, 4} <= labels  # sky and ground are targets too


def test_semantic_report_counts_classes_and_names_bad_files(labelme, tmp_path):
    schema = synthetic_schema(stuff=True)
    data = convert_for_task(labelme, schema, tmp_path, "semantic", progress=False)
    assert data.image_root == labelme  # label PNGs name no image: they are found in the labelme folder
    pngs = sorted((data.source / "labels").glob("*.png"))
    maps = [np.array(Image.open(p)) for p in pngs]
    report = validate_source(data.source, schema, data.image_root, progress=False)
    assert report.summary["pixels"].tolist() == [int(sum((m == c).sum() for m in maps)) for c in range(5)]
    assert report.summary.loc["sky", "images"] == 3 and report.num_annotations == sum(len(np.unique(m)) for m in maps)
    assert "class regions" in str(report) and "images and pixels per class" in str(report)
    missing = validate_source(data.source, schema, progress=False)  # images looked for beside semantic/
    assert not missing.ok and missing.codes == {"missing_image"}
    broken = maps[1].copy()
    broken[0, 0] = 9  # no class 9 of 5
    Image.fromarray(broken).save(pngs[1])
    bad = validate_source(data.source, schema, data.image_root, progress=False)
    assert not bad.ok and any(pngs[1].name in str(p) for p in bad.errors), bad
    other = validate_source(data.source, synthetic_schema(), data.image_root, progress=False)
    assert "schema_mismatch" in other.codes


def test_unknown_task_and_missing_source():
    with pytest.raises(UsageError, match="task must be one of"):
        convert_for_task(".", synthetic_schema(), ".", "depth")
    report = validate_source("/nonexistent/data.json", progress=False)
    assert not report.ok and "missing_file" in report.codes
