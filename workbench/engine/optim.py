"""The optimiser's parameter groups: per-part lr multipliers, no weight decay on norms and embeddings, frozen
parameters left out (solver.freeze)."""
from __future__ import annotations

from torch import nn

from workbench.config import SolverConfig
from workbench.model import MultiTaskMask2Former

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.Embedding)
NO_DECAY_NAMES = ("level_embed", "relative_position_bias_table")  # parameters that are embeddings in all but type
HEAD_MODULES = ("decoder.class_head", "decoder.attribute_heads.")  # what the user's categories/attributes define


def freeze_parameters(model: MultiTaskMask2Former, freeze: str) -> int:
    """solver.freeze: "backbone" or "trunk" (all but HEAD_MODULES) get requires_grad=False; returns how many."""
    frozen = 0
    for name, param in model.named_parameters():
        if (freeze == "backbone" and name.startswith("backbone.")) or \
                (freeze == "trunk" and not name.startswith(HEAD_MODULES)):
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def param_groups(model: MultiTaskMask2Former, solver: SolverConfig, lr: float) -> list[dict]:
    """Backbone at lr x backbone_lr_multiplier, heads (HEAD_MODULES) at lr x head_lr_multiplier; no weight
    decay on norm layers, embeddings and Swin's relative position bias tables (as upstream); frozen parameters
    are left out."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            group_lr = lr * (solver.backbone_lr_multiplier if module_name.startswith("backbone.") else
                             solver.head_lr_multiplier if module_name.startswith(HEAD_MODULES) else 1.0)
            no_decay = isinstance(module, NORM_TYPES) or name in NO_DECAY_NAMES
            decay = 0.0 if no_decay else solver.weight_decay
            groups.setdefault((group_lr, decay), []).append(param)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]
