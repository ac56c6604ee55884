"""Converters from official Co-DETR checkpoints (and Swin layouts) to codetr's parameter names."""
from .errors import CheckpointConversionError
from .hook import OfficialCheckpointHook
from .official import (
    AUX_PREFIXES,
    convert_official,
    drop_aux,
    is_official_layout,
    official_head_order,
)
from .swin import (
    codetr_to_mmdet,
    detect_swin_layout,
    infer_swin_args,
    load_swin_checkpoint,
    swin_needs_conversion,
    swin_to_codetr,
)
from .vit import (
    convert_vit_backbone,
    is_official_vit_layout,
    load_vit_pretrained,
    vit_official_to_codetr,
)

__all__ = ['AUX_PREFIXES', 'CheckpointConversionError', 'OfficialCheckpointHook',
           'codetr_to_mmdet', 'convert_official', 'convert_vit_backbone', 'detect_swin_layout',
           'drop_aux', 'infer_swin_args', 'is_official_layout', 'is_official_vit_layout',
           'load_swin_checkpoint', 'load_vit_pretrained', 'official_head_order',
           'swin_needs_conversion', 'swin_to_codetr', 'vit_official_to_codetr']
