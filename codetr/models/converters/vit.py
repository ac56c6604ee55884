"""Official Co-DETR ViT-L (and EVA-02 pre-trained) weights -> codetr's :class:`ViT`.

The official ViT (``mmdet/models/backbones/vit.py`` of Sense-X/Co-DETR, which keeps EVA-02's
names) and codetr's (timm's ``EvaBlock``) differ only inside the blocks:

==========================================  =======================================
official / EVA-02 key                       codetr key
==========================================  =======================================
``blocks.i.attn.q_bias``                    ``blocks.i.attn.q_proj.bias``
``blocks.i.attn.v_bias``                    ``blocks.i.attn.v_proj.bias``
``blocks.i.mlp.w1.*`` (gate, SiLU)          ``blocks.i.mlp.fc1_g.*``
``blocks.i.mlp.w2.*``                       ``blocks.i.mlp.fc1_x.*``
``blocks.i.mlp.ffn_ln.*`` (sub-LN)          ``blocks.i.mlp.norm.*``
``blocks.i.mlp.w3.*``                       ``blocks.i.mlp.fc2.*``
``rope_win.*``, ``rope_glb.*``,             dropped: recomputed, after checking them
``blocks.i.attn.rope.*`` (cos / sin)        against the model's tables and windows
==========================================  =======================================

``pos_embed``, ``patch_embed.proj.*``, ``blocks.i.norm{1,2}.*``, ``blocks.i.attn.{q,k,v}_proj
.weight``, ``blocks.i.attn.proj.*`` and ``out_norm.*`` keep their names; the SFP neck keeps
the official names too. Official checkpoints trained with ``ExpMomentumEMAHook`` also hold
one ``ema_<name with underscores>`` buffer per tensor: the hook swaps the averaged weights
into the model before saving, so the model keys are the EMA weights and the ``ema_*``
copies (the raw weights) are dropped.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn

from codetr.models.backbones.checkpoint_utils import read_checkpoint

from .official import CheckpointConversionError

_RENAMES = (
    (re.compile(r'(blocks\.\d+\.attn\.)q_bias$'), r'\1q_proj.bias'),
    (re.compile(r'(blocks\.\d+\.attn\.)v_bias$'), r'\1v_proj.bias'),
    (re.compile(r'(blocks\.\d+\.mlp\.)w1\.'), r'\1fc1_g.'),
    (re.compile(r'(blocks\.\d+\.mlp\.)w2\.'), r'\1fc1_x.'),
    (re.compile(r'(blocks\.\d+\.mlp\.)ffn_ln\.'), r'\1norm.'),
    (re.compile(r'(blocks\.\d+\.mlp\.)w3\.'), r'\1fc2.'),
)
_OFFICIAL_MARKERS = re.compile(r'(^|\.)blocks\.\d+\.(attn\.q_bias|mlp\.w1\.)')
# RoPE buffers of the official ViT: the module-level tables and, because each attention
# holds the same module, one copy per block that uses it (window blocks; global blocks too
# with ``use_lsj``).
_ROPE_TABLE = re.compile(r'^(?:rope_win|rope_glb|blocks\.(\d+)\.attn\.rope)\.freqs_(cos|sin)$')
# Keys of EVA-02 pre-training that the detection ViT has no use for (the official Co-DETR
# ViT drops them too: class token, masked-image-modelling head, final norm, the attention's
# inner LayerNorm and RoPE tables).
_PRETRAIN_ONLY = re.compile(r'^(cls_token|mask_token|lm_head\.|head\.|norm\.|fc_norm\.)'
                            r'|(^|\.)rope\.|attn\.inner_attn_ln\.')


def is_official_vit_layout(state: Mapping[str, Tensor]) -> bool:
    """True if ``state`` holds official / EVA-02 ViT blocks (``q_bias`` or ``mlp.w1``)."""
    return any(_OFFICIAL_MARKERS.search(k) for k in state)


def _rename(key: str) -> str:
    for pattern, repl in _RENAMES:
        key = pattern.sub(repl, key)
    return key


def check_rope_tables(tables: Mapping[str, Tensor], backbone: nn.Module) -> None:
    """The official RoPE buffers must be what ``backbone`` computes, and the blocks that hold
    the window table must be its window blocks.

    Raises:
        CheckpointConversionError: another window size, window block set, head width or
            RoPE reference size than the checkpoint's.
    """
    for key, table in tables.items():
        side = math.isqrt(table.shape[0])
        ours = backbone.rope_table(side, side).to(table)
        half = ours.shape[1] // 2
        ours = ours[:, half:] if key.endswith('cos') else ours[:, :half]
        if ours.shape != table.shape or not torch.allclose(ours, table, atol=1e-4):
            raise CheckpointConversionError(
                f'backbone.{key} {tuple(table.shape)} is not this ViT\'s RoPE table over a '
                f'{side} x {side} grid: check embed_dim / num_heads and rope_ref_size')
    window = tables.get('rope_win.freqs_cos')
    if window is None:
        return
    side = math.isqrt(window.shape[0])
    if side != backbone.window_size:
        raise CheckpointConversionError(f'the checkpoint attends in {side} x {side} windows; '
                                        f'set the ViT\'s window_size={side}')
    theirs = [int(m.group(1)) for k, v in tables.items()
              if (m := _ROPE_TABLE.match(k)) and m.group(1) and m.group(2) == 'cos'
              and v.shape == window.shape]
    ours = [i for i, block in enumerate(backbone.blocks) if block.window_size]
    if any(_ROPE_TABLE.match(k).group(1) for k in tables) and sorted(theirs) != ours:
        raise CheckpointConversionError(f'the checkpoint\'s window blocks are {sorted(theirs)}, '
                                        f'the model\'s {ours}: fix window_block_indexes')


def vit_official_to_codetr(state: Mapping[str, Tensor],
                           backbone: nn.Module | None = None) -> dict[str, Tensor]:
    """Rename a backbone-level official ViT state dict (no ``backbone.`` prefix) to
    codetr's :class:`ViT` names. RoPE tables are dropped, after :func:`check_rope_tables`
    when ``backbone`` is given. Other keys pass unchanged (loading reports strays)."""
    tables = {k: v for k, v in state.items() if _ROPE_TABLE.match(k)}
    if backbone is not None and tables:
        check_rope_tables(tables, backbone)
    return {_rename(k): v for k, v in state.items() if k not in tables}


def convert_vit_backbone(state_dict: Mapping[str, Tensor],
                         model: nn.Module) -> dict[str, Tensor]:
    """Whole-detector state dict: rename official ViT ``backbone.*`` keys (when the
    checkpoint has them) and drop the official EMA hook's ``ema_*`` buffers."""
    ema = [k for k in state_dict if k.startswith('ema_')]
    if ema:
        print_log(f'dropping {len(ema)} ema_* buffers (the model keys already hold the EMA '
                  f'weights)', logger='current')
    state = {k: v for k, v in state_dict.items() if not k.startswith('ema_')}
    backbone = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    if not is_official_vit_layout(backbone):
        return state
    renamed = vit_official_to_codetr(backbone, getattr(model, 'backbone', None))
    rest = {k: v for k, v in state.items() if not k.startswith('backbone.')}
    return {**{f'backbone.{k}': v for k, v in renamed.items()}, **rest}


