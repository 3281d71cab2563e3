"""A pycocotools `COCO` over an in-memory dataset dict, indexed without pycocotools' console chatter.

Shared by segm AP (metrics/coco_segm.py), joint AP (metrics/joint_ap.py) and Fashionpedia's AP(IoU+F1)
(metrics/fashionpedia.py), which all build COCOeval inputs from dicts rather than files.
"""
from __future__ import annotations

import contextlib
import io

from pycocotools.coco import COCO


def coco_from_dict(dataset: dict) -> COCO:
    """`dataset` = {"images": [...], "categories": [...], "annotations": [...]} -> an indexed COCO."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
