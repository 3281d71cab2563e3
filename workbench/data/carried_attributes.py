"""Which attribute groups each category carries, read from the annotations themselves.

A schema lists attribute groups for the whole data set, not per category: the synthetic shapes give `color`
and `size` to things and `tone` to the stuff bands, and leave the others unlabeled (-1) on every annotation.
The model's heads still predict every group for every query, so a caption "sky red/small/dark" would print two
values no annotation of sky ever had. `carried_attributes` tells, per category, the groups that at least one of
its annotations labels; overlays show only those.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from workbench.data.categories import UNLABELED

__all__ = ["carried_attributes"]


def _labelled(value) -> bool:
    """A single group's value id, or a multi-label group's list ([] = labelled, none applies); -1 = unlabeled."""
    return isinstance(value, (list, tuple)) or int(value) != UNLABELED


def carried_attributes(records: Iterable[Mapping], attribute_names: Sequence[str]) -> dict[int, tuple[str, ...]]:
    """{model label (0..C-1): the groups labelled on at least one of its annotations, in head order}.

    records: a dataset's records: `CocoAttributeDataset.records` ("annotations") or the panoptic
    `SegmentationDataset.records` ("segments_info"), each entry with a contiguous `category_id` and `attributes`
    {name: value}. Categories without any annotation are left out (nothing is known about them); semantic
    records (label maps) have no entries and give {}."""
    found: dict[int, set[str]] = {}
    for record in records:
        for entry in record.get("segments_info", record.get("annotations", ())):
            labelled = found.setdefault(int(entry["category_id"]), set())
            attributes = entry.get("attributes", {})
            labelled.update(n for n in attribute_names if n in attributes and _labelled(attributes[n]))
    return {label: tuple(n for n in attribute_names if n in names) for label, names in sorted(found.items())}