def _unwrap(checkpoint: dict) -> dict[str, Tensor]:
    """The weights of an EVA-02 / official / codetr file, without wrapper prefixes; the
    averaged weights (``model_ema``) win, as in the official loader."""
    for wrapper in ('model_ema', 'state_dict', 'model', 'module'):
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    state = {k.removeprefix('module.'): v for k, v in checkpoint.items()
             if isinstance(v, Tensor) and not k.startswith('ema_')}
    if any(k.startswith('backbone.') for k in state):
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    return state


def _resize_pos_embed(pos: Tensor, grid: int, num_prefix: int) -> Tensor:
    """``(1, P + g * g, C)`` -> ``(1, num_prefix + grid * grid, C)``: the square grid
    resized bicubically (the official loader's rule), prefix tokens kept or dropped."""
    g = math.isqrt(pos.shape[1])
    prefix, tokens = pos[:, :pos.shape[1] - g * g], pos[:, pos.shape[1] - g * g:]
    if g != grid:
        tokens = tokens.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
        tokens = F.interpolate(tokens, size=(grid, grid), mode='bicubic', align_corners=False)
        tokens = tokens.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)
    if num_prefix and not prefix.shape[1]:
        raise CheckpointConversionError('the checkpoint\'s pos_embed has no class-token slot; '
                                        'build the ViT with pretrain_use_cls_token=False')
    return torch.cat([prefix[:, :num_prefix], tokens], 1)


def load_vit_pretrained(vit: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load an EVA-02 pre-trained or official Co-DETR ViT file into ``vit`` (non-strict).

    Pre-training-only keys are dropped, block keys renamed, the patch kernel resized to the
    model's patch size and the position grid to its pre-training grid (bicubic).

    Returns:
        ``(missing_keys, unexpected_keys)``.

    Raises:
        ValueError: the file shares no tensor with ``vit``, or shapes differ (another width).
    """
    state = _unwrap(read_checkpoint(path))
    state = vit_official_to_codetr({k: v for k, v in state.items()
                                    if not _PRETRAIN_ONLY.search(k)}, vit)
    kernel = state.get('patch_embed.proj.weight')
    p = vit.patch_size
    if kernel is not None and kernel.shape[-2:] != (p, p):
        state['patch_embed.proj.weight'] = F.interpolate(
            kernel.float(), size=(p, p), mode='bicubic', align_corners=False).to(kernel.dtype)
    if 'pos_embed' in state:
        state['pos_embed'] = _resize_pos_embed(state['pos_embed'], vit.pretrain_grid,
                                               vit.num_prefix)
    own = vit.state_dict()
    if not set(own) & set(state):
        raise ValueError(f'{str(path)!r} shares no tensor name with the ViT (its first keys: '
                         f'{sorted(state)[:5]}); is it an EVA-02 / Co-DETR ViT checkpoint?')
    shapes = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
              for k, v in state.items() if k in own and own[k].shape != v.shape]
    if shapes:
        raise ValueError(f'{str(path)!r} does not fit this ViT ({"; ".join(shapes[:3])}): '
                         f'check embed_dim / depth / mlp_ratio')
    result = vit.load_state_dict(state, strict=False)
    print_log(f'ViT: loaded {len(own) - len(result.missing_keys)}/{len(own)} tensors from '
              f'{path}', logger='current', level=logging.INFO)
    return list(result.missing_keys), list(result.unexpected_keys)
