"""Transformer building blocks; importing a file here registers its modules."""
from .ms_deform_attn import MultiScaleDeformableAttention, ms_deform_attn

__all__ = ['MultiScaleDeformableAttention', 'ms_deform_attn']
