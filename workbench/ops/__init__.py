"""Multi-scale deformable attention: the op behind the pixel decoder.

`ms_deform_attn` picks a backend; `MSDeformAttn` is the nn.Module the pixel decoder uses.
"""
from workbench.ops.dispatch import backend_info, ms_deform_attn
from workbench.ops.module import MSDeformAttn
from workbench.ops.reference import ms_deform_attn_reference

__all__ = ["MSDeformAttn", "backend_info", "ms_deform_attn", "ms_deform_attn_reference"]
