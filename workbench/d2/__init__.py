"""detectron2 adapter: run the multi-task model from detectron2 / Mask2Former configs (optional).

`import workbench.d2` never needs detectron2; every entry point imports it when called and raises an
ImportError that says how to get it otherwise: `INSTALL_COMMANDS`, the README's commands (a test keeps the two
equal), run after `make setup` with .venv active. Modules (each imports detectron2 at its top):

    config      add_maskformer2_keys(cfg), add_multitask_config(cfg), model_config_from_cfg(cfg) -> ModelConfig
    modeling    MultiTaskMaskFormer (META_ARCH_REGISTRY), MultiTaskMaskedTransformerDecoder (transformer
                decoder registry), build_workbench_backbone (BACKBONE_REGISTRY): all wrap our plain modules
    data        register_multitask_coco(name, json, image_root), MultiTaskDatasetMapper
    segment_data  register_multitask_coco_panoptic(name, json, png_root, image_root), MultiTaskSegmentMapper
                (panoptic / semantic targets with attributes)
    evaluation  MultiTaskCOCOEvaluator: COCOEvaluator + attribute accuracy and joint AP
    segment_evaluation  MultiTaskPanopticEvaluator: PQ + attribute accuracy + joint PQ, and mIoU
    train       `python -m workbench.d2.train --config-file ...` (detectron2's launch for multi-GPU)

`tasks` (no detectron2 needed): upstream's TEST.INSTANCE_ON / SEMANTIC_ON / PANOPTIC_ON -> our task and outputs.

Our plain modules take explicit arguments; this package only translates detectron2 configs and data at the
edge, so nothing here inherits from a `@configurable` class.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "INSTALL_COMMANDS",
    "MultiTaskCOCOEvaluator",
    "MultiTaskDatasetMapper",
    "MultiTaskMaskFormer",
    "MultiTaskPanopticEvaluator",
    "MultiTaskSegmentMapper",
    "add_maskformer2_keys",
    "add_multitask_config",
    "detectron2_available",
    "model_config_from_cfg",
    "register_multitask_coco",
    "register_multitask_coco_panoptic",
    "require_detectron2",
]

# The README's install commands ("detectron2 adapter"), one per line; tests/test_d2.py checks they are the same.
INSTALL_COMMANDS = (
    "make d2-deps",
    "git clone https://github.com/facebookresearch/detectron2 ../detectron2",
    "git -C ../detectron2 checkout 02b5c4e",
    "MAX_JOBS=2 pip install --no-build-isolation --no-deps --use-pep517 -e ../detectron2",
)
INSTALL_HINT = (
    "workbench.d2 needs detectron2, which is not on PyPI: build it from source into this environment, after "
    "`make setup` with .venv active (README, section 'detectron2 adapter'): " + "; ".join(INSTALL_COMMANDS)
)


def detectron2_available() -> bool:
    """True when detectron2 can be imported (it is then imported)."""
    try:
        require_detectron2()
    except ImportError:
        return False
    return True


def require_detectron2() -> None:
    """Import detectron2 or raise an ImportError saying how to install it."""
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} (import failed: {e})") from e


def _impl(module: str):
    require_detectron2()
    return importlib.import_module(f"workbench.d2.{module}")


def add_maskformer2_keys(cfg) -> None:
    """Add the upstream Mask2Former keys our adapter reads (see `workbench.d2.config`)."""
    _impl("config").add_maskformer2_keys(cfg)


def add_multitask_config(cfg) -> None:
    """Add MODEL.MULTITASK (and upstream's keys when missing); registers our model parts in detectron2."""
    _impl("config").add_multitask_config(cfg)


def model_config_from_cfg(cfg):
    """detectron2 CfgNode -> `workbench.config.ModelConfig`."""
    return _impl("config").model_config_from_cfg(cfg)


def register_multitask_coco(name: str, json_file, image_root=None) -> None:
    """Register a COCO-with-attributes file in DatasetCatalog / MetadataCatalog, attributes kept."""
    _impl("data").register_multitask_coco(name, json_file, image_root)


def register_multitask_coco_panoptic(name: str, json_file, png_root=None, image_root=None) -> None:
    """Register a COCO panoptic file with attributes (Mask2Former's metadata convention, isthing per class)."""
    _impl("segment_data").register_multitask_coco_panoptic(name, json_file, png_root, image_root)


_CLASSES = {"MultiTaskMaskFormer": "modeling", "MultiTaskDatasetMapper": "data",
            "MultiTaskCOCOEvaluator": "evaluation", "MultiTaskSegmentMapper": "segment_data",
            "MultiTaskPanopticEvaluator": "segment_evaluation"}


def __getattr__(name: str) -> Any:  # classes that subclass or need detectron2 load on first access
    if name in _CLASSES:
        return getattr(_impl(_CLASSES[name]), name)
    raise AttributeError(f"module 'workbench.d2' has no attribute {name!r}")
