"""Frozen configuration dataclasses, one file per section: attribute.py (AttributeSpec), loss.py (LossConfig),
model.py (ModelConfig and its presets), solver.py (SolverConfig), data.py (DataConfig, AugmentConfig),
evaluation.py (EvalConfig), run.py (RunConfig, LogConfig). Import them from here: `from workbench.config import
ModelConfig`.

Every field is read somewhere (tests/test_config.py checks that each field name appears in the package
outside this folder). Presets: `ModelConfig.tiny()` for tests and `ModelConfig.coco_r50()`, `coco_r101()`,
`coco_swin_t()`/`_s`/`_b`/`_l` with upstream Mask2Former's COCO instance-segmentation values.
"""
from workbench.config.attribute import ATTRIBUTE_KINDS, AttributeSpec
from workbench.config.data import AugmentConfig, DataConfig
from workbench.config.evaluation import EvalConfig
from workbench.config.loss import MULTI_LABEL_LOSSES, LossConfig
from workbench.config.model import BACKBONES, TASKS, ModelConfig
from workbench.config.run import DEVICE_SPEC, LogConfig, RunConfig
from workbench.config.solver import CHECKPOINT_ACTIVATIONS, SolverConfig

__all__ = ["ATTRIBUTE_KINDS", "BACKBONES", "CHECKPOINT_ACTIVATIONS", "DEVICE_SPEC", "MULTI_LABEL_LOSSES", "TASKS",
           "AttributeSpec", "AugmentConfig", "DataConfig", "EvalConfig", "LogConfig", "LossConfig", "ModelConfig",
           "RunConfig", "SolverConfig"]
