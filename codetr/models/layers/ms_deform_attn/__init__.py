"""Multi-scale deformable attention: the op with its backends and the attention module."""
from .module import MultiScaleDeformableAttention, level_start_index_from_shapes
from .op import BACKENDS, ms_deform_attn, resolve_backend
from .pytorch_backend import ms_deform_attn_pytorch

__all__ = ['BACKENDS', 'MultiScaleDeformableAttention', 'level_start_index_from_shapes',
           'ms_deform_attn', 'ms_deform_attn_pytorch', 'resolve_backend']
