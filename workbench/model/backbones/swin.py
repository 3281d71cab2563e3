"""Swin Transformer (V1) backbones: Swin-T/S/B/L returning res2..res5 at strides 4/8/16/32, channels C..8C.

Built from torchvision's Swin pieces (`SwinTransformerBlock`, `ShiftedWindowAttention`'s parameters and
relative-position table, `PatchMerging`), arranged as upstream Mask2Former's `D2SwinTransformer`: each stage's
output goes through its own LayerNorm (`norms["res2"]`.., upstream `norm0..3`, transformers' SwinBackbone
`hidden_states_norms.stage1..4`). Swin-L (embed 192, depths 2-2-18-2, heads 6-12-24-48), which torchvision lacks,
is the same blocks at other sizes.

Window semantics (one behaviour, checked by reading the three codes; tests/test_swin.py proves parity):
    upstream Mask2Former `swin.py`    pads every block's input to a multiple of the window and, in every odd
                                      block, shifts by window // 2 and masks the wrapped regions, at any size.
    transformers `SwinBackbone`       the same: it calls the encoder with `always_partition=True`, which skips
                                      `SwinLayer.set_shift_and_window_size` (the classification `SwinModel`'s
                                      "window = min(resolution), shift 0 when the map is small", which also
                                      mutates the layer). So the two checkpoint sources agree.
    torchvision `shifted_window_attention`  zeroes the shift on an axis whose padded size is <= the window.
                                      This differs from both as soon as a stage is no larger than one window
                                      (e.g. res5 of a 200x264 image with window 7 is 7x9), so our attention
                                      (`WindowAttention.forward`) keeps torchvision's parameters but always shifts.
Our forward is a pure function of the input size (no module state changes with the resolution), so no
configuration field is needed to choose between the checkpoint sources.

Any input size: the image is zero-padded (bottom/right) to a multiple of the patch size, each block's input to a
multiple of the window (padded tokens take part in attention unmasked, as upstream), and patch merging pads an
odd side by one. Outputs are ceil(H / stride) x ceil(W / stride).

Weights: `SwinBackbone.load_imagenet` loads torchvision's ImageNet weights (Swin-T/S/B, window 7) from the local
cache, never downloading; Swin-L has none in torchvision. COCO checkpoints go through the key maps below
(`transformers_swin_keys`, `upstream_swin_keys`): our keys <- source keys, concatenated along dim 0 where the
source splits q/k/v.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import PatchMerging, ShiftedWindowAttention, SwinTransformerBlock

from workbench.model.backbones.base import FEATURE_NAMES, Backbone, load_cached_state_dict

__all__ = [
    "SWIN_VARIANTS", "SwinVariant", "SwinBackbone", "WindowAttention", "KeyMap", "build_swin_backbone",
    "swin_variant_name", "shift_window_mask", "transformers_swin_keys", "upstream_swin_keys", "torchvision_swin_keys",
]


@dataclass(frozen=True)
class SwinVariant:
    """Architecture of one published Swin size. `imagenet_weights`: torchvision's weights enum (window 7), if any."""

    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    imagenet_weights: str | None


SWIN_VARIANTS: dict[str, SwinVariant] = {
    "swin_t": SwinVariant(96, (2, 2, 6, 2), (3, 6, 12, 24), "Swin_T_Weights"),
    "swin_s": SwinVariant(96, (2, 2, 18, 2), (3, 6, 12, 24), "Swin_S_Weights"),
    "swin_b": SwinVariant(128, (2, 2, 18, 2), (4, 8, 16, 32), "Swin_B_Weights"),
    "swin_l": SwinVariant(192, (2, 2, 18, 2), (6, 12, 24, 48), None),
}
TORCHVISION_WINDOW = 7  # torchvision's ImageNet Swin-T/S/B weights are window 7 (224^2 training)


def swin_variant_name(embed_dim: int, depths: Sequence[int], num_heads: Sequence[int]) -> str:
    """The SWIN_VARIANTS name with these sizes, e.g. (96, [2, 2, 6, 2], [3, 6, 12, 24]) -> "swin_t"."""
    for name, v in SWIN_VARIANTS.items():
        if (v.embed_dim, v.depths, v.num_heads) == (embed_dim, tuple(depths), tuple(num_heads)):
            return name
    known = {n: (v.embed_dim, v.depths, v.num_heads) for n, v in SWIN_VARIANTS.items()}
    raise ValueError(f"no Swin variant has embed_dim={embed_dim}, depths={tuple(depths)}, "
                     f"num_heads={tuple(num_heads)}; known (embed_dim, depths, num_heads): {known}")


