"""Multi-scale deformable attention in plain torch ops: any device, fp64 / fp32 / bf16 / fp16.

:func:`ms_deform_attn_pytorch` is a ``torch.autograd.Function`` with a hand-written backward:

- forward, fp32 / fp64: one weighted gather of value rows (``embedding_bag``; bilinear
  corner weights computed once per point for all channels); bf16 / fp16: one
  ``grid_sample`` per level summed in place into an fp32 accumulator;
- it saves only its inputs (value, sampling locations, attention weights) and backward
  recomputes each level's samples with ``grid_sample``, one level at a time, so training
  holds one level's ``(B*H, D, P, Q)`` samples instead of every level's, and pushes
  ``grad_out x weights`` through ``aten.grid_sampler_2d_backward`` (36 ms per encoder
  level vs 64 ms for ``torch.autograd.grad`` through a local ``grid_sample`` graph, which
  re-runs the forward too: equal when the samples are needed for the weights' gradient,
  faster when they are not);
- sums over points and channels are in-place multiply-adds into buffers reused by every
  level. On a CPU every fresh tensor above a few MB is page-faulted in from the OS (glibc
  serves it with ``mmap``): a ``(samples * w).sum(P)`` temporary cost ~12x the in-place
  loop over the P points (26 ms vs 2 ms at the encoder's 8 x 32 x 4 x 8,525 samples);
- it creates no autograd node per point or per level (the previous autograd formulation
  made ~740 slice-gradient nodes per backward, each zero-filling its whole source).

:func:`ms_deform_attn_pytorch_autograd` (that previous formulation, differentiated by
autograd) and :func:`ms_deform_attn_pytorch_stacked` (all levels stacked) are kept as
references for tests and ``benchmarks/ms_deform_attn.py``.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

# grid_sampler_2d's integer codes: bilinear interpolation, zeros padding.
_BILINEAR, _ZEROS = 0, 0
# align_corners=False: pixel x = loc * w - 0.5, i.e. (0, 0) is the map's top-left corner.
_ALIGN_CORNERS = False
# Corner entries per gather chunk: 4M keeps its rows + weights near 32 MB (int32 + fp32).
_GATHER_CHUNK = 4 * 2**20
# Devices where embedding_bag with per_sample_weights is known to work.
_GATHER_DEVICES = ('cpu', 'cuda')

Shapes = Sequence[Sequence[int]]


def _as_lists(spatial_shapes: Tensor | Shapes, level_start_index: Tensor | Sequence[int]
              ) -> tuple[list[tuple[int, int]], list[int]]:
    """Python ints for the per-level loop (``.tolist()`` syncs once on CUDA; lists are free)."""
    if isinstance(spatial_shapes, Tensor):
        spatial_shapes = spatial_shapes.tolist()
    if isinstance(level_start_index, Tensor):
        level_start_index = level_start_index.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes], [int(s) for s in level_start_index]


def _layouts(value: Tensor, sampling_locations: Tensor, attention_weights: Tensor
             ) -> tuple[Tensor, Tensor, Tensor]:
    """Per-head layouts that make each level a view: value (B, H, D, S), grids (B, H, L, P,
    Q, 2) in [-1, 1] and weights (B, H, L, P, Q), all in ``value.dtype``.

    Points go before queries so that each point's samples are a contiguous (D, Q) slab.
    """
    value_t = value.permute(0, 2, 3, 1).contiguous()
    grids = (2 * sampling_locations.to(value.dtype) - 1).permute(0, 2, 3, 4, 1, 5).contiguous()
    weights = attention_weights.to(value.dtype).permute(0, 2, 3, 4, 1).contiguous()
    return value_t, grids, weights


def _level_value(value_t: Tensor, start: int, height: int, width: int) -> Tensor:
    """(B*H, D, h, w) view of one level of the (B, H, D, S) values."""
    batch, heads, dims, _ = value_t.shape
    return value_t[..., start:start + height * width].reshape(batch * heads, dims, height,
                                                              width)


def _forward(value: Tensor, shapes: list[tuple[int, int]], starts: list[int],
             sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """The attention output (B, Q, H*D) in ``value.dtype``, summed in >= fp32.

    fp32 / fp64 values on CPU / CUDA take the gather path (``embedding_bag``); bf16 / fp16
    (whose sum must be fp32) and other devices take the per-level ``grid_sample`` path.
    """
    if value.dtype in (torch.float32, torch.float64) and value.device.type in _GATHER_DEVICES:
        return _forward_gather(value, shapes, starts, sampling_locations, attention_weights)
    return _forward_grid_sample(value, shapes, starts, sampling_locations, attention_weights)


def _forward_grid_sample(value: Tensor, shapes: list[tuple[int, int]], starts: list[int],
                         sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Per level: grid_sample into a reused buffer, then in-place sums over the points."""
    batch, _, heads, dims = value.shape
    _, queries, _, _, points, _ = sampling_locations.shape
    value_t, grids, weights = _layouts(value, sampling_locations, attention_weights)
    acc_dtype = torch.promote_types(value.dtype, torch.float32)
    output = value.new_zeros(batch * heads, dims, queries, dtype=acc_dtype)
    samples = value.new_empty(batch * heads, dims, points, queries)  # reused by every level
    for level, (height, width) in enumerate(shapes):
        grid_l = grids[:, :, level].reshape(batch * heads, points, queries, 2)
        torch.ops.aten.grid_sampler_2d.out(_level_value(value_t, starts[level], height, width),
                                           grid_l, _BILINEAR, _ZEROS, _ALIGN_CORNERS,
                                           out=samples)  # [B*H, D, P, Q]
        weight_l = weights[:, :, level].reshape(batch * heads, 1, points, queries)
        for point in range(points):  # in place: no (B*H, D, P, Q) product temporary
            output.addcmul_(samples[:, :, point], weight_l[:, :, point])
    output = output.view(batch, heads * dims, queries).transpose(1, 2)
    return output.to(value.dtype).contiguous()


