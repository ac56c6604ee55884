"""RoIAlign over a feature pyramid: each RoI pooled from its own level, in one call.

Backends:
    ``cpp``          CPU kernels (``csrc/roi_align_cpu.cpp``), compiled on first use: all
                     levels in one call, forward parallel over RoIs, backward parallel over
                     (level, image, channel) planes with no atomics (the same result for any
                     thread count). The bilinear weights factor into a row part and a column
                     part, computed once per RoI instead of once per channel and sample.
    ``torchvision``  ``torchvision.ops.roi_align`` once per level (any device).
    ``auto``         ``cpp`` for float CPU tensors when it builds, else ``torchvision``;
                     ``CODETR_ROI_ALIGN_BACKEND`` replaces ``auto``.

Both compute torchvision's RoIAlign (average of bilinear samples on a regular grid per bin,
``aligned`` half-pixel shift, ``sampling_ratio`` 0 = ``ceil(bin size)`` points per side);
they differ only in summation order.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable
from torchvision.ops import roi_align as tv_roi_align

from ..cpu_extension import load_cpu_extension

BACKENDS = ('auto', 'cpp', 'torchvision')
ENV_VAR = 'CODETR_ROI_ALIGN_BACKEND'
SOURCE = Path(__file__).resolve().parent / 'csrc' / 'roi_align_cpu.cpp'
logger = logging.getLogger(__name__)
_cpp_state: dict[str, bool] = {}  # 'usable' -> whether the kernels built


def _cpp_usable() -> bool:
    if 'usable' not in _cpp_state:
        try:
            load_cpu_extension('codetr_roi_align_cpu', SOURCE)
            _cpp_state['usable'] = True
        except ImportError as err:
            logger.warning('roi_align: CPU kernels unavailable, using torchvision (%s)', err)
            _cpp_state['usable'] = False
    return _cpp_state['usable']


def resolve_backend(feats: Sequence[Tensor], backend: str = 'auto') -> str:
    """The backend that runs ``feats``: 'cpp' or 'torchvision'."""
    if backend not in BACKENDS:
        raise ValueError(f'roi_align backend {backend!r} is not one of {BACKENDS}')
    override = os.environ.get(ENV_VAR, '').strip().lower()
    if override and override != 'auto':
        if override not in BACKENDS:
            raise ValueError(f'{ENV_VAR}={override!r} is not one of {BACKENDS}')
        backend = override
    if backend == 'torchvision':
        return backend
    on_cpu = all(f.device.type == 'cpu' and f.is_floating_point() for f in feats)
    if backend == 'cpp' and not on_cpu:
        raise ValueError('the cpp roi_align backend runs float CPU tensors only')
    if on_cpu and _cpp_usable():
        return 'cpp'
    if backend == 'cpp':
        raise ImportError(f'the cpp roi_align backend could not be built from {SOURCE}')
    return 'torchvision'


class _CppRoIAlign(torch.autograd.Function):
    """All levels in, one (K, C, PH, PW) out; saves only the RoIs and the levels' shapes."""

    @staticmethod
    def forward(ctx: FunctionCtx, rois: Tensor, levels: Tensor, scales: list[float],
                output_size: tuple[int, int], sampling_ratio: int, aligned: bool,
                *feats: Tensor) -> Tensor:
        ctx.save_for_backward(rois, levels)
        ctx.level_shapes = [n for f in feats for n in f.shape]
        ctx.args = (scales, *output_size, sampling_ratio, aligned)
        return torch.ops.codetr_roi_align.forward(list(feats), rois, levels, scales,
                                                  *output_size, sampling_ratio, aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        rois, levels = ctx.saved_tensors
        grads = torch.ops.codetr_roi_align.backward(grad, ctx.level_shapes, rois, levels,
                                                    *ctx.args)
        return (None,) * 6 + tuple(grads)


def multi_level_roi_align(feats: Sequence[Tensor], rois: Tensor, levels: Tensor,
                          output_size: tuple[int, int], spatial_scales: Sequence[float],
                          sampling_ratio: int = 0, aligned: bool = True,
                          backend: str = 'auto') -> Tensor:
    """Pool every RoI from its level.

    Args:
        feats: L levels ``(B, C, H_l, W_l)``.
        rois: ``(K, 5)`` ``[batch_idx, x1, y1, x2, y2]`` in image pixels.
        levels: ``(K,)`` long, the level of each RoI.
        output_size: ``(PH, PW)`` bins.
        spatial_scales: per level, feature pixels per image pixel (``1 / stride``).
        sampling_ratio: sample points per bin side; 0 = ``ceil(bin size)``.
        aligned: shift by -0.5 px so pixel centres sit at half-integers.
        backend: 'auto', 'cpp' or 'torchvision'.

    Returns:
        ``(K, C, PH, PW)`` in the features' dtype. Every level receives a gradient (zero
        where it pooled no RoI), so distributed training finds all of them used.
    """
    if len(spatial_scales) != len(feats):
        raise ValueError(f'{len(feats)} levels but {len(spatial_scales)} spatial scales')
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f'rois must be (K, 5) [batch_idx, x1, y1, x2, y2]; got '
                         f'{tuple(rois.shape)}')
    if resolve_backend(feats, backend) == 'torchvision':
        return _torchvision(feats, rois, levels, output_size, spatial_scales, sampling_ratio,
                            aligned)
    dtype = feats[0].dtype
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast('cpu', enabled=False):
        out = _CppRoIAlign.apply(rois.detach().to(compute), levels.detach().long(),
                                 [float(s) for s in spatial_scales],
                                 tuple(int(s) for s in output_size), int(sampling_ratio),
                                 bool(aligned), *[f.to(compute) for f in feats])
    return out.to(dtype)


def _torchvision(feats: Sequence[Tensor], rois: Tensor, levels: Tensor,
                 output_size: tuple[int, int], spatial_scales: Sequence[float],
                 sampling_ratio: int, aligned: bool) -> Tensor:
    """One torchvision call per level that has RoIs, scattered into the output."""
    out = feats[0].new_zeros(len(rois), feats[0].shape[1], *output_size)
    for i, (level_feats, scale) in enumerate(zip(feats, spatial_scales)):
        inds = torch.nonzero(levels == i).flatten()
        if inds.numel() > 0:
            out[inds] = tv_roi_align(level_feats, rois[inds].to(level_feats.dtype),
                                     output_size, scale, sampling_ratio, aligned).to(out.dtype)
        else:
            # keeps every level in the autograd graph (distributed training)
            out = out + level_feats.sum() * 0.
    return out
