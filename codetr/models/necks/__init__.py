"""Necks: ChannelMapper (per-level projection plus stride-2 extra levels), SimpleFeaturePyramid
(ViTDet's pyramid from one stride-16 map)."""
from .channel_mapper import ChannelMapper, ConvNormAct
from .sfp import LayerNorm2d, SimpleFeaturePyramid

__all__ = ['ChannelMapper', 'ConvNormAct', 'LayerNorm2d', 'SimpleFeaturePyramid']
