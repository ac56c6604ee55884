"""SingleScaleAdapter: one encoder map (C5, stride 32) as the feature pyramid of the aux heads.

Single-scale DETRs (Conditional-DETR-C5, DAB-DETR-C5) encode one map. Co-DETR (paper section
3.2) builds the aux heads' pyramid ``{F_1, ..., F_J}``, ``F_j`` at stride ``2^(2+j)``, from it
as ViTDet does, by successive steps: each coarser level is a 3x3 stride-2 convolution of the
level before it, each finer level a bilinear x2 upsampling followed by a 3x3 convolution of the
level after it. The encoder map itself is one of the levels, unchanged. By default the pyramid
spans strides 8..128 (J = 5), the strides the Co-Deformable-DETR aux heads see, so the same aux
head configs fit both. ``upsample='deconv'`` uses a 2x2 stride-2 transposed convolution per
finer step instead (ViTDet's choice).

Every step ends in GroupNorm, as the multi-scale adapter's extra level.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from .adapter import adapter_norm

UPSAMPLE_MODES = ('bilinear', 'deconv')


def _check_strides(strides: Sequence[int], in_stride: int) -> tuple[int, ...]:
    """The pyramid strides, validated: ascending, each twice the last, ``in_stride`` among them."""
    strides = tuple(int(s) for s in strides)
    if in_stride not in strides:
        raise ValueError(f'SingleScaleAdapter strides={strides} must contain in_stride='
                         f'{in_stride}, the stride of the encoder map')
    if any(b != 2 * a for a, b in zip(strides, strides[1:])):
        raise ValueError(f'SingleScaleAdapter strides={strides} must double from level to level '
                         '(e.g. (8, 16, 32, 64, 128)): each level is one x2 step from the next')
    return strides


@MODELS.register_module()
class SingleScaleAdapter(BaseModule):
    """One encoder map at ``in_stride`` -> one map per stride of ``strides`` (finest first).

    Parameter names: ``upsample.{i}.0`` (conv or transposed conv) and ``upsample.{i}.1``
    (GroupNorm) make the level ``i + 1`` steps finer than the encoder map; ``downsample.{i}.0``
    / ``.1`` the level ``i + 1`` steps coarser (the multi-scale adapter's names).

    Args:
        in_channels: channel count C of the encoder map (the transformer width).
        in_stride: stride of the encoder map in input pixels (32 for C5).
        strides: strides of the output levels, ascending, each twice the one before.
        upsample: ``'bilinear'`` (bilinear x2, then 3x3 conv: the paper) or ``'deconv'``
            (2x2 stride-2 transposed conv).
        norm_cfg: ``dict(type='GN', num_groups=...)``.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, in_channels: int = 256, in_stride: int = 32,
                 strides: Sequence[int] = (8, 16, 32, 64, 128), upsample: str = 'bilinear',
                 norm_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f'SingleScaleAdapter upsample={upsample!r} must be one of '
                             f'{UPSAMPLE_MODES}')
        norm_cfg = norm_cfg or dict(type='GN', num_groups=32)
        self.in_channels = in_channels
        self.in_stride = in_stride
        self.strides = _check_strides(strides, in_stride)
        self.upsample_mode = upsample
        index = self.strides.index(in_stride)
        num_up, num_down = index, len(self.strides) - 1 - index
        c = in_channels

        def up_conv() -> nn.Module:
            if upsample == 'deconv':
                return nn.ConvTranspose2d(c, c, 2, stride=2)
            return nn.Conv2d(c, c, 3, padding=1)

        self.upsample = nn.ModuleList(
            nn.Sequential(up_conv(), adapter_norm(norm_cfg, c, 'SingleScaleAdapter'))
            for _ in range(num_up))
        self.downsample = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, stride=2, padding=1),
                          adapter_norm(norm_cfg, c, 'SingleScaleAdapter'))
            for _ in range(num_down))

    def forward(self, memory: list[Tensor]) -> list[Tensor]:
        """Build the pyramid.

        Args:
            memory: one map (B, C, h, w), the encoder output at ``in_stride``.

        Returns:
            ``len(strides)`` maps, finest first: level ``k`` steps finer is (B, C, 2^k h, 2^k w),
            level ``k`` steps coarser (B, C, h_k, w_k) with ``h_k = ceil(h_{k-1} / 2)``; the
            encoder map is returned itself (same tensor).
        """
        if len(memory) != 1:
            raise ValueError(f'SingleScaleAdapter takes the one encoder map of a single-scale '
                             f'DETR, got {len(memory)} levels; use MultiScaleAdapter for '
                             'multi-scale encoders')
        level = memory[0]
        if level.size(1) != self.in_channels:
            raise ValueError(f'memory has {level.size(1)} channels but the adapter was built '
                             f'with in_channels={self.in_channels}; set '
                             'model.adapter.in_channels to the transformer width')
        finer, x = [], level
        for block in self.upsample:
            if self.upsample_mode == 'bilinear':
                x = F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=False)
            x = block(x)
            finer.append(x)
        coarser, x = [], level
        for block in self.downsample:
            x = block(x)
            coarser.append(x)
        return [*finer[::-1], level, *coarser]
