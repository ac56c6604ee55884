"""Simple feature pyramid (ViTDet, Li et al. 2022) as Co-DETR's ViT-L uses it.

One stride-16 map of a plain ViT becomes the levels a DETR encoder wants, without any
top-down or lateral path: each level is its own small branch from that map.

========  =======================================================================  ======
level     branch (official Co-DETR ``SFP``; every conv bias-free, LN = LayerNorm2d)  stride
========  =======================================================================  ======
``p2``    up x2, 3x3 conv C -> C/2, LN, GELU, up x2, 3x3 conv C/2 -> C/4, LN, GELU,     4
          1x1 conv -> out, LN, GELU, 3x3 conv, LN (``use_p2`` only)
``p3``    up x2, 3x3 conv C -> C/2, LN, GELU, 1x1 conv -> out, LN, GELU, 3x3 conv, LN   8
``p4``    1x1 conv C -> out, LN, GELU, 3x3 conv, LN                                    16
``p5``    max-pool 3x3 s2, 1x1 conv -> out, LN, GELU, 3x3 conv, LN                      32
``p6``    max-pool 3x3 s2, 3x3 conv s2 C -> C, LN, GELU, 1x1 conv -> out, LN, GELU,     64
          3x3 conv, LN
========  =======================================================================  ======

"up x2" is nearest-neighbour upsampling followed by the 3x3 conv in the official code
(``upsample='nearest'``); ViTDet's original uses a 2x2 stride-2 transposed conv instead
(``upsample='deconv'``). Module indices inside each ``nn.Sequential`` are the official ones,
so official checkpoints load without renames (``neck.p2.1.weight`` ...).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from codetr.registry import MODELS

LN_EPS = 1e-6  # official LayerNorm (channels_first) default
UPSAMPLE_MODES = ('nearest', 'deconv')


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map (ConvNeXt's channels-first LN).

    Parameters ``weight`` / ``bias`` of shape ``(C,)``.
    """

    def __init__(self, num_channels: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> same shape, each pixel's C values normalised."""
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.weight.shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)


def _up(c_in: int, c_out: int, mode: str) -> list[nn.Module]:
    """x2 upsampling to ``c_out`` channels as two modules (official indices: up, conv)."""
    if mode == 'nearest':
        return [nn.Upsample(scale_factor=2), _conv(c_in, c_out, 3)]
    return [nn.Identity(), nn.ConvTranspose2d(c_in, c_out, 2, stride=2, bias=False)]


def _head(c_in: int, c_out: int) -> list[nn.Module]:
    """1x1 conv -> LN -> GELU -> 3x3 conv -> LN: the output end of every branch."""
    return [_conv(c_in, c_out, 1), LayerNorm2d(c_out), nn.GELU(), _conv(c_out, c_out, 3),
            LayerNorm2d(c_out)]


@MODELS.register_module(name=['SimpleFeaturePyramid', 'SFP'])
class SimpleFeaturePyramid(BaseModule):
    """Stride-16 map -> levels at strides 8, 16, 32, 64 (and 4 first with ``use_p2``).

    Args:
        in_channels: channels of the single input map (an int or a 1-element list, as the
            official config writes it).
        out_channels: width of every output level.
        num_outs: number of levels, ``4 + use_p2`` (checked).
        use_p2: add the stride-4 level (Co-DETR's 5-scale ViT-L: True).
        upsample: ``'nearest'`` (official Co-DETR) or ``'deconv'`` (ViTDet).
        with_cp: recompute each branch's activations in the backward pass while training.

    Input: a sequence holding one ``(B, C, H, W)`` map. Output: a tuple of ``num_outs`` maps
    ``(B, out_channels, H_l, W_l)``, finest first: ``4H x 4W`` (p2), ``2H x 2W``, ``H x W``,
    ``ceil(H / 2)``, ``ceil(ceil(H / 2) / 2)`` (same for W).
    """

    def __init__(self, in_channels: int | Sequence[int], out_channels: int = 256,
                 num_outs: int = 5, use_p2: bool = True, upsample: str = 'nearest',
                 with_cp: bool = False, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not isinstance(in_channels, int):
            if len(in_channels) != 1:
                raise ValueError(f'SimpleFeaturePyramid takes one input map; got in_channels='
                                 f'{list(in_channels)}')
            in_channels = in_channels[0]
        if num_outs != 4 + use_p2:
            raise ValueError(f'SimpleFeaturePyramid builds {4 + use_p2} levels with use_p2='
                             f'{use_p2}; set num_outs={4 + use_p2} (got {num_outs})')
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f'upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}')
        c, out = in_channels, out_channels
        self.use_p2 = use_p2
        self.with_cp = with_cp
        if use_p2:
            self.p2 = nn.Sequential(*_up(c, c // 2, upsample), LayerNorm2d(c // 2), nn.GELU(),
                                    *_up(c // 2, c // 4, upsample), LayerNorm2d(c // 4),
                                    nn.GELU(), *_head(c // 4, out))
        self.p3 = nn.Sequential(*_up(c, c // 2, upsample), LayerNorm2d(c // 2), nn.GELU(),
                                *_head(c // 2, out))
        self.p4 = nn.Sequential(*_head(c, out))
        self.p5 = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), *_head(c, out))
        self.p6 = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), _conv(c, c, 3, stride=2),
                                LayerNorm2d(c), nn.GELU(), *_head(c, out))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform convs (the official ``init_cfg``), unit LayerNorms."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
            elif isinstance(m, LayerNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        """Re-initialise unless ``init_cfg`` loads weights."""
        if self.init_cfg is not None:
            super().init_weights()
            return
        self.reset_parameters()
        self._is_init = True

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """``[(B, C, H, W)]`` -> the ``num_outs`` levels, finest first."""
        if len(inputs) != 1:
            raise ValueError(f'SimpleFeaturePyramid takes one input map, got {len(inputs)}')
        x = inputs[0]
        branches = ([self.p2] if self.use_p2 else []) + [self.p3, self.p4, self.p5, self.p6]
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        return tuple(checkpoint(b, x, use_reentrant=False) if use_cp else b(x)
                     for b in branches)
