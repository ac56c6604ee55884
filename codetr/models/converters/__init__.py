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
from .vit import (
    convert_vit_backbone,
    is_official_vit_layout,
    load_vit_pretrained,
    vit_official_to_codetr,
)

__all__ = ['AUX_PREFIXES', 'CheckpointConversionError', 'OfficialCheckpointHook',
           'convert_official', 'convert_vit_backbone', 'drop_aux', 'is_official_layout',
           'is_official_vit_layout', 'load_vit_pretrained', 'official_head_order',
           'vit_official_to_codetr']
