"""Swin Transformer backbone over timm, with the official Swin release's checkpoint layout.

For MMDetection's numerics and arguments (the official Co-DETR configs), use
``SwinTransformer`` (``swin.py``); this class builds any timm Swin variant by its timm name.

timm (1.0.x) builds the stages; this module adds what detection needs: any input size
(padded to ``size_divisor``), NCHW outputs, one LayerNorm per output level (``norm{i}``, as
the official detection Swin has), ``frozen_stages``, activation checkpointing and loading a
local checkpoint in either timm's or the official layout (``swin_official_to_timm``).

Why not ``features_only=True``: timm's feature wrapper renames the stages (``layers_0``) and
has no per-level norms; running ``patch_embed`` and ``layers`` directly keeps timm's own
parameter names, so the key map stays a short rename. ``strict_img_size=False`` lifts
timm's input-size check and builds the shifted-window masks per input size (timm >= 1.0.8;
1.0.31's ``dynamic_img_size=True`` is the same switch, and earlier releases silently ignore
that name). These are timm internals: requirements.txt caps timm below 1.1.

Differences from the official detection Swin, on purpose or inherited from timm:
- ``frozen_stages=k`` freezes the patch embedding and the first k stages (ResNet's
  convention); the official code freezes stages 0..k-2 for the same k. Co-DINO Swin-L
  trains everything (-1), where both agree.
- timm shifts a stage's windows before padding it to a window multiple, the official code
  after; outputs agree exactly when every stage is a multiple of the window (set
  ``size_divisor=32 * window_size``), and differ slightly at the padded border otherwise.

Layouts (``i`` = stage, ``j`` = block):

====================================================  ===========================================
official (Swin release, Co-DETR's Swin-L checkpoints)  codetr (``TimmSwinTransformer`` state dict)
====================================================  ===========================================
``patch_embed.proj.*`` / ``patch_embed.norm.*``        ``body.patch_embed.proj.*`` / ``.norm.*``
``layers.i.blocks.j.{norm1,attn.qkv,attn.proj,``       ``body.layers.i.blocks.j.<same>``
``attn.relative_position_bias_table,norm2,mlp.fc1,``
``mlp.fc2}.*``
``layers.i.downsample.{reduction,norm}.*``             ``body.layers.{i+1}.downsample.<same>``
                                                       (timm merges patches at the *start* of the
                                                       next stage; the concatenation order of the
                                                       2x2 patches is the same)
``norm{i}.*`` (per-output norms, detection)            ``norm{i}.*``
``*.relative_position_index``, ``*.attn_mask``         dropped (timm recomputes them: buffers)
``norm.*``, ``head.*`` (ImageNet classifier)           dropped
====================================================  ===========================================
"""
from __future__ import annotations

import logging
import math
import re

import timm
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn

from codetr.registry import MODELS

from .checkpoint_utils import extract_state_dict, read_checkpoint

_DOWNSAMPLE = re.compile(r'^layers\.(\d+)\.downsample\.')
# Buffers of the official release that timm rebuilds for every input size.
_OFFICIAL_BUFFERS = ('relative_position_index', 'attn_mask')
_CLASSIFIER_PREFIXES = ('norm.', 'head.')


def is_official_swin_layout(state: dict) -> bool:
    """Official layout: top-level ``layers.*`` keys and a patch merging in stage 0."""
    return any(_DOWNSAMPLE.match(k) and k.startswith('layers.0.') for k in state)


def swin_official_to_timm(state: dict) -> dict:
    """Rename an official-layout Swin state dict (``backbone.`` prefix already removed) to
    ``TimmSwinTransformer``'s names; see the module docstring for the table. Classifier
    keys and recomputed buffers are dropped; unknown keys are kept as they are, so that
    loading reports them as unexpected."""
    out = {}
    for key, value in state.items():
        if key.rsplit('.', 1)[-1] in _OFFICIAL_BUFFERS or key.startswith(_CLASSIFIER_PREFIXES):
            continue
        match = _DOWNSAMPLE.match(key)
        if match:
            stage = int(match.group(1))
            key = f'body.layers.{stage + 1}.downsample.' + key[match.end():]
        elif key.startswith(('patch_embed.', 'layers.')):
            key = 'body.' + key
        out[key] = value
    return out


def swin_timm_to_official(state: dict) -> dict:
    """Inverse of ``swin_official_to_timm`` (without the dropped buffers and classifier)."""
    out = {}
    for key, value in state.items():
        if key.startswith('body.'):
            key = key[len('body.'):]
            match = _DOWNSAMPLE.match(key)
            if match:
                key = f'layers.{int(match.group(1)) - 1}.downsample.' + key[match.end():]
        out[key] = value
    return out


