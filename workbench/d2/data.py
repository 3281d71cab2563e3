"""COCO-with-attributes in detectron2: dataset registration and a mapper that carries attributes.

detectron2's `load_coco_json` drops keys it does not know, so `register_multitask_coco` loads the file with
`workbench.data.dataset.detectron2_dicts`: every annotation keeps `attributes` {name: value id, -1 =
unlabeled}. `MultiTaskDatasetMapper` applies detectron2 augmentations to image and masks and puts each
attribute in `Instances` as `gt_attr_<name>` (N,) int64; instances the augmentation crops to nothing are
dropped together with their attributes (one Instances index selects every field).
"""
from __future__ import annotations

import copy
import os
from typing import Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks
from pycocotools import mask as mask_utils

from workbench.data.dataset import detectron2_dicts
from workbench.data.schema import UNLABELED, schema_of_coco

__all__ = ["LSJ_MAPPERS", "MAPPER_TASKS", "MultiTaskDatasetMapper", "build_augmentations", "check_cfg_matches_datasets",
           "model_classes", "multitask_keys_from_dataset", "register_multitask_coco"]

# INPUT.DATASET_MAPPER_NAME -> the targets its mapper makes (upstream's mappers of those names)
MAPPER_TASKS = {"coco_instance_lsj": "instance", "coco_instance": "instance", "mask_former_instance": "instance",
                "coco_panoptic_lsj": "panoptic", "mask_former_panoptic": "panoptic",
                "mask_former_semantic": "semantic"}
LSJ_MAPPERS = ("coco_instance_lsj", "coco_panoptic_lsj")  # large-scale jitter; the others resize the short edge


def register_multitask_coco(name: str, json_file: str | os.PathLike, image_root: str | os.PathLike | None = None) -> None:
    """Register a COCO-with-attributes file as detectron2 dataset `name`.

    The dicts come from `detectron2_dicts` (file_names joined with `image_root`, default the JSON's folder;
    category_id contiguous 0..C-1; `attributes` per annotation). Metadata: json_file, image_root,
    evaluator_type "coco", thing_classes, thing_dataset_id_to_contiguous_id (so COCOEvaluator maps labels
    back to the file's ids), attribute_names, attribute_values {name: [value names]}. The file's header is
    read now (vocabularies), the annotations when the dataset is first used.
    """
    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(json_file))
    schema = schema_of_coco(json_file)
    DatasetCatalog.register(name, lambda: detectron2_dicts(json_file, image_root, schema))
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=schema.category_names,
        thing_dataset_id_to_contiguous_id=schema.label_of(),
        attribute_names=schema.attribute_names,
        attribute_values=schema.model_attributes(),
    )


def multitask_keys_from_dataset(name: str) -> list:
    """`cfg.merge_from_list(...)` arguments setting NUM_CLASSES and the attribute vocabularies of a dataset
    registered with `register_multitask_coco`."""
    meta = MetadataCatalog.get(name)
    if not hasattr(meta, "attribute_names"):
        raise KeyError(f"dataset {name!r} has no attribute metadata: register it with register_multitask_coco")
    return ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(model_classes(meta)),
            "MODEL.MULTITASK.ATTRIBUTE_NAMES", list(meta.attribute_names),
            "MODEL.MULTITASK.ATTRIBUTE_VALUES", [list(meta.attribute_values[n]) for n in meta.attribute_names]]


def model_classes(meta) -> list[str] | None:
    """The model's class names of a dataset's metadata: `stuff_classes` where Mask2Former's panoptic / semantic
    convention gives every class there (things included), else `thing_classes` (instance datasets)."""
    classes = getattr(meta, "stuff_classes", None)
    return list(classes) if classes is not None else getattr(meta, "thing_classes", None)


