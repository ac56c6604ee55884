"""ResNet backbone with torchvision's parameter layout and MMDetection's training switches.

Parameter names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...) are
torchvision's, which are also the ``backbone.*`` keys of MMDetection's checkpoints, so both
torchvision ImageNet weights and detector checkpoints load without a rename table.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint
from torchvision.models.resnet import BasicBlock, Bottleneck

from codetr.registry import MODELS

from .checkpoint_utils import load_local_weights

# depth -> (block type, blocks per stage); He et al. 2016, Table 1.
ARCH_SETTINGS: dict[int, tuple[type[nn.Module], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
STEM_CHANNELS = 64  # width of the 7x7 stem and of layer1's 3x3 convs


@MODELS.register_module()
class ResNet(BaseModule):
    """ResNet returning the feature maps of the stages named in ``out_indices``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        in_channels: channels of the input image.
        num_stages: how many of the 4 residual stages to build (1..4).
        out_indices: stages whose outputs are returned, 0 = ``layer1`` (stride 4).
        frozen_stages: -1 freezes nothing; 0 freezes the stem; k >= 1 also ``layer1..layerk``.
            Frozen parts have ``requires_grad=False`` and stay in eval mode.
        norm_cfg: normalisation config (mmcv ``build_norm_layer``); ``requires_grad=False``
            freezes the affine parameters of every norm layer.
        norm_eval: keep every BatchNorm in eval mode during ``train()`` (running stats fixed).
        style: only ``'pytorch'`` (stride on the 3x3 conv of a bottleneck, as torchvision).
        with_cp: recompute each residual block in the backward pass (activation
            checkpointing, non-reentrant) to save memory while training.
        zero_init_residual: start each block's last norm at 0 when training from scratch.
        init_cfg: ``None`` (Kaiming init) or ``dict(type='Pretrained', checkpoint=LOCAL_PATH)``.

    Input ``(B, in_channels, H, W)``; output a tuple with, for each index i in
    ``out_indices``, a map ``(B, C_i, H / 2**(i+2), W / 2**(i+2))`` (rounded up), where
    ``C_i = 64 * 2**i`` times 4 for bottleneck depths.
    """

    def __init__(self, depth: int, in_channels: int = 3, num_stages: int = 4,
                 out_indices: Sequence[int] = (0, 1, 2, 3), frozen_stages: int = 1,
                 norm_cfg: dict | None = None, norm_eval: bool = True, style: str = 'pytorch',
                 with_cp: bool = False, zero_init_residual: bool = True,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self._check_args(depth, num_stages, out_indices, frozen_stages, style, init_cfg)
        self.depth = depth
        self.num_stages = num_stages
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_cfg = dict(type='BN', requires_grad=False) if norm_cfg is None else norm_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.zero_init_residual = zero_init_residual
        block, stage_blocks = ARCH_SETTINGS[depth]

        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer_names: list[str] = []
        inplanes = STEM_CHANNELS
        for i in range(num_stages):
            planes = STEM_CHANNELS * 2**i
            layer = self._make_layer(block, inplanes, planes, stage_blocks[i], 1 if i == 0 else 2)
            inplanes = planes * block.expansion
            self.add_module(f'layer{i + 1}', layer)
            self.layer_names.append(f'layer{i + 1}')
        self.out_channels = [STEM_CHANNELS * 2**i * block.expansion for i in self.out_indices]
        self._reset_parameters()
        self._freeze_stages()

    @staticmethod
    def _check_args(depth: int, num_stages: int, out_indices: Sequence[int],
                    frozen_stages: int, style: str, init_cfg: dict | None) -> None:
        if depth not in ARCH_SETTINGS:
            raise ValueError(f'ResNet depth must be one of {sorted(ARCH_SETTINGS)}, got {depth}.')
        if not 1 <= num_stages <= 4:
            raise ValueError(f'ResNet num_stages must be in 1..4, got {num_stages}.')
        if not out_indices or max(out_indices) >= num_stages or min(out_indices) < 0:
            raise ValueError(f'ResNet out_indices {tuple(out_indices)} must be stage indices '
                             f'in 0..{num_stages - 1} (num_stages={num_stages}).')
        if frozen_stages > num_stages:
            raise ValueError(f'ResNet frozen_stages={frozen_stages} exceeds num_stages.')
        if style != 'pytorch':
            raise ValueError(f"ResNet style={style!r} is not supported; use style='pytorch' "
                             f'(torchvision layout, stride on the 3x3 conv).')
        if init_cfg is not None and init_cfg.get('type') != 'Pretrained':
            raise ValueError("ResNet init_cfg must be None or dict(type='Pretrained', "
                             f'checkpoint=LOCAL_PATH), got {init_cfg}.')

    def _norm(self, num_features: int) -> nn.Module:
        return build_norm_layer(self.norm_cfg, num_features)[1]

    def _make_layer(self, block: type[nn.Module], inplanes: int, planes: int, num_blocks: int,
                    stride: int) -> nn.Sequential:
        """One residual stage; the first block changes width / stride through ``downsample``."""
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                self._norm(planes * block.expansion))
        blocks = [block(inplanes, planes, stride, downsample, norm_layer=self._norm)]
        inplanes = planes * block.expansion
        blocks += [block(inplanes, planes, norm_layer=self._norm) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def _reset_parameters(self) -> None:
        """Kaiming-normal convs, unit norms, and (optionally) zero-init residual branches."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (_BatchNorm, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if self.zero_init_residual:
            # Each block then starts as the identity (Goyal et al. 2017, "ImageNet in 1 hour").
            for m in self.modules():
                last_norm = getattr(m, 'bn3', None) if isinstance(m, Bottleneck) else \
                    getattr(m, 'bn2', None) if isinstance(m, BasicBlock) else None
                if last_norm is not None:
                    nn.init.constant_(last_norm.weight, 0)

    def init_weights(self) -> None:
        """Load ``init_cfg.checkpoint`` (a local file) if given; otherwise keep the init."""
        if self.init_cfg is not None:
            load_local_weights(self, self.init_cfg['checkpoint'],
                               prefix=self.init_cfg.get('prefix', 'backbone.'))
        self._is_init = True

    def _freeze_stages(self) -> None:
        frozen: list[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen += [self.conv1, self.bn1]
        frozen += [getattr(self, f'layer{i}') for i in range(1, self.frozen_stages + 1)]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> ResNet:
        """Switch mode, keeping frozen stages (and, with ``norm_eval``, every BN) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def _run_layer(self, layer: nn.Sequential, x: Tensor) -> Tensor:
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        for block in layer:
            x = checkpoint(block, x, use_reentrant=False) if use_cp else block(x)
        return x

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """``(B, C, H, W)`` image batch -> tuple of the ``out_indices`` stage maps."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        outs = []
        for i, name in enumerate(self.layer_names):
            x = self._run_layer(getattr(self, name), x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
