"""Swin Transformer backbone with MMDetection's arguments and numerics, built from timm's parts.

``SwinTransformer`` takes MMDetection 3.x's ``SwinTransformer`` arguments and reproduces its
outputs (the parity test checks a fixture made by MMDetection's own class to 1e-4, on inputs
that are and are not multiples of the patch and window size). Inside, timm's modules do the
work where they fit: ``PatchEmbed`` (bottom / right padding to the patch size),
``WindowAttention`` (qkv, relative position bias), ``Mlp``, ``PatchMerging`` and ``DropPath``.
The block and stage forward are written here because the order matters: MMDetection (and the
original Swin release) pad a stage to whole windows *before* the cyclic shift, timm shifts
first; the two differ wherever a stage is not a multiple of the window.

The parameter names are the original Swin release's (``layers.i.blocks.j.attn.qkv``,
``layers.i.downsample`` at the end of stage i, ``norm{i}`` per output), which is also the
layout of the official Co-DETR Swin checkpoints (their ``SwinTransformerV1``).
``codetr.models.converters.swin`` maps MMDetection's and timm's layouts onto it;
``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` loads any of them.

Differences from MMDetection, none of which changes an output:
- ``relative_position_index`` is a non-persistent buffer (timm's), so it is not saved; the
  converters check that a checkpoint's copy equals the recomputed one.
- Stages after the last ``out_indices`` entry are not run (their outputs are unused).
- ``absolute_pos_embed`` is stored as ``(1, C, H, W)`` (original layout) and interpolated
  (bicubic) to other input sizes, where MMDetection only accepts the pre-training size.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from timm.models.swin_transformer import PatchMerging, WindowAttention
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from codetr.registry import MODELS

# Attention logit added between tokens of different regions of a shifted window
# (MMDetection's and the original release's value; exp(-100) underflows to 0 in float32).
_MASK_VALUE = -100.0


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` -> (B * nW, window * window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window * window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int,
                        device: torch.device | None = None) -> Tensor:
    """Attention mask of a cyclically shifted (h, w) map (h, w multiples of ``window``).

    After a shift by ``shift``, a window can hold tokens from up to four regions that were not
    neighbours; tokens of different regions get ``-100`` (else 0).

    Returns:
        (nW, window * window, window * window) float mask, windows in row-major order.
    """
    region = torch.zeros(1, h, w, 1, device=device)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(bounds):
        for j, cols in enumerate(bounds):
            region[:, rows, cols, :] = 3 * i + j
    ids = window_partition(region, window).squeeze(-1)  # (nW, window * window)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, _MASK_VALUE)


class SwinBlock(nn.Module):
    """One (shifted-)window attention block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    The map is padded (bottom / right, zeros after ``norm1``) to whole windows, then shifted
    by ``shift`` (0: regular windows), as MMDetection does; the padding is cropped after the
    attention.
    """

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float,
                 qkv_bias: bool, qk_scale: float | None, drop: float, attn_drop: float,
                 drop_path: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size=window, qkv_bias=qkv_bias,
                                    attn_drop=attn_drop, proj_drop=drop)
        if qk_scale:  # MMDetection: `qk_scale or head_dim ** -0.5`
            self.attn.scale = qk_scale
            self.attn.fused_attn = False  # torch's fused kernel would use head_dim ** -0.5
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C); ``mask`` from :func:`shifted_window_mask` (padded size)."""
        _, h, w, _ = x.shape
        y = self.norm1(x)
        y = F.pad(y, (0, 0, 0, -w % self.window, 0, -h % self.window))
        hp, wp = y.shape[1:3]
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask=mask if self.shift else None)
        y = window_reverse(y, self.window, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y[:, :h, :w])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SwinStage(nn.Module):
    """``depth`` blocks alternating regular and shifted windows, then an optional 2x2 patch
    merging (timm's ``PatchMerging``: odd sizes padded, channels x2)."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int,
                 drop_path: Sequence[float], downsample: bool, patch_norm: bool,
                 with_cp: bool, **block_args) -> None:
        super().__init__()
        self.window, self.with_cp = window, with_cp
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else window // 2,
                      drop_path=drop_path[i], **block_args) for i in range(depth))
        norm = nn.LayerNorm if patch_norm else nn.Identity
        self.downsample = PatchMerging(dim, 2 * dim, norm_layer=norm) if downsample else None

    def forward(self, x: Tensor, merge: bool = True) -> tuple[Tensor, Tensor]:
        """(B, H, W, C) -> (merged (B, ceil(H/2), ceil(W/2), 2C) or the blocks' output,
        the blocks' output (B, H, W, C))."""
        h, w = x.shape[1:3]
        mask = None
        if len(self.blocks) > 1:
            hp, wp = h + (-h % self.window), w + (-w % self.window)
            mask = shifted_window_mask(hp, wp, self.window, self.window // 2, x.device)
            mask = mask.to(x.dtype)
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        if merge and self.downsample is not None:
            return self.downsample(x), x
        return x, x


def _check_args(patch_size: int, strides: Sequence[int], depths: Sequence[int],
                num_heads: Sequence[int], out_indices: Sequence[int], frozen_stages: int,
                act_cfg: dict, norm_cfg: dict) -> None:
    """Reject settings this implementation would not honour, saying what to change."""
    num_stages = len(depths)
    if len(num_heads) != num_stages or len(strides) != num_stages:
        raise ValueError(f'depths {tuple(depths)}, num_heads {tuple(num_heads)} and strides '
                         f'{tuple(strides)} must have one entry per stage')
    if strides[0] != patch_size or any(s != 2 for s in strides[1:]):
        raise ValueError(f'strides={tuple(strides)}: Swin embeds non-overlapping patches '
                         f'(strides[0] == patch_size={patch_size}) and merges 2x2 patches '
                         f'(later strides 2)')
    if not out_indices or not all(0 <= i < num_stages for i in out_indices):
        raise ValueError(f'out_indices={tuple(out_indices)} must name stages in '
                         f'0..{num_stages - 1}')
    if not -1 <= frozen_stages <= num_stages:
        raise ValueError(f'frozen_stages={frozen_stages} must be in -1..{num_stages}')
    if act_cfg.get('type') != 'GELU' or norm_cfg.get('type') != 'LN':
        raise ValueError(f'act_cfg={act_cfg}, norm_cfg={norm_cfg}: Swin supports '
                         "dict(type='GELU') and dict(type='LN') only")


@MODELS.register_module()
class SwinTransformer(BaseModule):
    """Swin Transformer (Liu et al. 2021): NCHW levels at strides 4, 8, 16, 32.

    Arguments are MMDetection's ``SwinTransformer`` ones, with the same meaning and defaults.

    Args:
        pretrain_img_size: image size of the pre-training; sets ``absolute_pos_embed``'s grid.
        in_channels: input channels.
        embed_dims: channels of stage 0; stage i has ``embed_dims * 2**i``.
        patch_size: patch embedding size (``strides[0]``).
        window_size: attention window (tokens per side); shifted blocks shift by half of it.
        mlp_ratio: MLP hidden width / channels.
        depths / num_heads: blocks and attention heads per stage.
        strides: ``(patch_size, 2, 2, ...)``; other values are rejected.
        out_indices: stages to return, each normalised by its own LayerNorm ``norm{i}``.
        qkv_bias / qk_scale: bias of the qkv projection; attention scale (None: head_dim**-0.5).
        patch_norm: LayerNorm after the patch embedding and in the patch merging.
        drop_rate / attn_drop_rate: dropout after the position embedding, attention
            projection and MLP / of the attention weights.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        use_abs_pos_embed: add a learned absolute position embedding after the patch embedding.
        act_cfg / norm_cfg: ``dict(type='GELU')`` / ``dict(type='LN')`` (the only ones).
        with_cp: activation checkpointing of every block (non-reentrant).
        pretrained: deprecated path, same as ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
        convert_weights: accepted for MMDetection configs (it meant "the file is in the
            original layout"); the layout is detected from the keys instead, and a flag that
            contradicts the detected layout is logged.
        frozen_stages: -1 trains all; k >= 0 freezes the patch embedding (and absolute
            position embedding) and stages 0..k-1 with their patch merging and ``norm{i}``
            (MMDetection's convention; the official Co-DETR ``SwinTransformerV1`` freezes
            stages 0..k-2 for the same k).
        init_cfg: ``dict(type='Pretrained', checkpoint=LOCAL_PATH, prefix='backbone.')``: a
            Swin checkpoint in codetr's / the original release's, MMDetection's or timm's
            layout (ImageNet classifier or detector); never downloaded.
    """

    def __init__(self, pretrain_img_size: int | Sequence[int] = 224, in_channels: int = 3,
                 embed_dims: int = 96, patch_size: int = 4, window_size: int = 7,
                 mlp_ratio: float = 4, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), strides: Sequence[int] = (4, 2, 2, 2),
                 out_indices: Sequence[int] = (0, 1, 2, 3), qkv_bias: bool = True,
                 qk_scale: float | None = None, patch_norm: bool = True, drop_rate: float = 0.,
                 attn_drop_rate: float = 0., drop_path_rate: float = 0.1,
                 use_abs_pos_embed: bool = False, act_cfg: dict | None = None,
                 norm_cfg: dict | None = None, with_cp: bool = False,
                 pretrained: str | None = None, convert_weights: bool = False,
                 frozen_stages: int = -1, init_cfg: dict | None = None) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('give either pretrained or init_cfg, not both')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        _check_args(patch_size, strides, depths, num_heads, out_indices, frozen_stages,
                    act_cfg or dict(type='GELU'), norm_cfg or dict(type='LN'))
        self.out_indices, self.frozen_stages = tuple(out_indices), frozen_stages
        self.convert_weights = convert_weights
        self.num_features = tuple(embed_dims * 2**i for i in range(len(depths)))
        self.channels = tuple(self.num_features[i] for i in self.out_indices)
        self.strides = tuple(patch_size * 2**i for i in self.out_indices)
        self.patch_embed = PatchEmbed(
            img_size=None, patch_size=patch_size, in_chans=in_channels, embed_dim=embed_dims,
            norm_layer=nn.LayerNorm if patch_norm else None, output_fmt='NHWC',
            strict_img_size=False, dynamic_img_pad=True)
        if use_abs_pos_embed:
            size = (pretrain_img_size if isinstance(pretrain_img_size, Sequence)
                    else (pretrain_img_size,) * 2)
            grid = (size[0] // patch_size, size[-1] // patch_size)
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dims, *grid))
        self.use_abs_pos_embed = use_abs_pos_embed
        self.drop_after_pos = nn.Dropout(drop_rate)
        total = sum(depths)  # stochastic depth rising linearly, as torch.linspace(0, rate, n)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        block_args = dict(mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                          drop=drop_rate, attn_drop=attn_drop_rate)
        self.layers = nn.ModuleList(
            SwinStage(self.num_features[i], depths[i], num_heads[i], window_size,
                      rates[sum(depths[:i]):sum(depths[:i + 1])],
                      downsample=i < len(depths) - 1, patch_norm=patch_norm, with_cp=with_cp,
                      **block_args)
            for i in range(len(depths)))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(self.num_features[i]))
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        """Patch embedding (and dropout), then per frozen stage i its blocks, merging, norm{i}."""
        if self.frozen_stages < 0:
            return []
        modules: list[nn.Module] = [self.patch_embed, self.drop_after_pos]
        for i in range(self.frozen_stages):
            modules.append(self.layers[i])
            if hasattr(self, f'norm{i}'):
                modules.append(getattr(self, f'norm{i}'))
        return modules

    def _freeze(self) -> None:
        if self.frozen_stages >= 0 and self.use_abs_pos_embed:
            self.absolute_pos_embed.requires_grad = False
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> SwinTransformer:
        """Frozen stages stay in eval mode (no dropout, no stochastic depth)."""
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
        return self

    def _add_abs_pos_embed(self, x: Tensor) -> Tensor:
        """(B, H, W, C) + the absolute embedding, resized (bicubic) if the grid differs."""
        pos = self.absolute_pos_embed
        if pos.shape[-2:] != x.shape[1:3]:
            pos = F.interpolate(pos, size=x.shape[1:3], mode='bicubic', align_corners=False)
        return x + pos.permute(0, 2, 3, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, C_in, H, W) -> one (B, C_i, ceil(H / s_i), ceil(W / s_i)) per out index."""
        x = self.patch_embed(x)  # (B, H/4, W/4, C), padded to the patch size
        if self.use_abs_pos_embed:
            x = self._add_abs_pos_embed(x)
        x = self.drop_after_pos(x)
        outs = []
        last = max(self.out_indices)
        for i, stage in enumerate(self.layers[:last + 1]):
            x, out = stage(x, merge=i < last)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)

    def init_weights(self) -> None:
        """Load ``init_cfg.checkpoint`` (any known Swin layout), else MMDetection's init:
        truncated normal (std 0.02) for linear weights and position tables, zero biases,
        unit LayerNorms."""
        if self.init_cfg and self.init_cfg.get('type') == 'Pretrained':
            from codetr.models.converters.swin import load_swin_checkpoint
            load_swin_checkpoint(self, self.init_cfg['checkpoint'],
                                 self.init_cfg.get('prefix', 'backbone.'), self.convert_weights)
            self._freeze()
            return
        if self.init_cfg:
            print_log(f'SwinTransformer: init_cfg {self.init_cfg} is not Pretrained; using '
                      'the default initialisation', logger='current', level=logging.WARNING)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, WindowAttention):
                trunc_normal_(module.relative_position_bias_table, std=0.02)
        if self.use_abs_pos_embed:
            trunc_normal_(self.absolute_pos_embed, std=0.02)
