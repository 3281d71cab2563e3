"""COCO panoptic with attributes in detectron2: dataset registration and the panoptic / semantic mapper.

`register_multitask_coco_panoptic` registers a COCO panoptic file (workbench/data/coco_panoptic.py: per-segment
`attributes`, `isthing` per category, `ignore_segmentation`) with Mask2Former's metadata convention, so
upstream's code and ours read it alike: `stuff_classes` = every class in model order (what SemSegEvaluator
names), `thing_classes` / `thing_dataset_id_to_contiguous_id` = the things (what panoptic inference keeps as
instances), `stuff_dataset_id_to_contiguous_id` = every class, evaluator_type "coco_panoptic_seg".

`MultiTaskSegmentMapper` is upstream's MaskFormerPanopticDatasetMapper / MaskFormerSemanticDatasetMapper with
attributes: the same augmentations on image, panoptic PNG and ignore pixels, then our per-task targets
(workbench/data/targets.py: panoptic = one per non-crowd segment, stuff included; semantic = one per class
present, attributes kept where the class's segments agree), `gt_attr_<name>` per target, and the crowd and
annotator-ignored pixels as "ignore" (H, W) bool, left out of the mask losses.
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
from detectron2.structures import BitMasks, Boxes, Instances

from workbench.d2.data import MAPPER_TASKS, build_augmentations
from workbench.data.coco_panoptic import id_to_rgb, ignore_mask, load_coco_panoptic, read_panoptic_png, rgb_to_id, \
    segment_masks
from workbench.data.io import read_json
from workbench.data.schema import Schema
from workbench.data.semantic_png import IGNORE_VALUE
from workbench.data.targets import segment_targets

__all__ = ["MultiTaskSegmentMapper", "register_multitask_coco_panoptic"]


def register_multitask_coco_panoptic(name: str, json_file: str | os.PathLike, png_root: str | os.PathLike | None = None,
                                     image_root: str | os.PathLike | None = None) -> None:
    """Register a COCO panoptic file with attributes as detectron2 dataset `name`.

    Dicts: `load_coco_panoptic`'s records (file_name, pan_seg_file_name, height, width, image_id,
    ignore_segmentation, segments_info with contiguous category_id, isthing, iscrowd, attributes {name: value id,
    -1 = unlabeled}); png_root defaults to the JSON's folder / its stem (COCO's layout), image_root to the JSON's
    folder. Metadata: the module docstring's class lists, panoptic_json, panoptic_root, image_root,
    ignore_label 255, label_divisor 1000, attribute_names, attribute_values {name: [value names]} and `schema`
    (workbench.data.schema.Schema). The header is read now, the records when the dataset is first used.
    """
    json_file = os.fspath(json_file)
    png_root = os.fspath(png_root) if png_root is not None else os.path.splitext(json_file)[0]
    image_root = os.fspath(image_root) if image_root is not None else os.path.dirname(os.path.abspath(json_file))
    schema = Schema.from_coco(read_json(json_file), json_file)
    DatasetCatalog.register(name, lambda: load_coco_panoptic(json_file, png_root, image_root, schema)[0])
    label_of = schema.label_of()
    MetadataCatalog.get(name).set(
        panoptic_json=json_file,
        panoptic_root=png_root,
        image_root=image_root,
        evaluator_type="coco_panoptic_seg",
        ignore_label=IGNORE_VALUE,
        label_divisor=1000,
        thing_classes=[c.name for c in schema.categories if c.isthing],
        stuff_classes=list(schema.category_names),
        thing_dataset_id_to_contiguous_id={c.id: label_of[c.id] for c in schema.categories if c.isthing},
        stuff_dataset_id_to_contiguous_id=dict(label_of),
        attribute_names=schema.attribute_names,
        attribute_values=schema.model_attributes(),
        schema=schema,
    )


def _dataset_schema(cfg) -> Schema:
    for name in [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]:
        schema = getattr(MetadataCatalog.get(name), "schema", None)
        if schema is not None:
            return schema
    raise KeyError(f"no dataset of DATASETS.TRAIN / TEST {[*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]} was registered "
                   f"with workbench.d2.register_multitask_coco_panoptic: the segment mapper needs its schema")


class MultiTaskSegmentMapper:
    """panoptic record (from `register_multitask_coco_panoptic`) -> model input with per-task targets.

    task "panoptic" | "semantic" (INPUT.DATASET_MAPPER_NAME "coco_panoptic_lsj" / "mask_former_panoptic" /
    "mask_former_semantic"). Training output: {"image": uint8 (3, H, W), "instances": Instances(gt_classes,
    gt_masks BitMasks, gt_boxes, gt_attr_<name> (T,) int64), "ignore": (H, W) bool, "height", "width",
    "image_id", "file_name", ...}. Test output: the resized image without annotations (the evaluator reads the
    ground truth at the image's own size).
    """

    def __init__(self, is_train: bool, augmentations: Sequence, image_format: str, task: str, schema: Schema,
                 attribute_names: Sequence[str]) -> None:
        if task not in ("panoptic", "semantic"):
            raise ValueError(f"task must be 'panoptic' or 'semantic', got {task!r}")
        multi = [n for n in attribute_names if n in schema.multi_label_names]
        if multi:
            raise ValueError(f"MODEL.MULTITASK.ATTRIBUTE_NAMES {multi} are multi-label groups in the dataset; the "
                             f"detectron2 adapter predicts single-label attributes only (train them with `workbench "
                             f"train`)")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.task = task
        self.schema = schema
        self.attribute_names = tuple(attribute_names)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> "MultiTaskSegmentMapper":
        name = cfg.INPUT.DATASET_MAPPER_NAME
        task = MAPPER_TASKS.get(name)
        if task not in ("panoptic", "semantic"):
            raise ValueError(f"INPUT.DATASET_MAPPER_NAME = {name!r} makes instance targets: use "
                             f"workbench.d2.MultiTaskDatasetMapper, or a panoptic / semantic mapper name "
                             f"{sorted(k for k, v in MAPPER_TASKS.items() if v != 'instance')}")
        return cls(is_train, build_augmentations(cfg, is_train), cfg.INPUT.FORMAT, task, _dataset_schema(cfg),
                   cfg.MODEL.MULTITASK.ATTRIBUTE_NAMES)

    def __call__(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)
        image = utils.read_image(d["file_name"], format=self.image_format)
        utils.check_image_size(d, image)
        segments = d.pop("segments_info", [])
        if not self.is_train:
            transforms = self.augmentations(T.AugInput(image))
            d["image"] = torch.as_tensor(np.ascontiguousarray(transforms.apply_image(image).transpose(2, 0, 1)))
            return d
        h, w = image.shape[:2]
        ids = read_panoptic_png(d["pan_seg_file_name"], segments, h, w, d["file_name"])
        labels = np.full((h, w), IGNORE_VALUE, dtype=np.uint8)  # for the category-area crop
        for s in segments:
            labels[ids == s["id"]] = s["category_id"]
        aug_input = T.AugInput(image, sem_seg=labels)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        # ids as panopticapi's RGB (nearest-neighbour, padding 255 = no segment), as upstream's mapper does
        ids = rgb_to_id(transforms.apply_segmentation(id_to_rgb(ids)))
        ignore = transforms.apply_segmentation(ignore_mask(d).astype(np.uint8)) == 1  # padding (255) not ignored
        targets = segment_targets(segment_masks(ids, segments), segments, ignore, self.schema, self.task)
        image_size = image.shape[:2]
        instances = Instances(image_size, gt_classes=targets["labels"], gt_masks=BitMasks(targets["masks"]),
                              gt_boxes=Boxes(targets["boxes"]))
        for name in self.attribute_names:
            instances.set(f"gt_attr_{name}", targets["attributes"][name].long())
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        d["instances"] = instances
        d["ignore"] = targets["ignore"]
        return d
