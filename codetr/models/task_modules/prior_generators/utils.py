"""Grid helpers shared by the anchor and point generators."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Stride = int | float | tuple[int, int] | tuple[float, float]
Device = torch.device | str | None  # None: torch's default device


def to_pairs(strides: Sequence[Stride]) -> list[tuple[float, float]]:
    """Per level ``(stride_w, stride_h)`` from ``s`` or ``(s_w, s_h)`` entries."""
    pairs = []
    for s in strides:
        if isinstance(s, (int, float)):
            pairs.append((s, s))
        elif len(s) == 2:
            pairs.append((s[0], s[1]))
        else:
            raise ValueError(f'a stride is a number or a (w, h) pair, got {s!r}')
    return pairs


def grid_shifts(featmap_size: tuple[int, int], stride: tuple[float, float], offset: float,
                dtype: torch.dtype, device: Device) -> Tensor:
    """``(H * W, 2)`` pixel ``(x, y)`` of every location, row by row: ``(i + offset) * stride``."""
    feat_h, feat_w = featmap_size
    xs = (torch.arange(feat_w, device=device, dtype=dtype) + offset) * stride[0]
    ys = (torch.arange(feat_h, device=device, dtype=dtype) + offset) * stride[1]
    yy, xx = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


def valid_grid_flags(featmap_size: tuple[int, int], valid_size: tuple[int, int],
                     device: Device) -> Tensor:
    """``(H * W,)`` bool, row by row: True in the top-left ``valid_size = (h, w)`` block."""
    feat_h, feat_w = featmap_size
    valid_x = torch.arange(feat_w, device=device) < valid_size[1]
    valid_y = torch.arange(feat_h, device=device) < valid_size[0]
    return (valid_y[:, None] & valid_x[None, :]).reshape(-1)