def _forward_gather(value: Tensor, shapes: list[tuple[int, int]], starts: list[int],
                    sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """The bilinear sum as a weighted gather of D-vectors: ``embedding_bag`` over value rows.

    Each (b, q, h) output is a bag of L * P * 4 corner rows of ``value`` viewed as
    (B * S * H, D), weighted by attention * bilinear weight (0 for corners off the map).
    The corner weights are computed once per point for all D channels, and value needs no
    per-level copy, which makes this ~1.6x faster than grid_sample on a CPU. Queries go in
    chunks so the corner rows and weights stay under ~``_GATHER_CHUNK`` entries each.
    """
    batch, queries, heads, levels, points, _ = sampling_locations.shape
    chunk = max(1, _GATHER_CHUNK // (batch * heads * levels * points * 4))
    if chunk >= queries:
        return _gather_chunk(value, shapes, starts, sampling_locations, attention_weights)
    return torch.cat([
        _gather_chunk(value, shapes, starts, sampling_locations[:, first:first + chunk],
                      attention_weights[:, first:first + chunk])
        for first in range(0, queries, chunk)], dim=1)


def _gather_chunk(value: Tensor, shapes: list[tuple[int, int]], starts: list[int],
                  sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """:func:`_forward_gather` on one chunk of queries: (B, Q_chunk, H * D)."""
    batch, num_value, heads, dims = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    sizes = torch.tensor(shapes, device=value.device, dtype=torch.int32)  # [L, 2] (h, w)
    width, height = sizes[:, 1:], sizes[:, :1]  # [L, 1]: broadcast over P
    # Pixel coordinates as grid_sample(align_corners=False) reads them: x = loc * w - 0.5.
    pix = sampling_locations.to(value.dtype) * sizes.flip(-1)[:, None, :] - 0.5
    corner = pix.floor()
    frac = pix - corner  # [B, Q, H, L, P, 2]
    # int32 rows when they fit: half the memory traffic of int64.
    index_dtype = torch.int32 if batch * num_value * heads < 2**31 else torch.int64
    corner = corner.to(index_dtype)
    x0, y0 = corner[..., 0], corner[..., 1]  # [B, Q, H, L, P]
    weights = attention_weights.to(value.dtype)
    wx0 = (1 - frac[..., 0]) * ((x0 >= 0) & (x0 < width)) * weights
    wx1 = frac[..., 0] * ((x0 >= -1) & (x0 < width - 1)) * weights
    wy0 = (1 - frac[..., 1]) * ((y0 >= 0) & (y0 < height))
    wy1 = frac[..., 1] * ((y0 >= -1) & (y0 < height - 1))
    coef = torch.stack([wx0 * wy0, wx1 * wy0, wx0 * wy1, wx1 * wy1], -1)  # [B, Q, H, L, P, 4]
    # Row of value (B * S * H, D) for corner (x0, y0): (b * S + start_l + y0 * w + x0) * H + h.
    level_start = torch.tensor(starts, device=value.device, dtype=index_dtype)[:, None]
    batch_start = torch.arange(batch, device=value.device, dtype=index_dtype).view(
        batch, 1, 1, 1, 1) * num_value
    head = torch.arange(heads, device=value.device, dtype=index_dtype).view(heads, 1, 1)
    row = (batch_start + level_start + y0 * width + x0) * heads + head
    step_y = width * heads
    rows = torch.stack([row, row + heads, row + step_y, row + step_y + heads], -1)
    # Off-map corners (weight 0) may point outside value: any valid row will do.
    rows = rows.clamp_(0, batch * num_value * heads - 1).view(-1, levels * points * 4)
    output = F.embedding_bag(rows, value.reshape(-1, dims), mode='sum',
                             per_sample_weights=coef.view(-1, levels * points * 4))
    return output.view(batch, queries, heads * dims)  # bags are (b, q, h) in order


class _MSDeformAttnFunction(torch.autograd.Function):
    """Forward saves only its inputs; backward recomputes each level's samples.

    Double backward is not supported (``once_differentiable``): differentiating the
    gradients raises "trying to differentiate twice a function ... once_differentiable".
    """

    @staticmethod
    def forward(ctx: FunctionCtx, value: Tensor, sampling_locations: Tensor,
                attention_weights: Tensor, shapes: list[tuple[int, int]],
                starts: list[int]) -> Tensor:
        ctx.save_for_backward(value, sampling_locations, attention_weights)
        ctx.shapes, ctx.starts = shapes, starts
        return _forward(value, shapes, starts, sampling_locations, attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        value, sampling_locations, attention_weights = ctx.saved_tensors
        grads = _backward(grad_output, value, ctx.shapes, ctx.starts, sampling_locations,
                          attention_weights, tuple(ctx.needs_input_grad[:3]))
        return (*grads, None, None)


def _backward(grad_output: Tensor, value: Tensor, shapes: list[tuple[int, int]],
              starts: list[int], sampling_locations: Tensor, attention_weights: Tensor,
              needs: tuple[bool, bool, bool]) -> tuple[Tensor | None, Tensor | None,
                                                       Tensor | None]:
    """Gradients of value (B, S, H, D), sampling_locations and attention_weights.

    Per level, with samples s[n, d, p, q] recomputed and g[n, d, q] the output gradient:
    dL/dw[n, p, q] = sum_d s * g; dL/ds = g * w, pushed through grid_sample's backward to
    value and grid; grid = 2 * loc - 1, so dL/dloc = 2 * dL/dgrid.
    """
    need_value, need_locs, need_weights = needs
    batch, _, heads, dims = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    heads_n = batch * heads
    value_t, grids, weights = _layouts(value, sampling_locations, attention_weights)
    grad = grad_output.reshape(batch, queries, heads, dims).permute(0, 2, 3, 1)
    grad = grad.to(value.dtype).reshape(heads_n, dims, queries)  # [B*H, D, Q]
    acc_dtype = torch.promote_types(value.dtype, torch.float32)
    grad_value_t = torch.zeros_like(value_t) if need_value else None  # [B, H, D, S]
    grad_grids = grids.new_zeros(grids.shape) if need_locs else None  # [B, H, L, P, Q, 2]
    grad_weights = (weights.new_zeros(weights.shape, dtype=acc_dtype) if need_weights
                    else None)  # [B, H, L, P, Q]
    samples = value.new_empty(heads_n, dims, points, queries)  # both reused by every level
    grad_samples = value.new_empty(heads_n, dims, points, queries)
    for level, (height, width) in enumerate(shapes):
        value_l = _level_value(value_t, starts[level], height, width)
        grid_l = grids[:, :, level].reshape(heads_n, points, queries, 2)
        if need_weights:
            torch.ops.aten.grid_sampler_2d.out(value_l, grid_l, _BILINEAR, _ZEROS,
                                               _ALIGN_CORNERS, out=samples)
            grad_w = grad_weights[:, :, level].view(heads_n, points, queries)
            for dim in range(dims):  # in place: no (B*H, D, P, Q) product temporary
                grad_w.addcmul_(samples[:, dim], grad[:, dim, None])
        if not (need_value or need_locs):
            continue
        weight_l = weights[:, :, level].reshape(heads_n, 1, points, queries)
        torch.mul(grad[:, :, None], weight_l, out=grad_samples)
        grad_value_l, grad_grid_l = torch.ops.aten.grid_sampler_2d_backward(
            grad_samples, value_l, grid_l, _BILINEAR, _ZEROS, _ALIGN_CORNERS,
            [need_value, need_locs])
        if need_value:
            start = starts[level]
            grad_value_t[..., start:start + height * width] = grad_value_l.view(
                batch, heads, dims, height * width)
        if need_locs:
            grad_grids[:, :, level] = grad_grid_l.view(batch, heads, points, queries, 2)
    return (grad_value_t.permute(0, 3, 1, 2) if need_value else None,
            (2 * grad_grids.permute(0, 4, 1, 2, 3, 5)).to(sampling_locations.dtype)
            if need_locs else None,
            grad_weights.permute(0, 4, 1, 2, 3).to(attention_weights.dtype)
            if need_weights else None)


def ms_deform_attn_pytorch(value: Tensor, spatial_shapes: Tensor | Shapes,
                           level_start_index: Tensor | Sequence[int], sampling_locations: Tensor,
                           attention_weights: Tensor) -> Tensor:
    """Bilinearly sample every level at its points and sum them weighted by attention.

    Args:
        value: (B, S, H, D) per-head values, S = sum_l h_l * w_l, levels flattened row-major.
        spatial_shapes: (L, 2) long (h_l, w_l) of each level, or the same as Python ints
            (no device sync on CUDA).
        level_start_index: (L,) long offset of each level in S, or a list of ints.
        sampling_locations: (B, Q, H, L, P, 2) normalised xy in [0, 1] (outside reads zero).
        attention_weights: (B, Q, H, L, P), already normalised over L * P.

    Returns:
        (B, Q, H * D) in ``value.dtype``; the sum over points is accumulated in at least fp32.
        Differentiable once in value, sampling_locations and attention_weights (no double
        backward). Under ``no_grad`` / ``inference_mode`` nothing is saved.
    """
    shapes, starts = _as_lists(spatial_shapes, level_start_index)
    tensors = (value, sampling_locations, attention_weights)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _MSDeformAttnFunction.apply(*tensors, shapes, starts)
    return _forward(value, shapes, starts, sampling_locations, attention_weights)


def ms_deform_attn_pytorch_autograd(value: Tensor, spatial_shapes: Tensor,
                                    level_start_index: Tensor, sampling_locations: Tensor,
                                    attention_weights: Tensor) -> Tensor:
    """The previous formulation, differentiated by autograd: the reference of the tests.

    Same result as :func:`ms_deform_attn_pytorch`; autograd keeps every level's samples and
    makes a slice-gradient node per point and level (slow backward, see the module note).

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
