"""The official Co-DETR ViT (Sense-X/Co-DETR ``mmdet/models/backbones/vit.py``) written out
as plain tensor functions over an official-layout state dict, for checking codetr's ViT.

Independent of codetr: its own key table, RoPE formula (``VisionRotaryEmbeddingFast`` /
``get_rope``), window loop, attention, SwiGLU and position-embedding resize, following the
official code step by step (with its hard-coded ViT-L RoPE width generalised to the head
width). Nothing here imports codetr.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK_EPS, OUT_EPS = 1e-6, 1e-5  # block LayerNorms (eps 1e-6), out_norm (nn.LayerNorm default)


@dataclass
class OfficialViTConfig:
    """Arguments of the official ``ViT`` that shape its state dict."""
    embed_dim: int = 32
    depth: int = 3
    num_heads: int = 2
    patch_size: int = 16
    pretrain_img_size: int = 64
    window_size: int = 4
    window_block_indexes: tuple[int, ...] = (0, 2)
    mlp_ratio: float = 4 * 2 / 3
    in_chans: int = 3
    pt_hw_seq_len: int = 16
    use_lsj: bool = False  # global blocks then hold a fixed table for img_size
    img_size: int = 128

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


def rope_freqs(h: int, w: int, head_dim: int, pt_seq_len: int = 16) -> tuple[Tensor, Tensor]:
    """Official ``get_rope`` / ``VisionRotaryEmbeddingFast``: ``(cos, sin)`` of shape
    ``(h * w, head_dim)``; rows first, then columns, each frequency repeated twice."""
    dim = head_dim // 2
    freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[:dim // 2].float() / dim))
    fh = torch.einsum('i,f->if', torch.arange(h) / h * pt_seq_len, freqs).repeat_interleave(2, -1)
    fw = torch.einsum('i,f->if', torch.arange(w) / w * pt_seq_len, freqs).repeat_interleave(2, -1)
    grid = torch.cat([fh[:, None].expand(h, w, dim), fw[None].expand(h, w, dim)], -1)
    grid = grid.reshape(h * w, 2 * dim)
    return grid.cos(), grid.sin()


def rotate_half(x: Tensor) -> Tensor:
    """Official ``rotate_half``: pairs (x0, x1) -> (-x1, x0)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    return torch.stack((-x2, x1), -1).flatten(-2)


def official_state(cfg: OfficialViTConfig, seed: int = 0) -> dict[str, Tensor]:
    """An official-layout ViT state dict with random values (norms too), RoPE buffers as
    the official module registers them: ``rope_win`` plus one copy per window block's
    attention (and ``rope_glb`` per global block with ``use_lsj``)."""
    g = torch.Generator().manual_seed(seed)
    c, hd, hid, p = cfg.embed_dim, cfg.head_dim, cfg.hidden, cfg.patch_size
    grid = cfg.pretrain_img_size // p
    shapes = {'pos_embed': (1, 1 + grid * grid, c),
              'patch_embed.proj.weight': (c, cfg.in_chans, p, p), 'patch_embed.proj.bias': (c,),
              'out_norm.weight': (c,), 'out_norm.bias': (c,)}
    for i in range(cfg.depth):
        b = f'blocks.{i}.'
        shapes.update({b + 'norm1.weight': (c,), b + 'norm1.bias': (c,),
                       b + 'attn.q_proj.weight': (c, c), b + 'attn.k_proj.weight': (c, c),
                       b + 'attn.v_proj.weight': (c, c), b + 'attn.q_bias': (c,),
                       b + 'attn.v_bias': (c,), b + 'attn.proj.weight': (c, c),
                       b + 'attn.proj.bias': (c,), b + 'norm2.weight': (c,),
                       b + 'norm2.bias': (c,), b + 'mlp.w1.weight': (hid, c),
                       b + 'mlp.w1.bias': (hid,), b + 'mlp.w2.weight': (hid, c),
                       b + 'mlp.w2.bias': (hid,), b + 'mlp.ffn_ln.weight': (hid,),
                       b + 'mlp.ffn_ln.bias': (hid,), b + 'mlp.w3.weight': (c, hid),
                       b + 'mlp.w3.bias': (c,)})
    state = {k: torch.randn(s, generator=g) * (0.2 if len(s) > 1 else 0.5)
             + (1.0 if k.endswith(('norm1.weight', 'norm2.weight', 'ffn_ln.weight')) else 0.0)
             for k, s in shapes.items()}
    tables = {'rope_win': rope_freqs(cfg.window_size, cfg.window_size, hd, cfg.pt_hw_seq_len)}
    if cfg.use_lsj:
        side = cfg.img_size // p
        tables['rope_glb'] = rope_freqs(side, side, hd, cfg.pt_hw_seq_len)
    for name, (cos, sin) in tables.items():
        users = [f'blocks.{i}.attn.rope' for i in range(cfg.depth)
                 if (i in cfg.window_block_indexes) == (name == 'rope_win')]
        for prefix in [name] + users:
            state[f'{prefix}.freqs_cos'], state[f'{prefix}.freqs_sin'] = cos, sin
    return state


