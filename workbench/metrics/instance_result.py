"""The instance evaluation's result (engine/evaluate.py's `evaluate_predictions`): segm AP (coco_segm.py), joint AP
(joint_ap.py), attribute accuracy and multi-label F1 on true positives (attributes.py), Fashionpedia's AP(IoU+F1)
(fashionpedia.py), with its scalars (TensorBoard's eval/ tags), JSON form and tables."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from workbench.metrics.attributes import NO_OBJECT, AttributeResult, MultiLabelResult
from workbench.metrics.coco_segm import AP_KEYS

__all__ = ["EvalResult", "json_safe"]


@dataclass
class EvalResult:
    """Everything `evaluate_predictions` measured. AP values are percentages (0-100), accuracies fractions."""

    segm: dict[str, float | None]
    joint: dict[str, float | None]
    per_category_ap: dict[str, float | None]
    attributes: dict[str, AttributeResult]
    max_dets: int
    tp_iou: float
    counts: dict[str, int]
    config: dict[str, Any] = field(default_factory=dict)
    multi_label: dict[str, MultiLabelResult] = field(default_factory=dict)
    iou_f1: dict[str, float | None] = field(default_factory=dict)  # AP(IoU+F1), see metrics/fashionpedia.py
    data: dict[str, str] = field(default_factory=dict)  # {"path", "sha256"} of the ground truth (data_record)
    # which weights were scored: {"file": "best.pt" | "model_final.pt" | ..., "step": N, ...}; {} = not recorded
    checkpoint: dict[str, Any] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """The headline numbers by name, None left out: `segm/<AP key>`, `joint/<AP key>` (%),
        `attribute_accuracy/<name>` (single groups), `attribute_f1/<name>/{micro,macro}` (multi groups),
        `iou_f1/<AP key>` (when measured). TensorBoard's eval/ tags and `solver.best_metric` use these names."""
        out = {}
        for group, values in (("segm", self.segm), ("joint", self.joint), ("iou_f1", self.iou_f1)):
            out.update({f"{group}/{key}": float(v) for key, v in values.items() if v is not None})
        out.update({f"attribute_accuracy/{name}": float(a.accuracy) for name, a in self.attributes.items()
                    if a.accuracy is not None})
        for name, m in self.multi_label.items():
            averages = (("micro", m.micro), ("macro", m.macro))
            out.update({f"attribute_f1/{name}/{average}": float(scores["f1"]) for average, scores in averages
                        if scores.get("f1") is not None})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (no NaN: undefined values are None)."""
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EvalResult":
        attributes = {name: AttributeResult(**a) for name, a in data["attributes"].items()}
        multi = {name: MultiLabelResult(**a) for name, a in data.get("multi_label", {}).items()}
        return cls(**{**data, "attributes": attributes, "multi_label": multi})

    def table(self):
        """pandas DataFrame, one row per metric: metric, value, detail (AP in %, accuracy as a fraction)."""
        import pandas as pd

        rows = []
        for group, values in (("segm", self.segm), ("joint", self.joint)):
            for key in AP_KEYS:
                rows.append((f"{group} {key}", values.get(key), _ap_detail(key, self.max_dets)))
        for name, ap in self.per_category_ap.items():
            rows.append((f"segm AP [{name}]", ap, _ap_detail("AP", self.max_dets)))
        for name, a in self.attributes.items():
            rows.append((f"{name} accuracy", a.accuracy,
                         f"{a.correct}/{a.count} true positives (IoU>={self.tp_iou:g}), {a.unlabeled} unlabeled excluded"))
        for name, m in self.multi_label.items():
            for avg in ("micro", "macro"):
                for key in ("precision", "recall", "f1"):
                    rows.append((f"{name} {key} ({avg})", getattr(m, avg)[key],
                                 f"{m.count} labeled true positives (IoU>={self.tp_iou:g}), {m.unlabeled} unlabeled excluded"))
        for key, value in self.iou_f1.items():
            rows.append((f"IoU+F1 {key}", value, "Fashionpedia's AP(IoU+F1), area=all, "
                         f"maxDets={self.max_dets}"))
        frame = pd.DataFrame(rows, columns=["metric", "value", "detail"])
        frame["value"] = frame["value"].astype(float)  # None -> NaN
        return frame

    def confusion_table(self, name: str):
        """pandas DataFrame of one attribute's confusion matrix: rows GT value, columns predicted value."""
        import pandas as pd

        a = self.attributes[name]
        return pd.DataFrame(a.confusion, index=pd.Index(a.values, name=f"{name} (GT)"),
                            columns=pd.Index([*a.values, NO_OBJECT], name="predicted"))


def _ap_detail(key: str, max_dets: int) -> str:
    iou = {"AP50": "IoU=.50", "AP75": "IoU=.75"}.get(key, "IoU=.50:.95")
    area = {"APs": "small", "APm": "medium", "APl": "large"}.get(key, "all")
    return f"{iou}, area={area}, maxDets={max_dets}"


def json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    return obj
