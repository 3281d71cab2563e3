"""Upstream's MODEL.MASK_FORMER.TEST.{INSTANCE_ON, SEMANTIC_ON, PANOPTIC_ON} -> our task and post-processing set.

Upstream lets one trained model produce several outputs per image: each flag that is on adds its key to the
result ("sem_seg", "panoptic_seg", "instances"), all from one forward. Our model does the same with
`model.predict(batch, tasks)`; `ModelConfig.task` is the one output a plain `model(batch)` gives, and picks the
headline metric. The translation:

    PANOPTIC_ON  -> task "panoptic" (the richest output: stuff and things, each segment with its attributes)
    INSTANCE_ON  -> task "instance" when panoptic is off
    SEMANTIC_ON  -> task "semantic" when it is the only flag
    outputs      every flag that is on, in upstream's order (semantic, panoptic, instance)

Instance outputs drop stuff classes only when PANOPTIC_ON is on too (upstream keeps things only then: the
thing ids of the dataset's metadata; otherwise every class may be an instance). All flags off is refused:
upstream would return an empty dict per image, which no evaluator can score.

Pure Python (no detectron2), so it is tested everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FLAG_KEYS", "TaskSet", "flags_for_task", "tasks_from_flags"]

FLAG_KEYS = "MODEL.MASK_FORMER.TEST.(INSTANCE_ON, SEMANTIC_ON, PANOPTIC_ON)"
_ORDER = ("semantic", "panoptic", "instance")  # upstream's processed_results order


@dataclass(frozen=True)
class TaskSet:
    """task: `ModelConfig.task`; outputs: the tasks post-processed at test time, in upstream's order;
    things_only_instances: instance outputs keep thing classes only (PANOPTIC_ON is on)."""

    task: str
    outputs: tuple[str, ...]
    things_only_instances: bool

    @property
    def flags(self) -> tuple[bool, bool, bool]:
        """(INSTANCE_ON, SEMANTIC_ON, PANOPTIC_ON), the inverse of `tasks_from_flags`."""
        return "instance" in self.outputs, "semantic" in self.outputs, "panoptic" in self.outputs


def tasks_from_flags(instance_on: bool, semantic_on: bool, panoptic_on: bool) -> TaskSet:
    """The module docstring's translation; ValueError naming the keys when every flag is off."""
    on = {"instance": bool(instance_on), "semantic": bool(semantic_on), "panoptic": bool(panoptic_on)}
    if not any(on.values()):
        raise ValueError(f"{FLAG_KEYS} = (False, False, False): the model would output nothing at test time "
                         f"(upstream returns an empty dict per image, which no evaluator scores); turn on at least "
                         f"one, e.g. MODEL.MASK_FORMER.TEST.PANOPTIC_ON True for a panoptic dataset")
    task = "panoptic" if on["panoptic"] else "instance" if on["instance"] else "semantic"
    return TaskSet(task=task, outputs=tuple(t for t in _ORDER if on[t]), things_only_instances=on["panoptic"])


def flags_for_task(task: str) -> tuple[bool, bool, bool]:
    """(INSTANCE_ON, SEMANTIC_ON, PANOPTIC_ON) that make `task` the model's task with that one output."""
    if task not in _ORDER:
        raise ValueError(f"task must be one of {_ORDER}, got {task!r}")
    return task == "instance", task == "semantic", task == "panoptic"