def check_cfg_matches_datasets(cfg, dataset_names: Sequence[str] | None = None) -> None:
    """NUM_CLASSES and MODEL.MULTITASK's attributes against each registered dataset's metadata (default: the
    cfg's DATASETS.TRAIN and TEST); a ValueError naming the key and the fix, before anything is built from them.

    NUM_CLASSES must equal the dataset's categories; every attribute the model predicts must be one of the
    dataset's, with the same value names in the same order (value ids would otherwise mean other things). The
    model may predict fewer attributes than the dataset has (the evaluator reports the others as not predicted).
    Names not registered yet are skipped: detectron2 reports an unknown dataset itself when it loads it."""
    names = list(dataset_names) if dataset_names is not None else [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    registered = set(DatasetCatalog.list())
    num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    attribute_names = list(cfg.MODEL.MULTITASK.ATTRIBUTE_NAMES)
    vocabularies = [list(v) for v in cfg.MODEL.MULTITASK.ATTRIBUTE_VALUES]
    fix = f"`cfg.merge_from_list(workbench.d2.data.multitask_keys_from_dataset(name))` sets both"
    for name in names:
        if name not in registered:
            continue
        meta = MetadataCatalog.get(name)
        classes = model_classes(meta)
        if classes is not None and num_classes != len(classes):
            raise ValueError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = {num_classes}, but dataset {name!r} (in DATASETS) has "
                             f"{len(classes)} categories {list(classes)[:8]}: set MODEL.SEM_SEG_HEAD.NUM_CLASSES "
                             f"{len(classes)} ({fix}), or point DATASETS.TRAIN / TEST at the datasets you use")
        if not hasattr(meta, "attribute_names"):
            if attribute_names:
                raise ValueError(f"MODEL.MULTITASK.ATTRIBUTE_NAMES = {attribute_names}, but dataset {name!r} has no "
                                 f"attribute metadata: register it with workbench.d2.register_multitask_coco")
            continue
        unknown = [a for a in attribute_names if a not in meta.attribute_names]
        if unknown:
            raise ValueError(f"MODEL.MULTITASK.ATTRIBUTE_NAMES = {attribute_names}: {unknown} not in dataset {name!r}, "
                             f"which has {list(meta.attribute_names)}; predict only the dataset's attributes ({fix})")
        for attribute, values in zip(attribute_names, vocabularies):
            expected = list(meta.attribute_values[attribute])
            if values != expected:
                raise ValueError(f"MODEL.MULTITASK.ATTRIBUTE_VALUES for {attribute!r} = {values}, but dataset {name!r} "
                                 f"has {expected} (value ids follow that order): use the dataset's ({fix})")


def build_augmentations(cfg, is_train: bool) -> list:
    """Upstream's recipes by INPUT.DATASET_MAPPER_NAME (MAPPER_TASKS).

    Large-scale jitter ("coco_instance_lsj", "coco_panoptic_lsj"): RandomFlip, ResizeScale(MIN_SCALE, MAX_SCALE,
    IMAGE_SIZE^2), FixedSizeCrop(IMAGE_SIZE^2, padded). The others ("coco_instance", "mask_former_instance",
    "mask_former_panoptic", "mask_former_semantic"): ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN,
    MIN_SIZE_TRAIN_SAMPLING), when INPUT.CROP.ENABLED a crop (the segment mappers: RandomCrop_CategoryAreaConstraint
    with CROP.SINGLE_CATEGORY_MAX_AREA, void 255 not counted), ColorAugSSD when INPUT.COLOR_AUG_SSD, RandomFlip.
    Test: ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST) for all.

    INPUT.COLOR_AUG_SSD True (upstream's ADE20K YAMLs) is refused when the model predicts attributes: colour
    may be one, and colour jitter would corrupt its labels.
    """
    if not is_train:
        return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    name = cfg.INPUT.DATASET_MAPPER_NAME
    if name not in MAPPER_TASKS:
        raise ValueError(f"INPUT.DATASET_MAPPER_NAME = {name!r} is not supported by the multi-task mappers: expected "
                         f"one of {sorted(MAPPER_TASKS)}")
    color = []
    if cfg.INPUT.COLOR_AUG_SSD:
        if len(cfg.MODEL.MULTITASK.ATTRIBUTE_NAMES):
            raise ValueError("INPUT.COLOR_AUG_SSD = True is not supported with attributes (MODEL.MULTITASK."
                             "ATTRIBUTE_NAMES is set): colour may be an attribute, and colour jitter would corrupt its "
                             "labels; add `INPUT.COLOR_AUG_SSD False`")
        try:  # what upstream's mappers use; it needs OpenCV, which detectron2 does not require
            from detectron2.projects.point_rend import ColorAugSSDTransform
        except ImportError as e:
            raise ImportError(f"INPUT.COLOR_AUG_SSD = True needs the PointRend project's ColorAugSSDTransform (an "
                              f"editable detectron2 checkout provides it), which failed to import ({e}): install "
                              f"OpenCV (`pip install opencv-python-headless`), or add `INPUT.COLOR_AUG_SSD "
                              f"False`") from e
        color = [ColorAugSSDTransform(img_format=cfg.INPUT.FORMAT)]
    flip = []
    if cfg.INPUT.RANDOM_FLIP != "none":
        flip = [T.RandomFlip(horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                             vertical=cfg.INPUT.RANDOM_FLIP == "vertical")]
    if name in LSJ_MAPPERS:
        if color:
            raise ValueError(f"INPUT.COLOR_AUG_SSD = True with INPUT.DATASET_MAPPER_NAME {name!r}: upstream's "
                             f"large-scale-jitter mappers have no colour augmentation; set it False")
        size = cfg.INPUT.IMAGE_SIZE
        return flip + [T.ResizeScale(min_scale=cfg.INPUT.MIN_SCALE, max_scale=cfg.INPUT.MAX_SCALE,
                                     target_height=size, target_width=size),
                       T.FixedSizeCrop(crop_size=(size, size))]
    augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                 cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
    if cfg.INPUT.CROP.ENABLED:
        if MAPPER_TASKS[name] == "instance":
            augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        else:
            augs.append(T.RandomCrop_CategoryAreaConstraint(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE,
                                                            cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA, 255))
    return augs + color + flip


