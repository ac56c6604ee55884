"""What the exporter supports, checked before any tracing, with messages saying what to change."""
from __future__ import annotations

from torch import nn

from codetr.models.layers.ms_deform_attn import MultiScaleDeformableAttention

# Backbones whose forward traces with symbolic input sizes (plain convolutions and pooling).
SUPPORTED_BACKBONES = ('ResNet',)
SUPPORTED_QUERY_HEADS = ('CoDINOHead', 'CoDeformDETRHead')
SUPPORTED_NECKS = ('ChannelMapper',)


class ExportError(ValueError):
    """The model (or the export request) cannot be exported; the message says what to change."""


def check_exportable(model: nn.Module) -> None:
    """Raise :class:`ExportError` unless ``model`` is a detector the exporter can trace.

    Export covers ``CoDETR.predict`` with ``test_cfg.eval_module='detr'``: backbone, neck,
    query head (encoder, decoder, top-k). Aux-head evaluation, other backbones / necks / heads
    and replaced deformable-attention modules are refused here rather than failing deep
    inside the tracer.
    """
    for part in ('backbone', 'query_head'):
        if not isinstance(getattr(model, part, None), nn.Module):
            raise ExportError(f'the model has no {part}: export takes a built CoDETR detector '
                              f'(got {type(model).__name__})')
    eval_module = getattr(model, 'eval_module', 'detr')
    if eval_module != 'detr':
        raise ExportError(
            f"test_cfg.eval_module={eval_module!r} predicts through the aux head "
            f"{getattr(model, 'eval_head', None)!r}, which export does not cover (it exports "
            "the query head's path only): set model.test_cfg.eval_module='detr', e.g. "
            '--cfg-options model.test_cfg.eval_module=detr')
    _check_type('backbone', model.backbone, SUPPORTED_BACKBONES,
                'use a ResNet backbone config (the R50 / R18 configs) or predict with PyTorch')
    if getattr(model, 'neck', None) is not None:
        _check_type('neck', model.neck, SUPPORTED_NECKS, "use neck=dict(type='ChannelMapper', "
                    '...) or predict with PyTorch')
    _check_type('query_head', model.query_head, SUPPORTED_QUERY_HEADS,
                'export supports the Co-DINO and Co-Deformable-DETR query heads')
    for name, module in model.query_head.named_modules():
        if 'MultiScaleDeformable' in type(module).__name__ and \
                type(module) is not MultiScaleDeformableAttention:
            raise ExportError(f'query_head.{name} is a {type(module).__name__}; export '
                              'replaces only MultiScaleDeformableAttention modules: use '
                              "type='MultiScaleDeformableAttention' in the layer configs")


def left_out_masks(model: nn.Module) -> str | None:
    """A note when ``model`` predicts masks (``test_cfg.mask_branch``), which export leaves
    out: the exported graph gives the query head's boxes, scores and labels only."""
    branch = getattr(model, 'mask_branch', None)
    if branch is None:
        return None
    return (f'test_cfg.mask_branch={branch!r} gives the PyTorch model masks, which export '
            'leaves out: the exported file predicts boxes, scores and labels only (predict '
            'with PyTorch for masks; --cfg-options model.test_cfg.mask_branch=None exports '
            'the same boxes without this note)')


def _check_type(part: str, module: nn.Module, supported: tuple[str, ...], hint: str) -> None:
    name = type(module).__name__
    if name not in supported:
        raise ExportError(f'model.{part} is a {name}, which export does not support (supported: '
                          f'{", ".join(supported)}): {hint}')
