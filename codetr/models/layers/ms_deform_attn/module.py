"""``MultiScaleDeformableAttention``: the attention layer of Deformable-DETR-style transformers.

Parameter names, shapes and initialisation follow MMDetection's layer of the same name,
so official Co-DETR checkpoints load without renaming these keys.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from codetr.registry import MODELS

from .op import BACKENDS, as_sampled, ms_deform_attn


def level_start_index_from_shapes(spatial_shapes: Tensor) -> Tensor:
    """(L,) offsets of each level in the flattened sequence, from (L, 2) (h, w) shapes."""
    areas = spatial_shapes[:, 0] * spatial_shapes[:, 1]
    return torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])


# The last (spatial_shapes, S) pair found consistent. A transformer passes one spatial_shapes
# tensor to every layer of a forward pass: checking it once avoids a host sync per layer on
# CUDA (reading the sum back to Python waits for the device).
_last_checked: tuple[Tensor, int] | None = None


def check_value_positions(spatial_shapes: Tensor, num_value: int) -> None:
    """Raise unless ``sum(h_l * w_l) == num_value``; each shapes tensor is read once."""
    global _last_checked
    if (_last_checked is not None and _last_checked[0] is spatial_shapes
            and _last_checked[1] == num_value):
        return
    expected = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    if expected != num_value:
        raise ValueError(f'value has {num_value} positions but spatial_shapes '
                         f'{spatial_shapes.tolist()} cover {expected}.')
    _last_checked = (spatial_shapes, num_value)


@MODELS.register_module()
class MultiScaleDeformableAttention(BaseModule):
    """Each query attends to ``num_points`` learned offsets around its reference point on
    each of ``num_levels`` feature maps, per head, with learned weights (Zhu et al. 2021).

    Args:
        embed_dims: C, channels of query and value.
        num_heads: H; ``embed_dims * value_proj_ratio`` must be divisible by it.
        num_levels: L, feature levels sampled.
        num_points: P, sampling points per head and level.
        im2col_step: accepted for config compatibility with MMDetection; unused.
        dropout: dropout on the projected output before the residual sum.
        batch_first: True for (B, Q, C) inputs, False for (Q, B, C).
        value_proj_ratio: value channels = ``embed_dims * value_proj_ratio``.
        backend: ``ms_deform_attn`` backend ('auto', 'pytorch', 'cpp', 'triton', 'mmcv').
        init_cfg: mmengine init config; the default initialisation is always applied.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4,
                 num_points: int = 4, im2col_step: int = 64, dropout: float = 0.1,
                 batch_first: bool = True, value_proj_ratio: float = 1.0,
                 backend: str = 'auto', init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        value_dims = int(embed_dims * value_proj_ratio)
        if value_dims % num_heads != 0:
            raise ValueError(f'embed_dims * value_proj_ratio = {value_dims} must be divisible '
                             f'by num_heads = {num_heads}.')
        if backend not in BACKENDS:
            raise ValueError(f'backend={backend!r} is not one of {BACKENDS}.')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.im2col_step = im2col_step
        self.batch_first = batch_first
        self.backend = backend
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, value_dims)
        self.output_proj = nn.Linear(value_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self._reset_parameters()

    def init_weights(self) -> None:
        """Re-apply the default initialisation, then ``init_cfg`` if one was given.

        A parent's ``init_weights`` calls this after its own ``init_cfg`` (e.g. xavier on
        every Linear) so the offset grid and zero weights survive it.
        """
        self._reset_parameters()
        if self.init_cfg:
            super().init_weights()

    def _reset_parameters(self) -> None:
        """Zero offset/weight layers with a directional offset grid; xavier projections.

        Head h starts looking along angle 2*pi*h/H; the direction is scaled so its larger
        component is 1, and point p (0-based) sits (p + 1) steps along it, in units of the
        level's pixels (Deformable DETR's initialisation).
        """
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi
                                                                       / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)  # [H, 2]
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        steps = torch.arange(1, self.num_points + 1, dtype=torch.float32)
        grid = grid * steps.view(1, 1, -1, 1)  # [H, L, P, 2]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                identity: Tensor | None = None, query_pos: Tensor | None = None,
                key_padding_mask: Tensor | None = None,
                reference_points: Tensor | None = None,
                spatial_shapes: Tensor | None = None,
                level_start_index: Tensor | None = None,
                value_cache: dict | None = None, **kwargs) -> Tensor:
        """Attend from queries to the flattened multi-level ``value``.

        Args:
            query: (B, Q, C) (or (Q, B, C) when not batch_first).
            key: unused; accepted because transformer layers pass it.
            value: (B, S, C) flattened levels; defaults to ``query`` (self-attention).
            identity: residual added to the output; defaults to ``query`` (before query_pos).
            query_pos: (B, Q, C) added to the query that predicts offsets and weights.
            key_padding_mask: (B, S) bool, True where ``value`` is padding (read as zero).
            reference_points: (B, Q, L, 2) normalised xy, offsets are in level pixels; or
                (B, Q, L, 4) normalised cxcywh, offsets are in units of half the box size / P.
            spatial_shapes: (L, 2) long (h_l, w_l).
            level_start_index: (L,) long; computed from ``spatial_shapes`` when None.
            value_cache: a dict shared by several calls over the SAME ``value`` and
                ``key_padding_mask`` (the decoder passes of one training step): this
                module's projected value is computed on the first call, stored under the
                module, and reused by the later ones (same result, one projection instead of
                one per pass, and one saved copy for backward).

        Returns:
            ``identity + dropout(output_proj(attention))``, shaped like ``query``.
        """
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)
        if spatial_shapes is None or reference_points is None:
            raise ValueError('MultiScaleDeformableAttention needs spatial_shapes (L, 2) and '
                             'reference_points (B, Q, L, 2 or 4).')
        if level_start_index is None:
            level_start_index = level_start_index_from_shapes(spatial_shapes)
        projected = value_cache.get(self) if value_cache is not None else None
        if projected is None:
            projected = as_sampled(self._project_value(value, spatial_shapes, key_padding_mask),
                                   self.backend)
            if value_cache is not None:
                value_cache[self] = projected
        value = projected
        locations, weights = self._sampling(query, reference_points, spatial_shapes)
        out = ms_deform_attn(value, spatial_shapes, level_start_index, locations,
                             weights.to(value.dtype), backend=self.backend)  # [B, Q, C_v]
        out = self.output_proj(out)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.dropout(out) + identity

    def _project_value(self, value: Tensor, spatial_shapes: Tensor,
                       key_padding_mask: Tensor | None) -> Tensor:
        """(B, S, C) -> (B, S, H, C_v / H) with padded positions zeroed."""
        batch, num_value, _ = value.shape
        check_value_positions(spatial_shapes, num_value)
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        return value.view(batch, num_value, self.num_heads, -1)

    def _sampling(self, query: Tensor, reference_points: Tensor,
                  spatial_shapes: Tensor) -> tuple[Tensor, Tensor]:
        """Sampling locations (B, Q, H, L, P, 2) fp32 and softmaxed weights (B, Q, H, L, P).

        Locations are kept in fp32 so low-precision activations do not round them to a
        coarse grid (bf16 has 8 mantissa bits: about 1 px on a 256-px map).
        """
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).float().view(
            batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).float().view(
            batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        ref = reference_points.float()[:, :, None, :, None, :]  # [B, Q, 1, L, 1, 2 or 4]
        if reference_points.shape[-1] == 2:
            # Offsets are in pixels of each level: divide by (w_l, h_l).
            normalizer = spatial_shapes.flip(-1).to(offsets)  # [L, 2] as (w, h)
            locations = ref + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = ref[..., :2] + offsets / points * ref[..., 2:] * 0.5
        else:
            raise ValueError(f'reference_points must end in 2 (xy) or 4 (cxcywh); got '
                             f'{tuple(reference_points.shape)}.')
        return locations, weights
