"""FLOPs and parameters of a detector's inference path, per component.

The count traces ``model.predict`` on one ``(1, 3, H, W)`` input with mmengine's
``FlopAnalyzer`` (``mmengine.analysis``: one FLOP is one multiply-add, as fvcore counts). Only
what inference runs is traced: with ``test_cfg.eval_module='detr'`` the aux heads, the
adapter and the positive-query generators get 0 FLOPs, and their parameters are still listed.

Ops with no counting rule in mmengine (element-wise arithmetic, ``topk``, NMS) are not
counted. Two ops get a rule here: ``scaled_dot_product_attention`` (``Q K^T`` and
``softmax(.) V``: ``L * S * (E + E_v)`` per batch and head) and multi-scale deformable
attention, counted as 4 multiply-adds (the bilinear corners, attention weight folded in) per
sampled point and channel, whatever the backend (fused C++, Triton, mmcv, or the pure-torch
``embedding_bag`` gather).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from math import prod
from typing import Any

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape
from torch import nn

from codetr.structures import DetDataSample

# The autograd Functions of the deformable-attention backends, as the jit trace names them.
MSDA_PYTHON_OPS = ('_CppMSDeformAttn', '_MSDeformAttnFunction', 'MSDeformAttnTritonFunction',
                   'MultiScaleDeformableAttnFunction')
MSDA_CORNERS = 4  # bilinear sampling reads 4 values per point and channel


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::scaled_dot_product_attention``: q (..., L, E), k (..., S, E), v (..., S, Ev)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def msda_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """A deformable-attention autograd Function: value (B, S, H, D) and sampling locations
    (B, Q, H, L, P, 2) are among its inputs, whatever their order."""
    shapes = [get_shape(x) for x in inputs]
    locations = next(s for s in shapes if s is not None and len(s) == 6 and s[-1] == 2)
    value = next(s for s in shapes if s is not None and len(s) == 4)
    return prod(locations[:-1]) * value[-1] * MSDA_CORNERS


def embedding_bag_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``aten::embedding_bag`` (the pure-torch deformable attention): one multiply-add per
    gathered row (index) and channel; its indices already count the 4 corners."""
    weight, indices = get_shape(inputs[0]), get_shape(inputs[1])
    return prod(indices) * weight[-1]


@dataclass
class Component:
    """One row of the table: FLOPs of the traced inference path, parameters, test-time use."""

    name: str
    module: str  # dotted path in the model ('' for the rest)
    flops: int
    params: int
    runs_at_test: bool


class _PredictPath(nn.Module):
    """``model.predict`` on one image as a traceable ``forward(inputs)``."""

    def __init__(self, model: nn.Module, metainfo: dict) -> None:
        super().__init__()
        self.model = model
        self.metainfo = metainfo

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        sample = DetDataSample(metainfo=dict(self.metainfo))
        pred = self.model.predict(inputs, [sample], rescale=False)[0].pred_instances
        return pred.bboxes, pred.scores, pred.labels


