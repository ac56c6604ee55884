"""Square-grid anchors for anchor-based heads (RPN, RetinaNet, ATSS), MMDetection's layout."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from codetr.registry import TASK_UTILS

from .utils import Device, Stride, grid_shifts, to_pairs, valid_grid_flags


@TASK_UTILS.register_module()
class AnchorGenerator:
    """Anchors of every feature level: a few base anchors shifted to every grid location.

    Base anchors of a level are centred at ``centers[i]`` or, by default, at
    ``center_offset * base_size`` (so offset 0 puts the centre on the pixel corner ``(0, 0)``
    of the first location, MMDetection's convention). An anchor of ratio ``r = h / w`` and
    scale ``s`` has ``w = base * s / sqrt(r)`` and ``h = base * s * sqrt(r)``.

    Args:
        strides: per level, ``s`` or ``(s_w, s_h)`` in pixels.
        ratios: height / width ratios of the base anchors, shared by all levels.
        scales: anchor scales relative to the base size; or give ``octave_base_scale`` and
            ``scales_per_octave`` (scales ``octave_base_scale * 2 ** (i / scales_per_octave)``).
        base_sizes: per level base size in pixels; defaults to the smaller stride of the level.
        scale_major: order the base anchors of a location scale-inner (``True``: all scales of
            the first ratio first) or ratio-inner (``False``).
        centers: per level ``(x, y)`` centre of the base anchors, overriding ``center_offset``.
        center_offset: centre of the base anchors as a fraction of the base size, in [0, 1].
    """

    def __init__(self, strides: Sequence[Stride], ratios: Sequence[float],
                 scales: Sequence[float] | None = None,
                 base_sizes: Sequence[int] | None = None, scale_major: bool = True,
                 octave_base_scale: float | None = None, scales_per_octave: int | None = None,
                 centers: Sequence[tuple[float, float]] | None = None,
                 center_offset: float = 0.) -> None:
        self.strides = to_pairs(strides)
        self.base_sizes = ([min(s) for s in self.strides] if base_sizes is None
                           else list(base_sizes))
        if len(self.base_sizes) != len(self.strides):
            raise ValueError(f'base_sizes has {len(self.base_sizes)} entries but strides has '
                             f'{len(self.strides)}; give one base size per level')
        if centers is not None and len(centers) != len(self.strides):
            raise ValueError(f'centers has {len(centers)} entries but strides has '
                             f'{len(self.strides)}; give one (x, y) per level')
        if centers is not None and center_offset != 0:
            raise ValueError('give either centers or center_offset, not both')
        if not 0 <= center_offset <= 1:
            raise ValueError(f'center_offset must lie in [0, 1], got {center_offset}')
        self.scales = self._scales(scales, octave_base_scale, scales_per_octave)
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.ratios = torch.tensor(ratios, dtype=torch.float32)
        self.scale_major = scale_major
        self.centers = centers
        self.center_offset = center_offset
        self.base_anchors = [self._base_anchors(i) for i in range(self.num_levels)]

    @staticmethod
    def _scales(scales: Sequence[float] | None, octave_base_scale: float | None,
                scales_per_octave: int | None) -> Tensor:
        octave = octave_base_scale is not None or scales_per_octave is not None
        if (scales is None) == (not octave):
            raise ValueError('give either scales, or octave_base_scale with scales_per_octave')
        if scales is not None:
            return torch.tensor(scales, dtype=torch.float32)
        if octave_base_scale is None or scales_per_octave is None:
            raise ValueError('octave_base_scale and scales_per_octave must be given together')
        octave_scales = [2 ** (i / scales_per_octave) for i in range(scales_per_octave)]
        return torch.tensor(octave_scales, dtype=torch.float32) * octave_base_scale

    @property
    def num_levels(self) -> int:
        """Number of feature levels."""
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """Anchors per location, per level."""
        return [len(a) for a in self.base_anchors]

    @property
    def num_base_anchors(self) -> list[int]:
        """Alias of :attr:`num_base_priors` (the older MMDetection name)."""
        return self.num_base_priors

    def _base_anchors(self, level: int) -> Tensor:
        """``(A, 4)`` xyxy anchors of location ``(0, 0)`` of ``level``, ``A = ratios x scales``."""
        base = self.base_sizes[level]
        if self.centers is None:
            cx = cy = self.center_offset * base
        else:
            cx, cy = self.centers[level]
        h_ratios = torch.sqrt(self.ratios)
        w_ratios = 1 / h_ratios
        if self.scale_major:
            ws = (base * w_ratios[:, None] * self.scales[None, :]).reshape(-1)
            hs = (base * h_ratios[:, None] * self.scales[None, :]).reshape(-1)
        else:
            ws = (base * self.scales[:, None] * w_ratios[None, :]).reshape(-1)
            hs = (base * self.scales[:, None] * h_ratios[None, :]).reshape(-1)
        return torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]],
                    dtype: torch.dtype = torch.float32,
                    device: Device = None) -> list[Tensor]:
        """Anchors of every level.

        Args:
            featmap_sizes: per level ``(H, W)``.

        Returns:
            Per level ``(H * W * A, 4)`` xyxy pixels, location-major (row by row, the ``A``
            anchors of a location contiguous).
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(f'got {len(featmap_sizes)} feature map sizes for an anchor '
                             f'generator of {self.num_levels} levels')
        return [self.single_level_grid_priors(size, i, dtype, device)
                for i, size in enumerate(featmap_sizes)]

    def single_level_grid_priors(self, featmap_size: tuple[int, int], level_idx: int,
                                 dtype: torch.dtype = torch.float32,
                                 device: Device = None) -> Tensor:
        """``(H * W * A, 4)`` anchors of one level; see :meth:`grid_priors`."""
        base = self.base_anchors[level_idx].to(device=device, dtype=dtype)
        shifts = grid_shifts(featmap_size, self.strides[level_idx], 0., dtype, device)
        shifts = torch.cat([shifts, shifts], dim=-1)  # (H*W, 4): x, y, x, y
        return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)

    def sparse_priors(self, prior_idxs: Tensor, featmap_size: tuple[int, int], level_idx: int,
                      dtype: torch.dtype = torch.float32,
                      device: Device = None) -> Tensor:
        """``(N, 4)`` anchors at flat indices ``prior_idxs`` of one level's grid priors."""
        _, width = featmap_size
        num_base = self.num_base_priors[level_idx]
        base_idx = prior_idxs % num_base
        x = (prior_idxs // num_base) % width * self.strides[level_idx][0]
        y = (prior_idxs // width) // num_base % featmap_size[0] * self.strides[level_idx][1]
        shifts = torch.stack([x, y, x, y], dim=1).to(device=device, dtype=dtype)
        return shifts + self.base_anchors[level_idx].to(device=device, dtype=dtype)[base_idx]

    def valid_flags(self, featmap_sizes: Sequence[tuple[int, int]],
                    pad_shape: tuple[int, int], device: Device = None
                    ) -> list[Tensor]:
        """Per level ``(H * W * A,)`` bool: the anchor's location lies inside ``pad_shape``.

        A location is valid when its grid cell starts inside the padded image ``(h, w)``:
        the first ``ceil(h / stride)`` rows and ``ceil(w / stride)`` columns.
        """
        flags = []
        for i, (feat_h, feat_w) in enumerate(featmap_sizes):
            stride_w, stride_h = self.strides[i]
            valid_h = min(math.ceil(pad_shape[0] / stride_h), feat_h)
            valid_w = min(math.ceil(pad_shape[1] / stride_w), feat_w)
            valid = valid_grid_flags((feat_h, feat_w), (valid_h, valid_w), device)
            flags.append(valid[:, None].expand(-1, self.num_base_priors[i]).reshape(-1))
        return flags

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(strides={self.strides}, ratios={self.ratios.tolist()}, '
                f'scales={self.scales.tolist()}, base_sizes={self.base_sizes})')
