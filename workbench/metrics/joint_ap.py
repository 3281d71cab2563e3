"""Joint AP: mask AP in which a detection counts only if its attributes are right as well.

COCOeval segm in which a detection may only match a GT of its category whose every *labeled* single-label
attribute it predicts exactly (implemented as IoU := 0 for other pairs, so COCO's greedy matching, thresholds,
crowd and area handling are otherwise unchanged). A detection with a wrong attribute therefore counts as a false
positive and, unless another detection gets it right, its GT as a miss. Unlabeled GT attributes impose no
condition (wildcard): such a GT is still a positive for its category and labeled attributes, and is never missed
*because of* the unlabeled one. A GT with no labeled attribute counts exactly as in segm AP. Crowd regions are
unaffected. Multi-label groups impose no condition.

Detections carry `attributes: {name: predicted value index}` (K = no object, always wrong); GT annotations
`attributes: {name: value index}` (missing, None or -1 = unlabeled). Run and summarise it with coco_segm.py's
`run_cocoeval` / `summarize`.
"""
from __future__ import annotations

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.data.categories import UNLABELED

__all__ = ["JointCOCOeval"]


def _attributes_agree(dt: dict, gt: dict, attribute_names: tuple[str, ...]) -> bool:
    if gt.get("iscrowd"):
        return True
    labels = gt.get("attributes") or {}
    for name in attribute_names:
        value = labels.get(name, UNLABELED)
        if value is not None and value != UNLABELED and dt["attributes"][name] != value:
            return False
    return True


class JointCOCOeval(COCOeval):
    """COCOeval in which a (detection, GT) pair whose labeled attributes disagree has IoU 0 (cannot match)."""

    def __init__(self, coco_gt: COCO, coco_dt: COCO, attribute_names: tuple[str, ...]):
        super().__init__(coco_gt, coco_dt, "segm")
        self.attribute_names = attribute_names

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        ious = super().computeIoU(imgId, catId)
        gts, dts = self._gts[imgId, catId], self._dts[imgId, catId]
        if len(gts) == 0 or len(dts) == 0:
            return ious
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")  # the row order of super()'s result
        dts = [dts[i] for i in order][: self.params.maxDets[-1]]
        agree = np.array([[_attributes_agree(d, g, self.attribute_names) for g in gts] for d in dts], dtype=float)
        return np.asarray(ious) * agree