def _input_shape(model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """(H, W) padded as the data preprocessor pads a batch (``pad_size_divisor``)."""
    divisor = int(getattr(model.data_preprocessor, 'pad_size_divisor', 1) or 1)
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def _component_paths(model: nn.Module) -> list[tuple[str, str]]:
    """(row name, module path) of the components the model has, in data-flow order."""
    rows = [('backbone', 'backbone'), ('neck', 'neck'),
            ('encoder', 'query_head.transformer.encoder'),
            ('decoder', 'query_head.transformer.decoder')]
    generators = getattr(getattr(model, 'query_head', None), 'pos_query_generators', None) or {}
    rows += [(f'positive queries: {n}', f'query_head.pos_query_generators.{n}')
             for n in generators]
    rows.append(('adapter', 'adapter'))
    rows += [(f'aux head: {n}', f'aux_heads.{n}') for n in getattr(model, 'aux_heads', None) or {}]
    present = {name for name, _ in model.named_modules()}
    return [(name, path) for name, path in rows if path in present]


def _analyzer(model: nn.Module, height: int, width: int) -> FlopAnalyzer:
    meta = dict(img_shape=(height, width), batch_input_shape=(height, width),
                pad_shape=(height, width), ori_shape=(height, width), scale_factor=(1.0, 1.0))
    inputs = torch.randn(1, 3, height, width,
                         device=next(model.parameters()).device)
    analyzer = FlopAnalyzer(_PredictPath(model, meta), (inputs,))
    handles = {'aten::scaled_dot_product_attention': sdpa_flop_jit,
               'aten::embedding_bag': embedding_bag_flop_jit}
    handles.update({f'prim::PythonOp.{op}': msda_flop_jit for op in MSDA_PYTHON_OPS})
    analyzer.set_op_handle(**handles)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return analyzer.tracer_warnings('none')


def component_flops(model: nn.Module, shape: Sequence[int]) -> dict:
    """Trace the inference path of ``model`` (eval mode) on a ``shape = (H, W)`` input.

    Returns:
        ``dict(input_shape=(1, 3, H, W), total_flops, total_params, components=[Component
        as dict, ...], unsupported_ops={op: count})``. The components are the backbone,
        neck, encoder, decoder, each positive-query generator, the adapter and each aux head
        (those the model has), then ``query head (other)`` (proposal selection, class and
        box branches, positional encoding, denoising embedding) and ``other`` (post-
        processing outside any module, data preprocessor): their FLOPs and parameters sum
        to the totals.
    """
    height, width = _input_shape(model, *shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            analyzer = _analyzer(model, height, width)
            by_module = analyzer.by_module()
            total = analyzer.total()
            unsupported = dict(analyzer.unsupported_ops())
    finally:
        model.train(was_training)
    params = parameter_count(model)
    flops = {name[len('model.'):]: count for name, count in by_module.items()
             if name.startswith('model.')}
    components = [Component(name, path, flops.get(path, 0), params.get(path, 0),
                            flops.get(path, 0) > 0)
                  for name, path in _component_paths(model)]
    _add_remainders(components, flops, params, total)
    return dict(input_shape=(1, 3, height, width), total_flops=int(total),
                total_params=int(params['']), components=[asdict(c) for c in components],
                unsupported_ops=unsupported)


def _add_remainders(components: list[Component], flops: dict, params: dict,
                    total: int) -> None:
    """Append 'query head (other)' and 'other' so the rows sum to the totals."""
    if 'query_head' in params:
        inner = [c for c in components if c.module.startswith('query_head.')]
        head_flops = flops.get('query_head', 0) - sum(c.flops for c in inner)
        head_params = params['query_head'] - sum(c.params for c in inner)
        components.append(Component('query head (other)', 'query_head', head_flops,
                                    head_params, head_flops > 0))
    rest_flops = total - sum(c.flops for c in components)
    rest_params = params[''] - sum(c.params for c in components)
    components.append(Component('other', '', rest_flops, rest_params, rest_flops > 0))


def format_flops(count: float) -> str:
    """``1.23 GFLOPs``-style text (one FLOP = one multiply-add)."""
    for unit, scale in (('T', 1e12), ('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if abs(count) >= scale:
            return f'{count / scale:.3f} {unit}'
    return f'{count:.0f} '


def flops_table(result: dict) -> str:
    """A plain-text table of ``component_flops``' result."""
    rows = [('component', 'FLOPs', 'params', 'at test time')]
    for c in result['components']:
        rows.append((c['name'], format_flops(c['flops']) + 'FLOPs',
                     format_flops(c['params']).strip(), 'runs' if c['runs_at_test'] else '-'))
    rows.append(('total', format_flops(result['total_flops']) + 'FLOPs',
                 format_flops(result['total_params']).strip(), ''))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ['  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, '-' * len(lines[0]))
    lines.insert(-1, '-' * len(lines[0]))
    return '\n'.join(lines)
