"""Grid points for anchor-free heads (FCOS): one prior per feature location."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from codetr.registry import TASK_UTILS

from .utils import Device, Stride, grid_shifts, to_pairs, valid_grid_flags


@TASK_UTILS.register_module()
class MlvlPointGenerator:
    """Points ``((i + offset) * stride_w, (j + offset) * stride_h)`` of every level.

    Args:
        strides: per level, ``s`` or ``(s_w, s_h)`` in pixels.
        offset: position of the point inside its cell, as a fraction of the stride
            (0.5: the cell centre).
    """

    def __init__(self, strides: Sequence[Stride], offset: float = 0.5) -> None:
        self.strides = to_pairs(strides)
        self.offset = offset

    @property
    def num_levels(self) -> int:
        """Number of feature levels."""
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """Priors per location, per level: always one point."""
        return [1] * self.num_levels

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]],
                    dtype: torch.dtype = torch.float32, device: Device = None,
                    with_stride: bool = False) -> list[Tensor]:
        """Points of every level.

        Args:
            featmap_sizes: per level ``(H, W)``.
            with_stride: append the level's ``(stride_w, stride_h)`` to every point.

        Returns:
            Per level ``(H * W, 2)`` pixel ``(x, y)``, or ``(H * W, 4)``
            ``(x, y, stride_w, stride_h)``, row by row.
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f'got {len(featmap_sizes)} feature map sizes for a point '
                             f'generator of {self.num_levels} levels')
        return [self.single_level_grid_priors(size, i, dtype, device, with_stride)
                for i, size in enumerate(featmap_sizes)]

    def single_level_grid_priors(self, featmap_size: tuple[int, int], level_idx: int,
                                 dtype: torch.dtype = torch.float32, device: Device = None,
                                 with_stride: bool = False) -> Tensor:
        """``(H * W, 2 or 4)`` points of one level; see :meth:`grid_priors`."""
        stride = self.strides[level_idx]
        points = grid_shifts(featmap_size, stride, self.offset, dtype, device)
        if not with_stride:
            return points
        strides = points.new_tensor(stride).expand(len(points), 2)
        return torch.cat([points, strides], dim=-1)

    def sparse_priors(self, prior_idxs: Tensor, featmap_size: tuple[int, int], level_idx: int,
                      dtype: torch.dtype = torch.float32, device: Device = None) -> Tensor:
        """``(N, 2)`` points at flat indices ``prior_idxs`` of one level's grid."""
        height, width = featmap_size
        stride_w, stride_h = self.strides[level_idx]
        x = (prior_idxs % width + self.offset) * stride_w
        y = ((prior_idxs // width) % height + self.offset) * stride_h
        return torch.stack([x, y], dim=1).to(device=device, dtype=dtype)

    def valid_flags(self, featmap_sizes: Sequence[tuple[int, int]],
                    pad_shape: tuple[int, int], device: Device = None) -> list[Tensor]:
        """Per level ``(H * W,)`` bool: the point's cell starts inside ``pad_shape = (h, w)``."""
        flags = []
        for (feat_h, feat_w), (stride_w, stride_h) in zip(featmap_sizes, self.strides):
            valid_h = min(math.ceil(pad_shape[0] / stride_h), feat_h)
            valid_w = min(math.ceil(pad_shape[1] / stride_w), feat_w)
            flags.append(valid_grid_flags((feat_h, feat_w), (valid_h, valid_w), device))
        return flags

    def __repr__(self) -> str:
        return f'{type(self).__name__}(strides={self.strides}, offset={self.offset})'
