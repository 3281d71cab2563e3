"""An attribute group's configuration: `AttributeSpec` (one independent per-instance label group, single- or
multi-label), what `ModelConfig.attributes` holds."""
from __future__ import annotations

from dataclasses import dataclass

from workbench.config.loss import MULTI_LABEL_LOSSES

__all__ = ["ATTRIBUTE_KINDS", "AttributeSpec"]

ATTRIBUTE_KINDS = ("single", "multi")


@dataclass(frozen=True)
class AttributeSpec:
    """One independent per-instance label group (e.g. colour).

    kind "single": one value out of K, a K+1-way softmax head (index K = "no object").
    kind "multi": any subset of the K values (e.g. Fashionpedia's textile patterns), K sigmoid logits and no
    no-object slot (the class head says whether there is an object); at inference the values whose
    probability exceeds `threshold` are the predicted set.

    `weight` scales both its loss and its matcher cost (as upstream uses the class weight for both);
    `no_object_weight` is the cross-entropy weight of a single group's "no object" slot (index K);
    `loss` is a multi group's criterion, "bce" | "focal" ("" = `LossConfig.multi_label_loss`).
    """

    name: str
    values: tuple[str, ...]
    weight: float = 1.0
    no_object_weight: float = 0.1
    kind: str = "single"
    threshold: float = 0.5
    loss: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"AttributeSpec.name must be an identifier, got {self.name!r}")
        object.__setattr__(self, "values", tuple(self.values))
        if len(self.values) == 0:
            raise ValueError(f"attribute {self.name!r}: values must not be empty")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"attribute {self.name!r}: duplicate values in {self.values}")
        if self.weight < 0 or self.no_object_weight < 0:
            raise ValueError(f"attribute {self.name!r}: weights must be >= 0")
        if self.kind not in ATTRIBUTE_KINDS:
            raise ValueError(f"attribute {self.name!r}: kind must be one of {ATTRIBUTE_KINDS}, got {self.kind!r}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"attribute {self.name!r}: threshold must be in (0, 1), got {self.threshold!r}")
        if self.loss not in ("", *MULTI_LABEL_LOSSES):
            raise ValueError(f"attribute {self.name!r}: loss must be '' (LossConfig's) or one of "
                             f"{MULTI_LABEL_LOSSES}, got {self.loss!r}")

    @property
    def num_values(self) -> int:
        """K: the real values. Single heads have K+1 outputs (index K is "no object"), multi heads K."""
        return len(self.values)

    @property
    def multi(self) -> bool:
        return self.kind == "multi"

    @property
    def num_logits(self) -> int:
        """Outputs of this group's head: K+1 (single) or K (multi)."""
        return self.num_values if self.multi else self.num_values + 1
