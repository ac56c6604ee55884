"""ChannelMapper: project every backbone level to one width, and add coarser levels.

Parameter names follow MMDetection's ``ChannelMapper`` (``convs.i.conv``, ``convs.i.gn``,
``extra_convs.j.conv``, ``extra_convs.j.gn``) so its checkpoints load unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS


class ConvNormAct(nn.Module):
    """``conv -> norm -> act``; the norm is named by its kind (``gn``, ``bn``) as MMDetection does.

    Args:
        bias: ``'auto'`` gives the conv a bias only when there is no norm after it (a norm's
            own shift makes a conv bias redundant).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 conv_cfg: dict | None = None, norm_cfg: dict | None = None,
                 act_cfg: dict | None = None, bias: bool | str = 'auto') -> None:
        super().__init__()
        if bias == 'auto':
            bias = norm_cfg is None
        elif not isinstance(bias, bool):
            raise ValueError(f"bias must be True, False or 'auto', got {bias!r}.")
        self.conv = build_conv_layer(conv_cfg, in_channels, out_channels, kernel_size,
                                     stride=stride, padding=(kernel_size - 1) // 2, bias=bias)
        self.norm_name = None
        if norm_cfg is not None:
            self.norm_name, norm = build_norm_layer(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        self.activate = build_activation_layer(act_cfg) if act_cfg is not None else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform conv (gain 1, bias 0), unit norm: MMDetection's ChannelMapper init."""
        nn.init.xavier_uniform_(self.conv.weight)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        if self.norm_name is not None:
            norm = getattr(self, self.norm_name)
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)``."""
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        return self.activate(x) if self.activate is not None else x


# The norm when a config gives none: Co-DINO's GroupNorm(32, 256) after every projection.
DEFAULT_NORM_CFG = dict(type='GN', num_groups=32)


@MODELS.register_module()
class ChannelMapper(BaseModule):
    """Map each input level to ``out_channels``; optionally add stride-2 extra levels.

    Args:
        in_channels: channels of each input level, finest first (e.g. C2..C5 of a ResNet).
        kernel_size: kernel of the per-level projection (1 in Co-DINO's configs).
        out_channels: width of every output level.
        conv_cfg, norm_cfg, act_cfg: mmcv layer configs; ``norm_cfg=None`` / ``act_cfg=None``
            mean no norm / no activation (DETR's C5 projection); left out, ``norm_cfg`` is
            ``GroupNorm(32)`` (Co-DINO's).
        num_outs: number of output levels; the ``num_outs - len(in_channels)`` extra ones are
            3x3 stride-2 conv + norm, the first applied to the last *input* (the raw backbone
            map, ``in_channels[-1]`` channels), the next ones to the previous extra output.
        bias: ``'auto'`` (bias only without a norm), True or False.

    Input: a sequence of ``len(in_channels)`` maps ``(B, in_channels[i], H_i, W_i)``.
    Output: a tuple of ``num_outs`` maps ``(B, out_channels, H_l, W_l)``; each extra level
    halves the previous size, rounding up.
    """

    def __init__(self, in_channels: Sequence[int], kernel_size: int = 1, out_channels: int = 256,
                 conv_cfg: dict | None = None, norm_cfg: dict | None = DEFAULT_NORM_CFG,
                 act_cfg: dict | None = None, num_outs: int | None = None,
                 bias: bool | str = 'auto', init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = dict(norm_cfg) if norm_cfg is not None else None
        self.in_channels = list(in_channels)
        num_outs = len(self.in_channels) if num_outs is None else num_outs
        if num_outs < len(self.in_channels):
            raise ValueError(f'ChannelMapper num_outs={num_outs} is smaller than the number of '
                             f'inputs ({len(self.in_channels)}); drop levels in the backbone\'s '
                             f'out_indices instead.')
        self.num_outs = num_outs
        layer_cfg = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg, bias=bias)
        self.convs = nn.ModuleList(
            ConvNormAct(c, out_channels, kernel_size, **layer_cfg) for c in self.in_channels)
        extra_in = [self.in_channels[-1]] + [out_channels] * (num_outs - len(self.in_channels) - 1)
        self.extra_convs = nn.ModuleList(
            ConvNormAct(c, out_channels, 3, stride=2, **layer_cfg)
            for c in extra_in[:num_outs - len(self.in_channels)])

    def init_weights(self) -> None:
        """Re-initialise every layer (Xavier-uniform convs, unit norms) unless loading weights."""
        if self.init_cfg is not None:
            super().init_weights()
            return
        for layer in [*self.convs, *self.extra_convs]:
            layer.reset_parameters()
        self._is_init = True

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Maps of ``len(in_channels)`` levels -> tuple of ``num_outs`` projected levels."""
        if len(inputs) != len(self.convs):
            raise ValueError(f'ChannelMapper got {len(inputs)} input levels but in_channels has '
                             f'{len(self.convs)}; make the backbone\'s out_indices match.')
        outs = [conv(x) for conv, x in zip(self.convs, inputs)]
        for i, extra in enumerate(self.extra_convs):
            outs.append(extra(inputs[-1] if i == 0 else outs[-1]))
        return tuple(outs)
