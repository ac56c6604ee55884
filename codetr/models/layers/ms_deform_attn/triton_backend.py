"""Autograd wrapper around the fused Triton kernels (forward and backward).

Importing this file imports triton; it raises ImportError where triton is absent, which
the dispatcher in ``op.py`` treats as "backend unavailable".
"""
from __future__ import annotations

import torch
import triton
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .triton_kernels import msda_backward_kernel, msda_forward_kernel


def _launch_sizes(value: Tensor, sampling_locations: Tensor) -> dict:
    """Problem sizes and tile widths shared by both kernels."""
    _, num_value, num_heads, head_dims = value.shape
    batch, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    num_lp = num_levels * num_points
    return dict(grid=(batch * num_queries * num_heads,),
                args=(num_queries, num_heads, num_value, head_dims, num_lp, num_points),
                BLOCK_LP=triton.next_power_of_2(num_lp),
                BLOCK_D=triton.next_power_of_2(head_dims))


class MSDeformAttnTritonFunction(torch.autograd.Function):
    """``ms_deform_attn`` as one fused kernel each way; fp32 / bf16 / fp16 storage."""

    @staticmethod
    def forward(ctx: FunctionCtx, value: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, sampling_locations: Tensor,
                attention_weights: Tensor) -> Tensor:
        """Shapes as in :func:`codetr.models.layers.ms_deform_attn.ms_deform_attn`."""
        value = value.contiguous()
        spatial_shapes = spatial_shapes.to(device=value.device, dtype=torch.int64).contiguous()
        level_start_index = level_start_index.to(device=value.device,
                                                 dtype=torch.int64).contiguous()
        sampling_locations = sampling_locations.contiguous()
        attention_weights = attention_weights.contiguous()
        batch, num_queries, num_heads = sampling_locations.shape[:3]
        output = value.new_empty(batch, num_queries, num_heads * value.shape[-1])
        sizes = _launch_sizes(value, sampling_locations)
        msda_forward_kernel[sizes['grid']](
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            output, *sizes['args'], BLOCK_LP=sizes['BLOCK_LP'], BLOCK_D=sizes['BLOCK_D'])
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor) -> tuple:
        """Gradients for value, sampling_locations and attention_weights (None for ints)."""
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights = (
            ctx.saved_tensors)
        grad_output = grad_output.contiguous()
        # Atomic adds in bf16/fp16 are not portable and lose precision: accumulate in fp32.
        grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
        grad_loc = torch.empty_like(sampling_locations)
        grad_attn = torch.empty_like(attention_weights)
        sizes = _launch_sizes(value, sampling_locations)
        msda_backward_kernel[sizes['grid']](
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
            grad_output, grad_value, grad_loc, grad_attn, *sizes['args'],
            BLOCK_LP=sizes['BLOCK_LP'], BLOCK_D=sizes['BLOCK_D'])
        return grad_value.to(value.dtype), None, None, grad_loc, grad_attn


def ms_deform_attn_triton(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                          sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Fused multi-scale deformable attention; (B, Q, H*D) in ``value.dtype``."""
    return MSDeformAttnTritonFunction.apply(value, spatial_shapes, level_start_index,
                                            sampling_locations, attention_weights)
