"""Converters from official Co-DETR checkpoints to codetr's parameter names."""
from .hook import OfficialCheckpointHook
from .official import (
    AUX_PREFIXES,
    CheckpointConversionError,
    convert_official,
    drop_aux,
    is_official_layout,
    official_head_order,
)

__all__ = ['AUX_PREFIXES', 'CheckpointConversionError', 'OfficialCheckpointHook',
           'convert_official', 'drop_aux', 'is_official_layout', 'official_head_order']
