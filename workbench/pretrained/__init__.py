"""Published Mask2Former weights in and out: upstream (.pkl/.pth), transformers (folder or .safetensors).

    source.py        read the four checkpoint forms into named tensors (safe_pickle.py: the .pkl reader)
    upstream.py      upstream/detectron2 names -> ours    transformers.py  transformers' names -> ours
    keymap.py        the renaming machinery (one key function per backbone kind)
    architecture.py  the ModelConfig fields a checkpoint implies     coco.py  COCO's 80 class names
    load.py          pretrained_config, load_pretrained              report.py  LoadReport
    training.py      model.weights in a training run (load, print, save the report)
    export.py        our trained model -> a transformers folder
"""
from workbench.pretrained.coco import COCO_INSTANCE_CLASSES
from workbench.pretrained.export import export_transformers
from workbench.pretrained.load import load_pretrained, pretrained_config
from workbench.pretrained.report import ClassRows, LoadReport
from workbench.pretrained.source import Checkpoint, read_checkpoint

__all__ = ["COCO_INSTANCE_CLASSES", "Checkpoint", "ClassRows", "LoadReport", "export_transformers", "load_pretrained",
           "pretrained_config", "read_checkpoint"]
