"""Plain ViT backbone for detection (ViTDet) in Co-DETR's EVA-02 configuration.

The blocks are timm's ``EvaBlock`` (pre-norm attention with rotary position embedding and
no key bias, SwiGLU MLP with a LayerNorm before its output projection, "sub-LN"), run as in
ViTDet: most blocks attend inside non-overlapping windows, a few (``window_block_indexes``
leaves them out) attend globally, and the last block's tokens form one stride-16 map.

What follows the official Co-DETR ViT (``mmdet/models/backbones/vit.py`` of Sense-X/Co-DETR):

- window attention partitions the *normalised* tokens, zero-padding the bottom / right to a
  multiple of the window; padded tokens take part in the attention unmasked;
- RoPE is 2-D and interleaved (timm's ``RotaryEmbeddingCat`` with ``ref_feat_shape``): the
  first half of each head's channels rotates with the row, the second half with the column,
  and positions are rescaled so that any grid spans ``rope_ref_size`` (16) units. Window
  blocks use the window grid, global blocks the whole token grid of the input;
- the absolute position embedding is learnt on the pre-training grid
  (``pretrain_img_size / patch_size`` square, with a class-token slot that is not used) and
  resized bicubically to the token grid of every input;
- a final ``out_norm`` (LayerNorm, eps 1e-5; the blocks use eps 1e-6) before the output.

Inputs of any size work: they are zero-padded to a multiple of the patch size.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from timm.layers import RotaryEmbeddingCat
from timm.models.eva import EvaBlock
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from codetr.registry import MODELS

# Official Co-DETR ViT-L (co_dino_5scale_vit_large_coco.py): window attention everywhere but
# every fourth block, as ViTDet does for ViT-L.
VIT_L_GLOBAL_BLOCKS = (3, 7, 11, 15, 19, 23)
VIT_L_WINDOW_BLOCKS = tuple(i for i in range(24) if i not in VIT_L_GLOBAL_BLOCKS)
# EVA-02's RoPE: positions span 16 units (its 224 px / 14 px pre-training grid), whatever
# the grid; the official code calls it ``pt_hw_seq_len``.
ROPE_REF_SIZE = 16
BLOCK_NORM_EPS = 1e-6
INIT_STD = 0.02  # truncated-normal init of linear layers and the position embedding


def window_partition(x: Tensor, window: int) -> tuple[Tensor, tuple[int, int]]:
    """``(B, H, W, C)`` -> ``(B * nW, window, window, C)`` windows, zero-padding the bottom
    and right to a multiple of ``window``; also returns the padded ``(Hp, Wp)``."""
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window, window, C)`` -> ``(B, H, W, C)``
    with the padding cropped."""
    (hp, wp), (h, w) = padded, size
    b = windows.shape[0] // (hp // window * wp // window)
    x = windows.view(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w] if (hp, wp) != (h, w) else x


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> ``(B, H / p, W / p, C)`` tokens (NHWC)."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, patch_size, patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ViTDetBlock(EvaBlock):
    """timm's ``EvaBlock`` on a ``(B, H, W, C)`` token map, attending inside windows of
    ``window_size`` (0 = globally). Parameters keep ``EvaBlock``'s names."""

    def __init__(self, *, window_size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.gamma_1 is not None:
            raise ValueError('ViTDetBlock has no layer scale; leave init_values unset')
        self.window_size = window_size

    def forward(self, x: Tensor, rope: Tensor) -> Tensor:
        """``(B, H, W, C)`` -> same shape; ``rope`` ``(N, 2 * head_dim)`` for this block's
        attention grid (the window, or the whole map)."""
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.window_size:
            y, padded = window_partition(y, self.window_size)  # (B * nW, ws, ws, C)
        grid = y.shape[:3]
        y = self.attn(y.reshape(grid[0], -1, c), rope=rope).view(*grid, c)
        if self.window_size:
            y = window_unpartition(y, self.window_size, padded, (h, w))
        x = x + self.drop_path1(y)
        return x + self.drop_path2(self.mlp(self.norm2(x)))


@MODELS.register_module()
class ViT(BaseModule):
    """EVA-02 ViT for detection (ViTDet layout); defaults are Co-DETR's ViT-L.

    Args:
        embed_dim, depth, num_heads: width, number of blocks and attention heads (ViT-L:
            1024, 24, 16; ``embed_dim / num_heads`` must be a multiple of 4 for the 2-D RoPE).
        patch_size: side of the patches, also the output stride.
        in_channels: image channels.
        mlp_ratio: SwiGLU hidden width / ``embed_dim`` (EVA-02: 4 * 2 / 3, so that the three
            SwiGLU matrices cost what a 4x GELU MLP's two do).
        qkv_bias: biases on the query and value projections (never on the key).
        drop_path_rate: stochastic depth, rising linearly from 0 over the blocks.
        window_size: side of the attention windows, in tokens.
        window_block_indexes: blocks that attend inside windows; the others are global.
        pretrain_img_size: image side the position embedding was learnt at; it holds
            ``(pretrain_img_size / patch_size) ** 2`` positions.
        pretrain_use_cls_token: the position embedding has a leading class-token slot (kept
            so that pre-trained and official checkpoints load unchanged; never used).
        rope_ref_size: the span of RoPE positions on any grid.
        with_cp: recompute each block's activations in the backward pass (non-reentrant
            ``torch.utils.checkpoint``) while training.
        init_cfg: ``dict(type='Pretrained', checkpoint=LOCAL_PATH)``: an EVA-02 or official
            Co-DETR file (see :meth:`init_weights`).

    Input ``(B, in_channels, H, W)``; output a 1-tuple with the map
    ``(B, embed_dim, ceil(H / patch_size), ceil(W / patch_size))``.
    """

    def __init__(self, embed_dim: int = 1024, depth: int = 24, num_heads: int = 16,
                 patch_size: int = 16, in_channels: int = 3, mlp_ratio: float = 4 * 2 / 3,
                 qkv_bias: bool = True, drop_path_rate: float = 0.4, window_size: int = 24,
                 window_block_indexes: Sequence[int] = VIT_L_WINDOW_BLOCKS,
                 pretrain_img_size: int = 512, pretrain_use_cls_token: bool = True,
                 rope_ref_size: int = ROPE_REF_SIZE, with_cp: bool = False,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        head_dim = embed_dim // num_heads
        if embed_dim % num_heads or head_dim % 4:
            raise ValueError(f'ViT embed_dim={embed_dim} / num_heads={num_heads} must be a '
                             f'whole head width divisible by 4 (2-D rotary embedding)')
        bad = [i for i in window_block_indexes if not 0 <= i < depth]
        if bad or (window_block_indexes and window_size <= 0):
            raise ValueError(f'ViT window_block_indexes {bad or window_block_indexes} must be '
                             f'block indices in 0..{depth - 1} with window_size > 0')
        if pretrain_img_size % patch_size:
            raise ValueError(f'ViT pretrain_img_size={pretrain_img_size} must be a multiple of '
                             f'patch_size={patch_size}')
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.with_cp = with_cp
        self.pretrain_grid = pretrain_img_size // patch_size
        self.num_prefix = int(pretrain_use_cls_token)
        self.patch_embed = PatchEmbed(in_channels, embed_dim, patch_size)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.num_prefix + self.pretrain_grid ** 2, embed_dim))
        # interleaved 2-D RoPE over a whole head; rebuilt for each grid (cheap: a few KB)
        self.rope = RotaryEmbeddingCat(head_dim, in_pixels=False,
                                       ref_feat_shape=[rope_ref_size, rope_ref_size])
        self.window_size = window_size
        # plain floats: a tensor here would break a build under torch.device('meta')
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        norm = partial(nn.LayerNorm, eps=BLOCK_NORM_EPS)
        # Built on the meta device and materialised uninitialised: _reset_parameters sets
        # every block tensor, so ViT-L's 300M weights are drawn once, not twice.
        with torch.device('meta'):
            self.blocks = nn.ModuleList(
                ViTDetBlock(dim=embed_dim, num_heads=num_heads, qkv_bias=qkv_bias,
                            qkv_fused=False, mlp_ratio=mlp_ratio, swiglu_mlp=True,
                            scale_mlp=True, num_prefix_tokens=0, drop_path=rates[i],
                            norm_layer=norm,
                            window_size=window_size if i in window_block_indexes else 0)
                for i in range(depth))
        self.blocks.to_empty(device=self.pos_embed.device)
        self.out_norm = nn.LayerNorm(embed_dim)
        self.out_channels = [embed_dim]
        self.strides = [patch_size]
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Official init: N(0, 0.02) linear weights and position embedding (the official
        truncation at +-2 lies 100 standard deviations out, so it never acts), zero biases,
        unit norms; the patch projection keeps PyTorch's default."""
        nn.init.normal_(self.pos_embed, std=INIT_STD)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=INIT_STD)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        kinds = {type(m) for m in self.blocks.modules() if next(m.parameters(False), None)
                 is not None}
        if not kinds <= {nn.Linear, nn.LayerNorm}:  # a tensor _reset_parameters misses
            raise TypeError(f'ViT blocks hold parameters of {kinds}; initialise them here')

    def abs_pos_embed(self, h: int, w: int) -> Tensor:
        """``(1, h, w, C)``: the pre-training grid's embedding resized (bicubic, no
        anti-aliasing) to ``h x w`` tokens."""
        g = self.pretrain_grid
        pos = self.pos_embed[:, self.num_prefix:].reshape(1, g, g, -1)
        if (h, w) == (g, g):
            return pos
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(h, w), mode='bicubic',
                            align_corners=False)
        return pos.permute(0, 2, 3, 1)

    def rope_table(self, h: int, w: int) -> Tensor:
        """``(h * w, 2 * head_dim)`` sin / cos of the 2-D RoPE over an ``h x w`` grid."""
        return self.rope.get_embed([h, w])

    def forward(self, x: Tensor) -> tuple[Tensor]:
        """``(B, C_in, H, W)`` -> ``((B, embed_dim, ceil(H / p), ceil(W / p)),)``."""
        p = self.patch_size
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.patch_embed(x)  # (B, h, w, C) tokens
        gh, gw = x.shape[1:3]
        x = x + self.abs_pos_embed(gh, gw)
        ropes = {0: self.rope_table(gh, gw)}
        if self.window_size:
            ropes[self.window_size] = self.rope_table(self.window_size, self.window_size)
        use_cp = self.with_cp and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            rope = ropes[block.window_size]
            x = checkpoint(block, x, rope, use_reentrant=False) if use_cp else block(x, rope)
        return (self.out_norm(x).permute(0, 3, 1, 2).contiguous(),)

    def init_weights(self) -> None:
        """Load ``init_cfg.checkpoint`` (a local file), else keep the official init.

        Accepted: EVA-02 pre-trained weights (``model`` / ``module`` / ``model_ema`` entries,
        any patch size and grid: the patch kernel and the position grid are resized
        bicubically, as the official code does) and official Co-DETR checkpoints
        (``backbone.*`` keys); see :func:`codetr.models.converters.vit.load_vit_pretrained`.
        """
        if not self.init_cfg or self.init_cfg.get('type') != 'Pretrained':
            return
        from codetr.models.converters.vit import load_vit_pretrained
        missing, unexpected = load_vit_pretrained(self, self.init_cfg['checkpoint'])
        for kind, keys in (('missing', missing), ('unexpected', unexpected)):
            if keys:
                print_log(f'ViT: {len(keys)} {kind} keys in {self.init_cfg["checkpoint"]}: '
                          f'{keys}', logger='current', level=logging.WARNING)
        self._is_init = True

    @property
    def num_layers(self) -> int:
        """Number of blocks (the depth the layer-wise lr decay counts)."""
        return len(self.blocks)