@MODELS.register_module()
class TimmSwinTransformer(BaseModule):
    """Swin Transformer (Liu et al. 2021) from timm, returning NCHW levels at strides 4..32.

    Args:
        model_name: timm model name; its defaults give the architecture, which
            ``embed_dim`` / ``depths`` / ``num_heads`` / ``window_size`` override (tests use a
            tiny model this way). Never downloads: built with ``pretrained=False``.
        out_indices: stages to return, 0..3 (strides 4, 8, 16, 32; channels
            ``embed_dim * 2**i``).
        drop_path_rate: stochastic depth, rising linearly over all blocks.
        frozen_stages: -1 trains all; 0 freezes the patch embedding; k >= 1 also freezes the
            first k stages (in the official sense: blocks, their patch merging and ``norm{i}``).
        with_cp: activation checkpointing of every stage (timm's ``set_grad_checkpointing``).
        size_divisor: inputs are zero-padded on the bottom / right to a multiple of it, and
            outputs cropped back to ``ceil(H / stride)``: 32 makes every stage's size exact.
        always_partition: keep the full window and the shift even where a stage is smaller
            than the window, padding it, as the official release does; timm's default shrinks
            the window instead.
        init_cfg: ``dict(type='Pretrained', checkpoint=LOCAL_PATH, prefix='backbone.')``: a
            local file in the official or timm layout.
    """

    def __init__(self, model_name: str = 'swin_large_patch4_window12_384',
                 out_indices: tuple[int, ...] = (0, 1, 2, 3), drop_path_rate: float = 0.3,
                 frozen_stages: int = -1, with_cp: bool = False, size_divisor: int = 32,
                 always_partition: bool = True, embed_dim: int | None = None,
                 depths: tuple[int, ...] | None = None, num_heads: tuple[int, ...] | None = None,
                 window_size: int | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        overrides = dict(embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                         window_size=window_size)
        self.body = timm.create_model(
            model_name, pretrained=False, num_classes=0, global_pool='',
            strict_img_size=False, always_partition=always_partition,
            drop_path_rate=drop_path_rate,
            **{k: v for k, v in overrides.items() if v is not None})
        # detection uses its own per-level norms; the classifier's final norm and head go
        self.body.norm = nn.Identity()
        self.body.head = nn.Identity()
        num_stages = len(self.body.layers)
        if not out_indices or not all(0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices={out_indices} must name stages in 0..{num_stages - 1}')
        self.out_indices = tuple(out_indices)
        info = self.body.feature_info
        self.channels = tuple(info[i]['num_chs'] for i in self.out_indices)
        self.strides = tuple(info[i]['reduction'] for i in self.out_indices)
        for i, ch in zip(self.out_indices, self.channels):
            self.add_module(f'norm{i}', nn.LayerNorm(ch))
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} must be in -1..{num_stages}')
        self.frozen_stages = frozen_stages
        self.size_divisor = size_divisor
        if with_cp:
            self.body.set_grad_checkpointing(True)
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        """Patch embedding, then per frozen stage i: its blocks, the patch merging that ends
        it in the official layout (the start of timm's stage i + 1) and ``norm{i}``."""
        if self.frozen_stages < 0:
            return []
        modules: list[nn.Module] = [self.body.patch_embed]
        layers = self.body.layers
        for i in range(self.frozen_stages):
            modules.append(layers[i].blocks)
            if i + 1 < len(layers):
                modules.append(layers[i + 1].downsample)
            if hasattr(self, f'norm{i}'):
                modules.append(getattr(self, f'norm{i}'))
        return modules

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> TimmSwinTransformer:
        """Frozen stages stay in eval mode (no stochastic depth) when training."""
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
        return self

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, C_i, ceil(H / s_i), ceil(W / s_i)) per out index."""
        h, w = x.shape[-2:]
        div = self.size_divisor
        x = F.pad(x, (0, (div - w % div) % div, 0, (div - h % div) % div))
        x = self.body.patch_embed(x)  # (B, H/4, W/4, C) NHWC
        outs = []
        for i, stage in enumerate(self.body.layers[:max(self.out_indices) + 1]):
            x = stage(x)
            if i in self.out_indices:
                stride = self.body.feature_info[i]['reduction']
                out = getattr(self, f'norm{i}')(x)[:, :math.ceil(h / stride),
                                                   :math.ceil(w / stride)]
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

    def init_weights(self) -> None:
        """Load ``init_cfg.checkpoint`` (local, official or timm layout) or keep timm's init."""
        if not self.init_cfg or self.init_cfg.get('type') != 'Pretrained':
            return
        path = self.init_cfg['checkpoint']
        state = extract_state_dict(read_checkpoint(path), self.init_cfg.get('prefix',
                                                                            'backbone.'))
        if is_official_swin_layout(state):
            state = swin_official_to_timm(state)
        own = self.state_dict()
        shapes = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        if shapes:
            raise ValueError(f'{path!r} does not fit this Swin (shape differences in '
                             f'{shapes[:3]}...): check embed_dim / window_size of the model.')
        result = self.load_state_dict(state, strict=False)
        if len(result.missing_keys) == len(own):
            raise ValueError(f'{path!r} shares no parameter name with TimmSwinTransformer '
                             f'(its first keys: {sorted(state)[:5]}); is it a Swin checkpoint?')
        for kind, keys in (('missing', result.missing_keys),
                           ('unexpected', result.unexpected_keys)):
            if keys:
                print_log(f'TimmSwinTransformer: {len(keys)} {kind} keys in {path}: {keys}',
                          logger='current', level=logging.WARNING)
        self._freeze()
