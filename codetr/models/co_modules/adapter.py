"""MultiScaleAdapter: the encoder memory as the feature pyramid of the auxiliary heads.

Co-DETR's aux heads (ATSS, Faster R-CNN, ...) see the encoder output, split back into its L
levels, plus coarser levels made by a 3x3 stride-2 convolution and GroupNorm on the coarsest
one (paper section 3.2, "multi-scale adapter"). Officially one extra level: strides 4..128 for
5-scale Co-DINO, 8..128 for Co-Deformable-DETR (4 encoder levels + 1).
"""
from __future__ import annotations

from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS


def adapter_norm(norm_cfg: dict, channels: int, owner: str = 'MultiScaleAdapter') -> nn.Module:
    """An adapter's normalisation layer; only GroupNorm is what the official adapter uses."""
    cfg = dict(norm_cfg)
    kind = cfg.pop('type')
    if kind != 'GN':
        raise ValueError(f"{owner} norm_cfg.type={kind!r} is not supported; use "
                         "dict(type='GN', num_groups=32) as the official adapter")
    num_groups = cfg.pop('num_groups')
    if channels % num_groups:
        raise ValueError(f'in_channels={channels} is not divisible by norm_cfg.num_groups='
                         f'{num_groups}; choose a divisor of the channel count')
    return nn.GroupNorm(num_groups, channels, **cfg)


@MODELS.register_module()
class MultiScaleAdapter(BaseModule):
    """L encoder levels -> L + ``num_extra`` pyramid levels.

    Parameter names: ``downsample.{i}.0`` (conv) and ``downsample.{i}.1`` (norm) for extra level
    ``i``; the official / MMDetection-port checkpoints hold one extra level as
    ``query_head.downsample.0`` / ``.1``, which a converter maps to ``adapter.downsample.0.*``.
    The layers keep PyTorch's default initialisation, as the official ``downsample`` does.

    Args:
        in_channels: channel count C of every memory level (the transformer width).
        num_extra: number of extra levels, each one stride-2 step coarser than the last.
        norm_cfg: ``dict(type='GN', num_groups=...)``.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self, in_channels: int = 256, num_extra: int = 1,
                 norm_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_extra < 0:
            raise ValueError(f'num_extra={num_extra} must be >= 0')
        norm_cfg = norm_cfg or dict(type='GN', num_groups=32)  # official GroupNorm(32, 256)
        self.in_channels = in_channels
        self.num_extra = num_extra
        self.downsample = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1),
                          adapter_norm(norm_cfg, in_channels))
            for _ in range(num_extra))

    def forward(self, memory: list[Tensor]) -> list[Tensor]:
        """Append the extra levels.

        Args:
            memory: L maps (B, C, h_l, w_l), finest first.

        Returns:
            L + num_extra maps; extra level ``i`` is (B, C, ceil(h / 2), ceil(w / 2)) of the
            level before it. The first L are ``memory`` itself (same tensors).
        """
        if not memory:
            raise ValueError('MultiScaleAdapter needs at least one memory level')
        if memory[-1].size(1) != self.in_channels:
            raise ValueError(f'memory has {memory[-1].size(1)} channels but the adapter was '
                             f'built with in_channels={self.in_channels}; set '
                             'model.adapter.in_channels to the transformer width')
        pyramid = list(memory)
        for block in self.downsample:
            pyramid.append(block(pyramid[-1]))
        return pyramid
