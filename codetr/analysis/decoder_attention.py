"""Cross-attention maps of the decoder, for the decoder IoF-IoB curve of the paper's Fig. 2.

A decoder layer's multi-scale deformable cross-attention lets query q look, per head h,
level l and point p, at a sampling location with weight ``w_qhlp`` (the weights of a query
and head sum to 1 over its levels and points). The attention map of a set of queries on
level l is the sum of their weights spread onto that level's grid with the bilinear
coefficients the attention itself samples with. The queries are the *positive* ones: the
queries that the head's Hungarian assigner matches to the ground truth from that layer's
predictions (the paper measures the attention learning of positive queries; it does not
say which queries it sums, so that is this module's choice). Each level's map then goes
through the same max normalisation and level averaging as the encoder score
(:func:`codetr.analysis.discriminability.average_levels`).

Everything is read through forward hooks and the attention module's public sub-layers
(``sampling_offsets``, ``attention_weights``); the sampling geometry is recomputed here and
a test checks it reproduces the module's output.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn

from codetr.models.layers.ms_deform_attn import MultiScaleDeformableAttention, ms_deform_attn
from codetr.structures import DetDataSample

from .model_inputs import hungarian_matches, query_head_outputs, valid_size


def cross_attentions(model: nn.Module) -> list[MultiScaleDeformableAttention]:
    """One deformable cross-attention module per decoder layer, in layer order."""
    try:
        layers = model.query_head.transformer.decoder.layers
    except AttributeError as err:
        raise TypeError('the decoder attention map needs query_head.transformer.decoder.layers'
                        ' (the deformable DETR decoders of CoDINOHead / CoDeformDETRHead)') from err
    found = []
    for index, layer in enumerate(layers):
        modules = [m for m in layer.modules() if isinstance(m, MultiScaleDeformableAttention)]
        if len(modules) != 1:
            raise TypeError(f'decoder layer {index} holds {len(modules)} deformable attention '
                            'modules; expected exactly one (its cross-attention)')
        found.append(modules[0])
    return found


@contextmanager
def record_calls(module: nn.Module):
    """Collect every call of ``module`` as ``dict(kwargs, output=...)`` in the yielded list."""
    calls: list[dict] = []

    def hook(_module, args, kwargs, output):
        if args:
            raise TypeError('expected the decoder to call its cross-attention with keywords')
        calls.append(dict(kwargs, output=output))

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def sampling_points(module: MultiScaleDeformableAttention, call: dict) -> tuple[Tensor, Tensor]:
    """Sampling locations ``(B, Q, H, L, P, 2)`` (normalised xy) and weights ``(B, Q, H, L, P)``
    of one recorded call, as the module computes them."""
    query = call['query']
    if call.get('query_pos') is not None:
        query = query + call['query_pos']
    batch, num_queries, _ = query.shape
    heads, levels, points = module.num_heads, module.num_levels, module.num_points
    offsets = module.sampling_offsets(query).float().view(
        batch, num_queries, heads, levels, points, 2)
    weights = module.attention_weights(query).float().view(
        batch, num_queries, heads, levels * points).softmax(-1).view(
        batch, num_queries, heads, levels, points)
    ref = call['reference_points'].float()[:, :, None, :, None, :]  # [B, Q, 1, L, 1, 2|4]
    if ref.shape[-1] == 2:  # offsets in level pixels
        size = call['spatial_shapes'].flip(-1).to(offsets)  # [L, 2] (w, h)
        locations = ref + offsets / size[None, None, None, :, None, :]
    else:  # offsets in half box sizes, split over the points
        locations = ref[..., :2] + offsets / points * ref[..., 2:] * 0.5
    return locations, weights


def attention_mass(locations: Tensor, weights: Tensor, spatial_shapes: Tensor) -> Tensor:
    """``(S,)`` total attention weight landing on each position of the flattened levels.

    ``locations (Q, H, L, P, 2)`` and ``weights (Q, H, L, P)`` of the chosen queries; each
    weight is split over the four grid cells around its location with the bilinear
    coefficients that the attention samples with (zero outside the map). It is the gradient
    of the attention output over a value of ones, so the op itself defines the geometry.
    """
    heads = locations.shape[1]
    num_value = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    starts = torch.cat([spatial_shapes.new_zeros(1),
                        (spatial_shapes[:, 0] * spatial_shapes[:, 1]).cumsum(0)[:-1]])
    with torch.enable_grad():
        value = torch.ones(1, num_value, heads, 1, dtype=torch.float32, requires_grad=True)
        out = ms_deform_attn(value, spatial_shapes, starts, locations[None].float().detach(),
                             weights[None].float().detach(), backend='pytorch')
        (grad,) = torch.autograd.grad(out.sum(), value)
    return grad[0, :, :, 0].sum(-1)


def split_levels(flat: Tensor, spatial_shapes: Tensor) -> list[Tensor]:
    """``(S,)`` -> one ``(h_l, w_l)`` map per level."""
    sizes = (spatial_shapes[:, 0] * spatial_shapes[:, 1]).tolist()
    return [chunk.view(int(h), int(w)) for chunk, (h, w) in
            zip(flat.split(sizes), spatial_shapes.tolist())]


@torch.no_grad()
def positive_attention_levels(model: nn.Module, inputs: Tensor, sample: DetDataSample,
                              layer: int = -1) -> list[Tensor]:
    """Attention maps ``(h_l, w_l)`` (image part of each level) of decoder layer ``layer``'s
    positive queries for one image (see the module docstring); all zeros without GT."""
    module = cross_attentions(model)[layer]
    with record_calls(module) as calls:
        cls_scores, bbox_preds = query_head_outputs(model, inputs, [sample])
    if len(calls) != 1:
        raise RuntimeError(f'decoder layer {layer} cross-attention ran {len(calls)} times in '
                           'one inference pass; expected once')
    call = calls[0]
    matched = hungarian_matches(model, cls_scores[layer], bbox_preds[layer], [sample])[0]
    queries = matched[matched >= 0]
    shapes = call['spatial_shapes']
    if len(queries) == 0:
        mass = torch.zeros(int((shapes[:, 0] * shapes[:, 1]).sum()))
    else:
        locations, weights = sampling_points(module, call)
        mass = attention_mass(locations[0, queries], weights[0, queries], shapes)
    levels = []
    for level in split_levels(mass, shapes):
        h, w = valid_size(level, sample)
        levels.append(level[:h, :w])
    return levels
