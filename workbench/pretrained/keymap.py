"""Renaming a checkpoint's tensors to ours: the shared machinery of upstream.py and transformers.py.

A naming is a `KeyMap`: its backbone prefix, one key function per backbone kind (plug-in: a new backbone adds
its function to `backbone_keys`), ordered regex rules for everything after the backbone, and the tensors that
are dropped on purpose with the reason. A key function maps a checkpoint key (prefix removed) to our key inside
`backbone.` or None when it does not know the key, which makes the loader stop with that key in the message.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from workbench.pretrained.source import CheckpointFormatError


@dataclass(frozen=True)
class Slot:
    """Where a checkpoint tensor goes: our state-dict `key`, or its `chunk`-th of `chunks` equal pieces along
    dim 0 (transformers' separate q/k/v projections fill nn.MultiheadAttention's stacked `in_proj`)."""

    key: str
    chunk: int = 0
    chunks: int = 1


@dataclass(frozen=True)
class Drop:
    """A checkpoint tensor left out on purpose (a buffer we recompute, a module we do not have), and why."""

    why: str


Rule = tuple[str, str | Callable[[re.Match], Slot]]
BackboneKeys = Callable[[str], "str | Slot | Drop | None"]


@dataclass(frozen=True)
class KeyMap:
    naming: str
    backbone_prefix: str
    # our backbone name -> key function: checkpoint key after `backbone_prefix` -> our key after `backbone.`
    # (str or Slot), Drop, or None (unknown: an error)
    backbone_keys: Mapping[str, BackboneKeys]
    rules: Sequence[Rule]  # (regex over the full checkpoint key, our key template or Slot factory)
    dropped: Sequence[tuple[str, str]]  # (regex, why it is not loaded)

    def drop_reason(self, key: str) -> str | None:
        for pattern, why in self.dropped:
            if re.fullmatch(pattern, key):
                return why
        return None

    def slot(self, key: str, backbone: str) -> Slot | Drop | None:
        """Our slot for checkpoint `key` with our backbone `backbone`, a Drop, or None when nothing maps it."""
        if key.startswith(self.backbone_prefix):
            fn = self.backbone_keys.get(backbone)
            if fn is None:
                raise CheckpointFormatError(f"no {self.naming} key map for backbone {backbone!r}; known: "
                                            f"{sorted(self.backbone_keys)} (workbench/pretrained/{self.naming}.py)")
            ours = fn(key[len(self.backbone_prefix):])
            if isinstance(ours, str):
                return Slot("backbone." + ours)
            if isinstance(ours, Slot):
                return Slot("backbone." + ours.key, ours.chunk, ours.chunks)
            return ours
        for pattern, target in self.rules:
            m = re.fullmatch(pattern, key)
            if m:
                return target(m) if callable(target) else Slot(m.expand(target))
        return None


def sub_rules(rules: Sequence[tuple[str, str]], key: str) -> str | None:
    """First matching (regex, template) of `rules` applied to `key` (backbone key functions use it)."""
    for pattern, template in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return m.expand(template)
    return None