def attention(x: Tensor, sd: dict, b: str, heads: int, pt_seq_len: int) -> Tensor:
    """Official ``Attention.forward`` on ``(B, H, W, C)`` tokens (xattn off)."""
    bsz, h, w, c = x.shape
    x = x.reshape(bsz, h * w, c)
    q = F.linear(x, sd[b + 'attn.q_proj.weight'], sd[b + 'attn.q_bias'])
    k = F.linear(x, sd[b + 'attn.k_proj.weight'])
    v = F.linear(x, sd[b + 'attn.v_proj.weight'], sd[b + 'attn.v_bias'])
    q, k, v = (t.reshape(bsz, h * w, heads, -1).permute(0, 2, 1, 3) for t in (q, k, v))
    cos, sin = rope_freqs(h, w, c // heads, pt_seq_len)
    q, k = (t * cos + rotate_half(t) * sin for t in (q, k))
    attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    x = (attn @ v).transpose(1, 2).reshape(bsz, h * w, c)
    return F.linear(x, sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias']).view(bsz, h, w, c)


def block(x: Tensor, sd: dict, i: int, cfg: OfficialViTConfig) -> Tensor:
    """Official ``Block.forward``: LN, attention (in zero-padded windows, one at a time,
    for window blocks), residual, SwiGLU with sub-LN, residual."""
    b, c = f'blocks.{i}.', cfg.embed_dim
    shortcut = x
    x = F.layer_norm(x, (c,), sd[b + 'norm1.weight'], sd[b + 'norm1.bias'], BLOCK_EPS)
    ws = cfg.window_size if i in cfg.window_block_indexes else 0
    if ws:
        h, w = x.shape[1:3]
        padded = F.pad(x, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        out = torch.empty_like(padded)
        for r in range(0, padded.shape[1], ws):
            for col in range(0, padded.shape[2], ws):
                out[:, r:r + ws, col:col + ws] = attention(
                    padded[:, r:r + ws, col:col + ws], sd, b, cfg.num_heads, cfg.pt_hw_seq_len)
        x = out[:, :h, :w]
    else:
        x = attention(x, sd, b, cfg.num_heads, cfg.pt_hw_seq_len)
    x = shortcut + x
    y = F.layer_norm(x, (c,), sd[b + 'norm2.weight'], sd[b + 'norm2.bias'], BLOCK_EPS)
    hidden = F.silu(F.linear(y, sd[b + 'mlp.w1.weight'], sd[b + 'mlp.w1.bias'])) * \
        F.linear(y, sd[b + 'mlp.w2.weight'], sd[b + 'mlp.w2.bias'])
    hidden = F.layer_norm(hidden, (cfg.hidden,), sd[b + 'mlp.ffn_ln.weight'],
                          sd[b + 'mlp.ffn_ln.bias'], BLOCK_EPS)
    return x + F.linear(hidden, sd[b + 'mlp.w3.weight'], sd[b + 'mlp.w3.bias'])


def vit_forward(sd: dict, img: Tensor, cfg: OfficialViTConfig) -> Tensor:
    """Official ``ViT.forward`` (inputs already a multiple of the patch size):
    ``(B, 3, H, W)`` -> ``(B, C, H / p, W / p)``."""
    x = F.conv2d(img, sd['patch_embed.proj.weight'], sd['patch_embed.proj.bias'],
                 stride=cfg.patch_size).permute(0, 2, 3, 1)
    h, w = x.shape[1:3]
    pos = sd['pos_embed'][:, 1:]
    size = math.isqrt(pos.shape[1])
    pos = pos.reshape(1, size, size, -1)
    if (size, size) != (h, w):
        pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(h, w), mode='bicubic',
                            align_corners=False).permute(0, 2, 3, 1)
    x = x + pos
    for i in range(cfg.depth):
        x = block(x, sd, i, cfg)
    x = F.layer_norm(x, (cfg.embed_dim,), sd['out_norm.weight'], sd['out_norm.bias'], OUT_EPS)
    return x.permute(0, 3, 1, 2)
