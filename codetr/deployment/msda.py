"""Multi-scale deformable attention in standard operators, for export.

The library's op (``codetr.models.layers.ms_deform_attn``) dispatches to fused kernels and
reads the level sizes back from a tensor; neither can be traced into a portable graph. Here
each level is one bilinear ``grid_sample`` (ONNX ``GridSample``, opset >= 16, which ONNX
Runtime and TensorRT implement natively) over a view of the projected values, and the level
sizes are Python (or, while tracing, symbolic) ints, so one exported graph serves any input
size. :class:`ExportableMSDA` wraps a built ``MultiScaleDeformableAttention`` and uses its
parameters; :func:`swap_deformable_attention` puts one in place of every such module of a
model copy.

Why ``GridSample`` per level: ``benchmarks/msda_formulations.py`` runs the attention core
alone in ONNX Runtime in several standard-operator forms, each equal to the eager kernel
within 1e-5: this one; one ``GridSample`` per level and point; and gather forms that read the
four bilinear corners of every point as rows of a (B * S * H, D) value table (``Gather``, zero
weight outside the map or a zero-framed table) and reduce them with the bilinear times
attention weights (``Mul`` + ``ReduceSum`` or a batched ``MatMul``). At the encoder shapes,
which carry most of the attention time, none of the gather forms is faster (a gather writes
four D-vectors per point where ``GridSample`` writes one value per channel) and the per-level
gather holds four times the transient memory; the per-point ``GridSample`` was ~13 % faster
there in one run, but slower in the decoder and with a 1.5x larger peak rise over a call.
All of them stay 3-15x slower than the fused kernel (benchmarks/README.md, deployment
section): ``GridSample`` recomputes each point's corners and weights for every channel.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codetr.models.layers.ms_deform_attn import MultiScaleDeformableAttention

Shapes = Sequence[tuple[int, int]]


def ms_deform_attn_grid_sample(value: Tensor, shapes: Shapes, grids: list[Tensor],
                               weights: list[Tensor]) -> Tensor:
    """Weighted bilinear samples of every level, summed.

    Args:
        value: (B, S, H, D) per-head values, levels flattened row-major and concatenated.
        shapes: L ``(h, w)`` pairs, ``S = sum(h * w)``.
        grids: L tensors (B * H, P, Q, 2): sampling locations of each level mapped to
            [-1, 1] (``2 * loc - 1``; ``align_corners=False`` reads (-1, -1) as the map's
            top-left corner, as the library's backends do).
        weights: L tensors (B * H, 1, P, Q): attention weights of each level.

    Returns:
        (B, Q, H * D).
    """
    batch, _, heads, dims = value.shape
    value_t = value.permute(0, 2, 3, 1).reshape(batch * heads, dims, -1)  # [B*H, D, S]
    output = None
    start = 0
    for (height, width), grid, weight in zip(shapes, grids, weights):
        level = value_t[:, :, start:start + height * width].reshape(batch * heads, dims,
                                                                     height, width)
        samples = F.grid_sample(level, grid, mode='bilinear', padding_mode='zeros',
                                align_corners=False)  # [B*H, D, P, Q]
        # Points before queries: the sum runs over a middle axis of contiguous (Q,) rows,
        # which ONNX Runtime's ReduceSum does far faster than a last axis of length P.
        summed = (samples * weight).sum(2)  # [B*H, D, Q]
        output = summed if output is None else output + summed
        start = start + height * width
    queries = output.shape[-1]
    return output.view(batch, heads * dims, queries).transpose(1, 2)


class ExportableMSDA(nn.Module):
    """A ``MultiScaleDeformableAttention`` whose forward traces into standard operators.

    Same call signature and result as the wrapped module in eval mode (no value cache,
    ``spatial_shapes`` given as L ``(h, w)`` int pairs instead of a tensor; ``level_start_index``
    is ignored).

    Args:
        module: the built attention; its parameters are used, not copied.
    """

    def __init__(self, module: MultiScaleDeformableAttention) -> None:
        super().__init__()
        self.inner = module
        self.batch_first = module.batch_first

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                identity: Tensor | None = None, query_pos: Tensor | None = None,
                key_padding_mask: Tensor | None = None,
                reference_points: Tensor | None = None, spatial_shapes: Shapes | None = None,
                level_start_index: Tensor | None = None, value_cache: dict | None = None,
                **kwargs) -> Tensor:
        """See ``MultiScaleDeformableAttention.forward``; ``spatial_shapes``: L (h, w) pairs."""
        attn = self.inner
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)
        batch, num_value, _ = value.shape
        value = attn.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(batch, num_value, attn.num_heads, -1)
        grids, weights = self._sampling(query, reference_points, spatial_shapes)
        out = attn.output_proj(ms_deform_attn_grid_sample(value, spatial_shapes, grids,
                                                          weights))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return attn.dropout(out) + identity

    def _sampling(self, query: Tensor, reference_points: Tensor,
                  shapes: Shapes) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: grids (B * H, P, Q, 2) in [-1, 1] and weights (B * H, 1, P, Q).

        The arithmetic is the library module's ``_sampling`` (float32 locations), split by
        level: pixel offsets are divided by that level's ``(w, h)`` one coordinate at a time.
        """
        attn = self.inner
        batch, num_queries, _ = query.shape
        heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
        offsets = attn.sampling_offsets(query).float().view(
            batch, num_queries, heads, levels, points, 2)
        weights = attn.attention_weights(query).float().view(
            batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        ref = reference_points.float()
        grids, level_weights = [], []
        for level, (height, width) in enumerate(shapes):
            offset = offsets[:, :, :, level]  # [B, Q, H, P, 2]
            ref_l = ref[:, :, None, level, None, :]  # [B, Q, 1, 1, 2 or 4]
            if ref.shape[-1] == 2:
                scaled = torch.stack([offset[..., 0] / width, offset[..., 1] / height], -1)
                loc = ref_l + scaled
            else:
                loc = ref_l[..., :2] + offset / points * ref_l[..., 2:] * 0.5
            grid = (2 * loc - 1).permute(0, 2, 3, 1, 4)  # [B, H, P, Q, 2]
            grids.append(grid.reshape(batch * heads, points, num_queries, 2))
            weight = weights[:, :, :, level].permute(0, 2, 3, 1)  # [B, H, P, Q]
            level_weights.append(weight.reshape(batch * heads, 1, points, num_queries))
        return grids, level_weights


def swap_deformable_attention(model: nn.Module) -> int:
    """Replace every ``MultiScaleDeformableAttention`` inside ``model`` (in place) by an
    :class:`ExportableMSDA` over it; returns how many were replaced."""
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, MultiScaleDeformableAttention)]
    for name, module in targets:
        parent_name, _, child = name.rpartition('.')
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, ExportableMSDA(module))
    return len(targets)