# --- window attention --------------------------------------------------------------------------------------------
def shift_window_mask(height: int, width: int, window: int, shift: int, device=None) -> torch.Tensor:
    """Additive mask (nW, window^2, window^2) for shifted windows on a (height, width) map padded to the window.

    After the map is rolled by -shift, each axis has three regions, [0, P - window), [P - window, P - shift) and
    [P - shift, P); tokens from different regions must not attend to each other (-100, as upstream), so a
    window never mixes pixels that the roll brought from the opposite border. Windows are ordered row-major.
    """
    def regions(size: int) -> torch.Tensor:
        idx = torch.arange(size, device=device)
        return (idx >= size - window).long() + (idx >= size - shift).long()

    ids = regions(height)[:, None] * 3 + regions(width)[None, :]  # (P_h, P_w)
    ids = ids.view(height // window, window, width // window, window).transpose(1, 2).reshape(-1, window * window)
    different = ids[:, None, :] != ids[:, :, None]
    return torch.zeros(different.shape, device=device).masked_fill(different, -100.0)


class WindowAttention(ShiftedWindowAttention):
    """torchvision's (shifted) window attention parameters, with a forward that always shifts when asked.

    Parameters and their names are torchvision's (`qkv`, `proj`, `relative_position_bias_table`), so its
    ImageNet weights load as they are. `relative_position_index` is a non-persistent buffer: it is a function
    of the window size only, recomputed at construction and never read from or written to a checkpoint.
    forward: x (B, H, W, C) -> (B, H, W, C); see the module docstring for why the shift is never dropped.
    """

    def define_relative_position_index(self) -> None:
        super().define_relative_position_index()
        index = self.relative_position_index
        del self.relative_position_index
        self.register_buffer("relative_position_index", index, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window, shift = self.window_size[0], self.shift_size[0]
        B, H, W, C = x.shape
        pad_h, pad_w = (-H) % window, (-W) % window
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        rows, cols, n = Hp // window, Wp // window, window * window
        windows = x.view(B, rows, window, cols, window, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, n, C)

        heads = self.num_heads
        q, k, v = self.qkv(windows).view(-1, n, 3, heads, C // heads).permute(2, 0, 3, 1, 4)  # each (B*nW, h, n, d)
        attn = (q * (C // heads) ** -0.5) @ k.transpose(-2, -1) + self.get_relative_position_bias()
        if shift:
            mask = shift_window_mask(Hp, Wp, window, shift, device=x.device).to(attn.dtype)
            attn = (attn.view(B, rows * cols, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
        attn = F.dropout(attn.softmax(dim=-1), p=self.attention_dropout, training=self.training)
        out = (attn @ v).transpose(1, 2).reshape(-1, n, C)
        out = F.dropout(self.proj(out), p=self.dropout, training=self.training)

        out = out.view(B, rows, cols, window, window, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        return out[:, :H, :W].contiguous()


# --- the backbone ------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """images (B, 3, H, W) -> tokens (B, ceil(H/p), ceil(W/p), C): zero-pad to the patch size, conv, LayerNorm."""

    def __init__(self, embed_dim: int, patch_size: int = 4) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        images = F.pad(images, (0, (-images.shape[-1]) % p, 0, (-images.shape[-2]) % p))
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class SwinStage(nn.Module):
    """Optional patch merging (halves H and W, doubles C) then `blocks`; (B, H, W, C) in and out."""

    def __init__(self, downsample: nn.Module | None, blocks: nn.Sequential) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


class SwinBackbone(Backbone):
    """Swin V1 for dense prediction: images (B, 3, H, W) -> {"res2": (B, C, ceil(H/4), ceil(W/4)), ...,
    "res5": (B, 8C, ceil(H/32), ceil(W/32))}, each stage output through its own LayerNorm (`norms`).

    Stage res2 is blocks at stride 4; res3..res5 start with patch merging. Odd blocks shift by window // 2.
    Stochastic depth grows linearly from 0 at the first block to `drop_path_rate` at the last (as upstream,
    torchvision and transformers).
    """

    def __init__(self, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int], window_size: int = 7,
                 drop_path_rate: float = 0.0, mlp_ratio: float = 4.0, patch_size: int = 4) -> None:
        super().__init__()
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError(f"Swin needs 4 stages (res2..res5): got depths={list(depths)}, "
                             f"num_heads={list(num_heads)}")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.depths, self.num_heads, self.window_size = tuple(depths), tuple(num_heads), window_size
        self.patch_embed = PatchEmbed(embed_dim, patch_size)
        total = sum(depths)
        block_id, stages = 0, OrderedDict()
        for i, name in enumerate(FEATURE_NAMES):
            dim = embed_dim * 2 ** i
            if dim % num_heads[i]:
                raise ValueError(f"stage {name}: width {dim} is not divisible by num_heads {num_heads[i]}")
            blocks = []
            for j in range(depths[i]):
                blocks.append(SwinTransformerBlock(
                    dim, num_heads[i], window_size=[window_size, window_size],
                    shift_size=[0, 0] if j % 2 == 0 else [window_size // 2, window_size // 2],
                    mlp_ratio=mlp_ratio, stochastic_depth_prob=drop_path_rate * block_id / max(total - 1, 1),
                    attn_layer=WindowAttention,
                ))
                block_id += 1
            downsample = PatchMerging(dim // 2) if i > 0 else None
            stages[name] = SwinStage(downsample, nn.Sequential(*blocks))
        self.stages = nn.ModuleDict(stages)
        self.norms = nn.ModuleDict({n: nn.LayerNorm(embed_dim * 2 ** i) for i, n in enumerate(FEATURE_NAMES)})
        self.out_channels = {n: embed_dim * 2 ** i for i, n in enumerate(FEATURE_NAMES)}
        for m in self.modules():  # torchvision's SwinTransformer init
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.loaded_weights: str | None = None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.run_stage(self.patch_embed, images)
        feats = {}
        for name, stage in self.stages.items():
            x = self.run_stage(stage, x)
            feats[name] = self.norms[name](x).permute(0, 3, 1, 2).contiguous()
        return feats

    def load_imagenet(self, weights) -> None:
        """Load a torchvision Swin weights enum member from the local cache (never downloads).

        Stage norms (`norms.*`) are not in a classification checkpoint and keep their fresh init, as upstream
        when it starts from ImageNet weights; the classifier (`norm`, `head`) is dropped.
        """
        _check_imagenet_window(self.window_size, str(weights))
        key_map = torchvision_swin_keys(self.depths)
        state = key_map.to_ours(load_cached_state_dict(weights))
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or sorted(missing) != sorted(key_map.new):
            raise RuntimeError(f"{weights}: loading left missing={missing}, unexpected={unexpected}")
        self.loaded_weights = str(weights)


def _check_imagenet_window(window_size: int, weights: str) -> None:
    if window_size != TORCHVISION_WINDOW:
        raise ValueError(f"torchvision's ImageNet {weights} weights are window {TORCHVISION_WINDOW}; this backbone "
                         f"has window {window_size} (ModelConfig.backbone_window_size). Set "
                         f"backbone_window_size={TORCHVISION_WINDOW}, or start from a COCO checkpoint instead.")


def build_swin_backbone(name: str, window_size: int = TORCHVISION_WINDOW, drop_path_rate: float = 0.0,
                        pretrained: bool = False) -> SwinBackbone:
    """A SWIN_VARIANTS backbone; pretrained loads torchvision's ImageNet weights from the local cache (T/S/B)."""
    if name not in SWIN_VARIANTS:
        raise ValueError(f"unknown Swin backbone {name!r}; expected one of {tuple(SWIN_VARIANTS)}")
    v = SWIN_VARIANTS[name]
    if pretrained and v.imagenet_weights is None:
        raise ValueError(f"backbone {name!r}: torchvision has no ImageNet weights for Swin-L (upstream starts "
                         f"from swin_large_patch4_window12_384_22k); set pretrained_backbone=False and load a "
                         f"COCO checkpoint (upstream model_final_*.pkl or a transformers directory) instead")
    if pretrained:
        _check_imagenet_window(window_size, v.imagenet_weights)
    net = SwinBackbone(v.embed_dim, v.depths, v.num_heads, window_size=window_size, drop_path_rate=drop_path_rate)
    if pretrained:
        import torchvision.models as tvm

        net.load_imagenet(getattr(tvm, v.imagenet_weights).IMAGENET1K_V1)
    return net


# --- key maps ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyMap:
    """How a source state dict (keys relative to the backbone) becomes our SwinBackbone's, and back.

    sources: our key -> the source key(s) it is made of; several keys are concatenated along dim 0 in that order
             (transformers stores q, k and v apart; we hold torchvision's fused `qkv`).
    ignored: source keys that may be present and are deliberately not loaded -> why (recomputed buffers,
             modules our backbone does not have). Any other unmapped source key is an error.
    new:     our keys the source has no tensor for (kept as initialised).
    """

    sources: Mapping[str, tuple[str, ...]]
    ignored: Mapping[str, str] = field(default_factory=dict)
    new: tuple[str, ...] = ()

    def to_ours(self, state: Mapping[str, object], prefix: str = "") -> dict[str, torch.Tensor]:
        """Source tensors (torch or numpy) under `prefix` -> our state dict; unmapped or missing keys raise."""
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        used = {s for srcs in self.sources.values() for s in srcs}
        unknown = sorted(k for k in state if k not in used and k not in self.ignored)
        if unknown:
            raise KeyError(f"source keys with no place in our Swin backbone: {[prefix + k for k in unknown][:10]}"
                           f"{' ...' if len(unknown) > 10 else ''} ({len(unknown)} in all); the checkpoint's "
                           f"architecture differs (depths, absolute position embeddings?)")
        missing = sorted(s for s in used if s not in state)
        if missing:
            raise KeyError(f"source is missing {len(missing)} backbone tensors, e.g. "
                           f"{[prefix + k for k in missing][:10]}")
        return {ours: torch.cat([torch.as_tensor(state[s]) for s in srcs]) if len(srcs) > 1
                else torch.as_tensor(state[srcs[0]]) for ours, srcs in self.sources.items()}

    def to_source(self, ours: Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
        """Our state dict -> source keys (with `prefix`), fused tensors split into equal parts along dim 0."""
        out = {}
        for key, srcs in self.sources.items():
            for s, part in zip(srcs, ours[key].chunk(len(srcs))):
                out[prefix + s] = part.contiguous()
        return out


_BLOCK_PARAMS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                 "attn.proj.bias", "attn.relative_position_bias_table", "norm2.weight", "norm2.bias",
                 "mlp.0.weight", "mlp.0.bias", "mlp.3.weight", "mlp.3.bias")
_WB = ("weight", "bias")


def _our_blocks(depths: Sequence[int]):
    """(stage index i, block index j, our block prefix) for every block."""
    for i, name in enumerate(FEATURE_NAMES):
        for j in range(depths[i]):
            yield i, j, f"stages.{name}.blocks.{j}."


def _swin_keymap(depths: Sequence[int], patch_embed: tuple[str, str], block: Callable[[int, int], str],
                 modules: Mapping[str, str | tuple[str, ...]], downsample: Callable[[int], str],
                 stage_norm: Callable[[int], str] | None, ignored: Mapping[str, str] | None = None) -> KeyMap:
    """The key map of a Swin state dict laid out as ours, in the source's names.

    patch_embed: the source's (conv, norm) prefixes; block(i, j): the source prefix of our stage i's block j;
    modules: our block module -> the source's (default: the same name; a tuple is concatenated on dim 0);
    downsample(i): the source prefix of the patch merging that opens our stage i (i >= 1); stage_norm(i): the
    source prefix of stage i's output norm, None = the source has none (those are `new`); ignored: source keys
    skipped besides each block's recomputed `relative_position_index`.
    """
    sources, ignored = {}, dict(ignored or {})
    for k in _WB:
        sources[f"patch_embed.proj.{k}"] = (f"{patch_embed[0]}.{k}",)
        sources[f"patch_embed.norm.{k}"] = (f"{patch_embed[1]}.{k}",)
    for i, j, ours in _our_blocks(depths):
        theirs = block(i, j)
        for p in _BLOCK_PARAMS:
            module, _, leaf = p.rpartition(".")
            names = modules.get(module, module)
            sources[ours + p] = tuple(f"{theirs}{m}.{leaf}" for m in ((names,) if isinstance(names, str) else names))
        ignored[f"{theirs}{modules.get('attn', 'attn')}.relative_position_index"] = "recomputed from the window size"
    for i, name in enumerate(FEATURE_NAMES):
        if i > 0:
            for p in ("reduction.weight", "norm.weight", "norm.bias"):
                sources[f"stages.{name}.downsample.{p}"] = (downsample(i) + p,)
        if stage_norm is not None:
            for k in _WB:
                sources[f"norms.{name}.{k}"] = (f"{stage_norm(i)}.{k}",)
    new = () if stage_norm is not None else tuple(f"norms.{n}.{k}" for n in FEATURE_NAMES for k in _WB)
    return KeyMap(sources, ignored, new)


def upstream_swin_keys(depths: Sequence[int]) -> KeyMap:
    """Upstream Mask2Former's D2SwinTransformer (under `backbone.` in model_final_*.pkl) -> ours.

    >>> m = upstream_swin_keys([2, 2, 6, 2])
    >>> m.sources["stages.res3.downsample.reduction.weight"]
    ('layers.0.downsample.reduction.weight',)
    >>> m.sources["norms.res5.weight"], m.sources["stages.res2.blocks.1.mlp.3.bias"]
    (('norm3.weight',), ('layers.0.blocks.1.mlp.fc2.bias',))

    Names match upstream's except the MLP (`fc1`/`fc2` vs torchvision's `mlp.0`/`mlp.3`), the per-stage
    grouping (upstream's `layers.i.downsample` ends stage i; ours begins the next) and the output norms.
    `layers.i.blocks.j.attn.relative_position_index` is ignored: it is recomputed from the window.
    """
    return _swin_keymap(depths, ("patch_embed.proj", "patch_embed.norm"), lambda i, j: f"layers.{i}.blocks.{j}.",
                        {"mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}, lambda i: f"layers.{i - 1}.downsample.",
                        lambda i: f"norm{i}")


def transformers_swin_keys(depths: Sequence[int]) -> KeyMap:
    """transformers' SwinBackbone as written by `save_pretrained` (under `model.pixel_level_module.encoder.` in
    a Mask2FormerForUniversalSegmentation `model.safetensors`; the on-disk names, which transformers 5 still
    writes, not its in-memory `q_proj`/`swin.` names) -> ours.

    >>> m = transformers_swin_keys([2, 2, 6, 2])
    >>> m.sources["stages.res2.blocks.0.attn.qkv.weight"]  # doctest: +NORMALIZE_WHITESPACE
    ('encoder.layers.0.blocks.0.attention.self.query.weight', 'encoder.layers.0.blocks.0.attention.self.key.weight',
     'encoder.layers.0.blocks.0.attention.self.value.weight')
    >>> m.sources["norms.res2.bias"]
    ('hidden_states_norms.stage1.bias',)

    Ignored: `swin.layernorm.*` (SwinModel's final norm, which SwinBackbone never applies) and, in older files,
    `attention.self.relative_position_index` (recomputed from the window size).
    """
    modules = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn": "attention.self",
               "attn.qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
               "attn.proj": "attention.output.dense", "mlp.0": "intermediate.dense", "mlp.3": "output.dense"}
    return _swin_keymap(depths, ("embeddings.patch_embeddings.projection", "embeddings.norm"),
                        lambda i, j: f"encoder.layers.{i}.blocks.{j}.", modules,
                        lambda i: f"encoder.layers.{i - 1}.downsample.", lambda i: f"hidden_states_norms.stage{i + 1}",
                        {f"swin.layernorm.{k}": "SwinModel's final LayerNorm: SwinBackbone never applies it"
                         for k in _WB})


def torchvision_swin_keys(depths: Sequence[int]) -> KeyMap:
    """torchvision's SwinTransformer classifier (`features.*`) -> ours; the stage norms are new.

    >>> torchvision_swin_keys([2, 2, 6, 2]).sources["stages.res3.downsample.norm.weight"]
    ('features.2.norm.weight',)
    """
    return _swin_keymap(depths, ("features.0.0", "features.0.2"), lambda i, j: f"features.{2 * i + 1}.{j}.", {},
                        lambda i: f"features.{2 * i}.", None,
                        {f"{m}.{k}": "classifier, not part of a backbone" for m in ("norm", "head") for k in _WB})

