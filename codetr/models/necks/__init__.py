"""Necks: ChannelMapper (per-level projection plus stride-2 extra levels)."""
from .channel_mapper import ChannelMapper, ConvNormAct

__all__ = ['ChannelMapper', 'ConvNormAct']
