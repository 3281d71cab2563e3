"""Swin backbones in the loader: model/backbones/swin.py's key maps (our key <- source keys) turned into the per-key
functions `KeyMap.backbone_keys` takes, and the Swin architecture read from tensor shapes.

A source key that is one of several concatenated into one of ours (transformers' separate query/key/value
into torchvision's fused `qkv`) becomes a Slot chunk; a key model/backbones/swin.py ignores (recomputed
`relative_position_index`, SwinModel's unused final norm) becomes a Drop with its reason.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Mapping, Sequence

from workbench.pretrained.keymap import BackboneKeys, Drop, Slot

UPSTREAM_DROP_PATH = 0.3  # every upstream COCO Swin YAML (SWIN.DROP_PATH_RATE); not recorded in the weights


@lru_cache(maxsize=None)
def _table(naming: str, backbone: str) -> dict[str, Slot | Drop]:
    from workbench.model.backbones.swin import SWIN_VARIANTS, transformers_swin_keys, upstream_swin_keys

    depths = SWIN_VARIANTS[backbone].depths
    keymap = (upstream_swin_keys if naming == "upstream" else transformers_swin_keys)(depths)
    table: dict[str, Slot | Drop] = {}
    for ours, sources in keymap.sources.items():
        for i, source in enumerate(sources):
            table[source] = Slot(ours, i, len(sources))
    for source, why in keymap.ignored.items():
        table[source] = Drop(why)
    return table


def swin_keys(naming: str, backbone: str) -> BackboneKeys:
    """The key function for `backbone` (one of backbone.SWIN_NAMES) under `naming` ("upstream" | "transformers")."""
    return lambda key: _table(naming, backbone).get(key)


def swin_fields(embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], window_size: int,
                drop_path_rate: float) -> dict:
    """ModelConfig backbone fields for a Swin of these sizes (an error names the sizes if none matches)."""
    from workbench.model.backbones.swin import swin_variant_name
    from workbench.pretrained.source import CheckpointFormatError

    try:
        name = swin_variant_name(embed_dim, depths, num_heads)
    except ValueError as err:  # a width we cannot build: the checkpoint's, not a bug
        raise CheckpointFormatError(str(err)) from err
    return dict(backbone=name, backbone_window_size=window_size, backbone_drop_path_rate=drop_path_rate)


def swin_fields_from_shapes(shapes: Mapping[str, tuple[int, ...]], patch_embed: str, block: str,
                            bias_table: str, drop_path_rate: float) -> dict:
    """Swin sizes from tensor shapes: embed dim from the patch embedding (C, 3, 4, 4), depths from the block
    indices (`block` has {i} and {j}), heads and window from each stage's relative-position table
    ((2W-1)^2, heads)."""
    import re

    pattern = re.compile(re.escape(block).replace(r"\{i\}", r"(\d+)").replace(r"\{j\}", r"(\d+)"))
    blocks: dict[int, set[int]] = {}
    for key in shapes:
        m = pattern.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    depths = [len(blocks.get(i, ())) for i in range(4)]
    tables = [shapes[bias_table.format(i=i)] for i in range(4)]
    window = (math.isqrt(tables[0][0]) + 1) // 2
    return swin_fields(shapes[patch_embed][0], depths, [t[1] for t in tables], window, drop_path_rate)