def _transformable(segmentation):
    """RLE with list counts or str counts -> compressed RLE with bytes counts (what detectron2 decodes)."""
    if isinstance(segmentation, dict):
        h, w = segmentation["size"]
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, h, w)
        if isinstance(segmentation["counts"], str):
            return {"size": [h, w], "counts": segmentation["counts"].encode("ascii")}
    return segmentation


class MultiTaskDatasetMapper:
    """dataset dict (from `register_multitask_coco`) -> model input with attributes (module docstring).

    Training output: {"image": uint8 (3, H, W), "instances": Instances(gt_classes, gt_masks BitMasks,
    gt_boxes from the masks, gt_attr_<name>), "height", "width", "image_id", "file_name"}; crowd annotations
    are skipped, as upstream's instance mappers do. Test output: the image without annotations.
    """

    def __init__(self, is_train: bool, augmentations: Sequence, image_format: str,
                 attribute_names: Sequence[str]) -> None:
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.attribute_names = tuple(attribute_names)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> "MultiTaskDatasetMapper":
        if is_train and MAPPER_TASKS.get(cfg.INPUT.DATASET_MAPPER_NAME, "instance") != "instance":
            raise ValueError(f"INPUT.DATASET_MAPPER_NAME = {cfg.INPUT.DATASET_MAPPER_NAME!r} makes panoptic / semantic "
                             f"targets: use workbench.d2.segment_data.MultiTaskSegmentMapper (workbench.d2.train picks "
                             f"it by this name)")
        return cls(is_train, build_augmentations(cfg, is_train), cfg.INPUT.FORMAT,
                   cfg.MODEL.MULTITASK.ATTRIBUTE_NAMES)

    def __call__(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)
        image = utils.read_image(d["file_name"], format=self.image_format)
        utils.check_image_size(d, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_size = image.shape[:2]
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        annotations = d.pop("annotations", [])
        if not self.is_train:
            return d
        annotations = [a for a in annotations if not a.get("iscrowd", 0)]
        for i, a in enumerate(annotations):
            if self.attribute_names and "attributes" not in a:
                raise KeyError(f"{d['file_name']}: annotation {i} has no 'attributes'; register the dataset with "
                               f"workbench.d2.register_multitask_coco (detectron2's load_coco_json drops them)")
            a["segmentation"] = _transformable(a["segmentation"])
        annotations = [utils.transform_instance_annotations(a, transforms, image_size) for a in annotations]
        instances = utils.annotations_to_instances(annotations, image_size, mask_format="bitmask")
        if not instances.has("gt_masks"):  # no annotation left: still a (0, H, W) mask tensor for the model
            instances.gt_masks = BitMasks(torch.zeros((0, *image_size), dtype=torch.bool))
        for name in self.attribute_names:
            values = [int(a["attributes"].get(name, UNLABELED)) for a in annotations]
            instances.set(f"gt_attr_{name}", torch.tensor(values, dtype=torch.int64))
        instances.gt_boxes = instances.gt_masks.get_bounding_boxes()  # the boxes of what is left after cropping
        d["instances"] = utils.filter_empty_instances(instances)
        return d
