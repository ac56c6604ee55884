"""Reference multi-scale deformable attention built on ``torch.nn.functional.grid_sample``.

Runs on any device and dtype grid_sample supports (fp64, fp32, bf16, fp16). Levels are
sampled one at a time and each point's weighted samples are added in place into an
(at least) fp32 accumulator, so the largest temporary is one level's samples
``(B*H, D, P, Q)`` rather than all levels' ``(B*H, D, Q, L*P)`` stacked plus its weighted
copy (see ``benchmarks/ms_deform_attn.py`` for the measured gain).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def ms_deform_attn_pytorch(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                           sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Bilinearly sample every level at its points and sum them weighted by attention.

    Args:
        value: (B, S, H, D) per-head values, S = sum_l h_l * w_l, levels flattened row-major.
        spatial_shapes: (L, 2) long, (h_l, w_l) of each level.
        level_start_index: (L,) long, offset of each level in S.
        sampling_locations: (B, Q, H, L, P, 2) normalised xy in [0, 1] (outside reads zero).
        attention_weights: (B, Q, H, L, P), already normalised over L * P.

    Returns:
        (B, Q, H * D) in ``value.dtype``; the sum over points is accumulated in at least fp32.
    """
    batch, _, num_heads, head_dims = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    # grid_sample wants grid in value's dtype and in [-1, 1]: x_pix = loc * w - 0.5 this way.
    # Points go before queries so each point's samples are a contiguous (D, Q) slab.
    grids = (2 * sampling_locations.to(value.dtype) - 1).permute(0, 2, 3, 4, 1, 5)
    weights = attention_weights.to(value.dtype).permute(0, 2, 3, 4, 1)  # [B, H, L, P, Q]
    acc_dtype = torch.promote_types(value.dtype, torch.float32)
    output = value.new_zeros(batch * num_heads, head_dims, num_queries, dtype=acc_dtype)
    starts = level_start_index.tolist()
    for level, (height, width) in enumerate(spatial_shapes.tolist()):
        value_l = value[:, starts[level]:starts[level] + height * width]  # [B, h*w, H, D]
        value_l = value_l.permute(0, 2, 3, 1).reshape(batch * num_heads, head_dims, height, width)
        grid_l = grids[:, :, level].reshape(batch * num_heads, num_points, num_queries, 2)
        samples = F.grid_sample(value_l, grid_l, mode='bilinear', padding_mode='zeros',
                                align_corners=False)  # [B*H, D, P, Q]
        weight_l = weights[:, :, level].reshape(batch * num_heads, 1, num_points, num_queries)
        for point in range(num_points):  # in-place FMA: no (B*H, D, P, Q) product temporary
            output.addcmul_(samples[:, :, point], weight_l[:, :, point])
    output = output.view(batch, num_heads * head_dims, num_queries).transpose(1, 2)
    return output.to(value.dtype).contiguous()  # [B, Q, H*D]


def ms_deform_attn_pytorch_stacked(value: Tensor, spatial_shapes: Tensor,
                                   level_start_index: Tensor, sampling_locations: Tensor,
                                   attention_weights: Tensor) -> Tensor:
    """The naive formulation: stack all levels' samples, then multiply and sum once.

    Same arguments and result as :func:`ms_deform_attn_pytorch`; kept only so that the
    benchmark can show what the per-level accumulation saves. Holds a
    ``(B*H, D, Q, L*P)`` tensor plus its weighted copy.
    """
    batch, _, num_heads, head_dims = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    grids = 2 * sampling_locations.to(value.dtype) - 1
    samples = []
    for level, (height, width) in enumerate(spatial_shapes.tolist()):
        start = int(level_start_index[level])
        value_l = value[:, start:start + height * width].permute(0, 2, 3, 1)
        value_l = value_l.reshape(batch * num_heads, head_dims, height, width)
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # [B*H, Q, P, 2]
        samples.append(F.grid_sample(value_l, grid_l, mode='bilinear', padding_mode='zeros',
                                     align_corners=False))
    stacked = torch.stack(samples, dim=-2).flatten(-2)  # [B*H, D, Q, L*P]
    weights = attention_weights.to(value.dtype).transpose(1, 2)
    weights = weights.reshape(batch * num_heads, 1, num_queries, num_levels * num_points)
    output = (stacked * weights).sum(-1).view(batch, num_heads * head_dims, num_queries)
    return output.transpose(1, 2).contiguous()
