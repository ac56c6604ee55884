"""Swin checkpoints in MMDetection's, timm's or the original layout -> codetr's ``SwinTransformer``.

codetr's Swin keeps the original Swin release's names, which are also those of the official
Co-DETR Swin checkpoints: the official release (Sense-X/Co-DETR, mmdet 2.25) builds its Swin
backbones with its own ``SwinTransformerV1`` (``projects/models/swin_transformer.py``), a copy
of the original Swin detection code. MMDetection 3.x's ``SwinTransformer`` (the Co-DETR port's
backbone, and the layout of the port's checkpoints and of MMDetection / MMPretrain Swin files)
and timm's Swin use other names. Keys below are after the ``backbone.`` prefix; i = stage,
j = block:

=================  ========================  =================================  ===================
part               codetr / original         MMDetection 3.x                    timm
=================  ========================  =================================  ===================
patch embedding    ``patch_embed.proj``      ``patch_embed.projection``         as codetr
attention          ``layers.i.blocks.j.``    ``stages.i.blocks.j.attn.w_msa.*``  as codetr
                   ``attn.*``
MLP                ``...mlp.fc1`` / ``fc2``  ``...ffn.layers.0.0`` / ``.1``     as codetr
patch merging      ``layers.i.downsample``   ``stages.i.downsample``            ``layers.{i+1}.``
                   (concatenation order)     (``nn.Unfold`` channel order)      ``downsample``
output norms       ``norm{i}``               ``norm{i}``                        none
abs. position      ``absolute_pos_embed``    ``absolute_pos_embed``             none
embedding          (1, C, H, W)              (1, H * W, C)
=================  ========================  =================================  ===================

Patch merging: the original code and timm concatenate the 2x2 neighbours (row, col) =
(0,0), (1,0), (0,1), (1,1), C channels each (index ``k * C + c``); MMDetection's ``nn.Unfold``
interleaves them per channel (index ``4 * c + 2 * row + col``). The reduction weight's columns
and the merging norm's entries are permuted, never retrained.

Dropped on the way in: ``relative_position_index`` buffers (recomputed; each is checked to
equal the recomputed index, else the bias table would be read in another order),
``attn_mask`` buffers (recomputed per input size) and the ImageNet classifier (``norm.*``,
``head.*``).
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from mmengine.logging import print_log
from timm.models.swin_transformer import get_relative_position_index
from torch import Tensor, nn

from codetr.models.backbones.checkpoint_utils import extract_state_dict, read_checkpoint

from .errors import CheckpointConversionError

SWIN_LAYOUTS = ('codetr', 'mmdet', 'timm')
_BUFFERS = ('relative_position_index', 'attn_mask')
_CLASSIFIER = ('norm.', 'head.')
_DOWNSAMPLE = re.compile(r'^layers\.(\d+)\.downsample\.')
_OUT_NORM = re.compile(r'^norm\d+\.')
# (MMDetection, codetr) name pieces inside a block.
_BLOCK_RENAMES = (('.attn.w_msa.', '.attn.'), ('.ffn.layers.0.0.', '.mlp.fc1.'),
                  ('.ffn.layers.1.', '.mlp.fc2.'))
# Concatenation position k of the 2x2 neighbour (row, col) = (k % 2, k // 2) -> its Unfold
# position 2 * row + col. The permutation is its own inverse.
_CONCAT_TO_UNFOLD = [0, 2, 1, 3]


def is_swin_state(state: Mapping[str, Tensor]) -> bool:
    """Whether ``state`` (prefix removed) is a Swin backbone's, in any known layout."""
    return (any(k.startswith('patch_embed.') for k in state)
            and any(re.match(r'^(layers|stages)\.\d+\.blocks\.', k) for k in state))


def detect_swin_layout(state: Mapping[str, Tensor]) -> str:
    """``'codetr'`` (= original release, official Co-DETR), ``'mmdet'`` or ``'timm'``.

    Raises:
        CheckpointConversionError: not a Swin state dict; the message shows example keys.
    """
    if not is_swin_state(state):
        raise CheckpointConversionError(
            f'not a Swin backbone state dict in a known layout ({", ".join(SWIN_LAYOUTS)}): '
            f'expected patch_embed.* and layers.i.blocks.* or stages.i.blocks.* keys, found '
            f'{sorted(state)[:6]} ({len(state)} keys); check the file, and the prefix '
            "(init_cfg.prefix, default 'backbone.')")
    if any(k.startswith('stages.') for k in state):
        return 'mmdet'
    merges = {int(m.group(1)) for m in map(_DOWNSAMPLE.match, state) if m}
    return 'timm' if merges and min(merges) > 0 else 'codetr'


def merge_unfold_to_concat(t: Tensor) -> Tensor:
    """Patch-merging tensor whose last dim (4C) is in Unfold order -> concatenation order."""
    *lead, n = t.shape
    t = t.reshape(*lead, n // 4, 4)[..., _CONCAT_TO_UNFOLD]
    return t.transpose(-1, -2).reshape(*lead, n)


def merge_concat_to_unfold(t: Tensor) -> Tensor:
    """Inverse of :func:`merge_unfold_to_concat`."""
    *lead, n = t.shape
    t = t.reshape(*lead, 4, n // 4)[..., _CONCAT_TO_UNFOLD, :]
    return t.transpose(-1, -2).reshape(*lead, n)


def _check_index(key: str, index: Tensor) -> None:
    """A checkpoint's relative position index must equal the one codetr computes."""
    window = math.isqrt(index.shape[0])
    expected = get_relative_position_index(window, window)
    if index.shape != expected.shape or not torch.equal(index.to(expected.dtype), expected):
        raise CheckpointConversionError(
            f'{key}: this relative position index differs from the standard one of a '
            f'{window}x{window} window, so the bias table would be read in another order')


def _mmdet_key(key: str) -> str:
    if key.startswith('patch_embed.projection.'):
        return 'patch_embed.proj.' + key.removeprefix('patch_embed.projection.')
    if key.startswith('stages.'):
        key = 'layers.' + key.removeprefix('stages.')
        for old, new in _BLOCK_RENAMES:
            key = key.replace(old, new)
    return key


def _timm_key(key: str) -> str:
    match = _DOWNSAMPLE.match(key)
    if match:
        return f'layers.{int(match.group(1)) - 1}.downsample.' + key[match.end():]
    return key


def _pos_embed_to_codetr(value: Tensor, target: Mapping[str, Tensor] | None) -> Tensor:
    """MMDetection's (1, H*W, C) absolute position embedding -> (1, C, H, W)."""
    n, length, c = value.shape
    shape = target.get('absolute_pos_embed') if target else None
    h, w = shape.shape[-2:] if shape is not None else (math.isqrt(length),) * 2
    if h * w != length:
        raise CheckpointConversionError(
            f'absolute_pos_embed: {length} positions do not fill the model\'s {h}x{w} grid '
            '(pretrain_img_size / patch_size)')
    return value.reshape(n, h, w, c).permute(0, 3, 1, 2).contiguous()


def swin_to_codetr(state: Mapping[str, Tensor], layout: str | None = None,
                   target: Mapping[str, Tensor] | None = None
                   ) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """Rename a Swin state dict (prefix removed) to codetr's names.

    Args:
        state: the source state dict.
        layout: one of ``SWIN_LAYOUTS``; detected from the keys when None.
        target: the model's state dict, for the absolute position embedding's grid.

    Returns:
        ``(converted, sources, dropped)``: the new state dict, new key -> source key, and the
        source keys left out (checked buffers, classifier).
    """
    layout = layout or detect_swin_layout(state)
    rename = {'codetr': lambda k: k, 'mmdet': _mmdet_key, 'timm': _timm_key}[layout]
    converted: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    dropped: list[str] = []
    for key, value in state.items():
        leaf = key.rsplit('.', 1)[-1]
        if leaf in _BUFFERS or key.startswith(_CLASSIFIER):
            if leaf == 'relative_position_index':
                _check_index(key, value)
            dropped.append(key)
            continue
        new_key = rename(key)
        if layout == 'mmdet' and '.downsample.' in key:
            value = merge_unfold_to_concat(value)
        elif layout == 'mmdet' and key == 'absolute_pos_embed':
            value = _pos_embed_to_codetr(value, target)
        converted[new_key], sources[new_key] = value, key
    return converted, sources, dropped


def codetr_to_mmdet(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """codetr's Swin names -> MMDetection 3.x's (prefix removed): the inverse map, with each
    block's ``relative_position_index`` added as MMDetection saves it."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new_key = key
        if key.startswith('patch_embed.proj.'):
            new_key = 'patch_embed.projection.' + key.removeprefix('patch_embed.proj.')
        elif key.startswith('layers.'):
            new_key = 'stages.' + key.removeprefix('layers.')
            for old, new in _BLOCK_RENAMES:
                new_key = new_key.replace(new, old)
            if '.downsample.' in key:
                value = merge_concat_to_unfold(value)
            elif key.endswith('.attn.relative_position_bias_table'):
                window = (math.isqrt(value.shape[0]) + 1) // 2
                index_key = new_key.replace('relative_position_bias_table',
                                            'relative_position_index')
                out[index_key] = get_relative_position_index(window, window)
        elif key == 'absolute_pos_embed':
            value = value.flatten(2).transpose(1, 2).contiguous()
        out[new_key] = value
    return out


def swin_needs_conversion(state: Mapping[str, Tensor]) -> bool:
    """A Swin state dict (prefix removed) that codetr's model cannot load as it is."""
    if not is_swin_state(state):
        return False
    return detect_swin_layout(state) != 'codetr' or any(
        k.rsplit('.', 1)[-1] in _BUFFERS or k.startswith(_CLASSIFIER) for k in state)


def infer_swin_args(state: Mapping[str, Tensor]) -> dict:
    """``SwinTransformer`` arguments of a state dict in codetr's layout (prefix removed), read
    from the tensors' shapes: what a config needs to load it."""
    proj = state['patch_embed.proj.weight']  # (C, C_in, p, p)
    blocks: dict[int, int] = {}
    for key in state:
        match = re.match(r'^layers\.(\d+)\.blocks\.(\d+)\.', key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    depths = tuple(blocks[i] for i in range(len(blocks)))
    tables = [state[f'layers.{i}.blocks.0.attn.relative_position_bias_table']
              for i in range(len(depths))]
    embed_dims = proj.shape[0]
    args = dict(
        in_channels=proj.shape[1], embed_dims=embed_dims, patch_size=proj.shape[-1],
        depths=depths, num_heads=tuple(t.shape[1] for t in tables),
        window_size=(math.isqrt(tables[0].shape[0]) + 1) // 2,
        mlp_ratio=state['layers.0.blocks.0.mlp.fc1.weight'].shape[0] / embed_dims,
        qkv_bias='layers.0.blocks.0.attn.qkv.bias' in state,
        patch_norm='patch_embed.norm.weight' in state,
        out_indices=tuple(i for i in range(len(depths)) if f'norm{i}.weight' in state)
        or tuple(range(len(depths))))
    if 'absolute_pos_embed' in state:
        args.update(use_abs_pos_embed=True,
                    pretrain_img_size=tuple(n * proj.shape[-1]
                                            for n in state['absolute_pos_embed'].shape[-2:]))
    return args


def fit_swin_state(module: nn.Module, converted: dict[str, Tensor],
                   path: str) -> dict[str, Tensor]:
    """Check a converted state dict against ``module``: shapes, unknown and absent keys.

    ImageNet classifiers have no per-output norms: absent ``norm{i}`` keep their init, and
    output norms the module does not have (other ``out_indices``) are left out; both logged.
    """
    own = module.state_dict()
    wrong = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
             for k, v in converted.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise CheckpointConversionError(
            f'{path} does not fit this SwinTransformer (check embed_dims, depths, num_heads, '
            'window_size, mlp_ratio and pretrain_img_size against the checkpoint\'s '
            'model):\n  ' + '\n  '.join(wrong[:8]))
    unused_norms = [k for k in converted if k not in own and _OUT_NORM.match(k)]
    unexpected = [k for k in converted if k not in own and k not in unused_norms]
    missing = [k for k in own if k not in converted]
    fresh = [k for k in missing if _OUT_NORM.match(k)]
    absent = [k for k in missing if k not in fresh]
    if unexpected or absent:
        raise CheckpointConversionError(
            f'{path} and this SwinTransformer do not match:\n'
            f'  in the checkpoint only ({len(unexpected)}): {unexpected[:10]}\n'
            f'  in the model only ({len(absent)}): {absent[:10]}\n'
            'check depths / out_indices against the checkpoint\'s model')
    if fresh or unused_norms:
        print_log(f'SwinTransformer: {path} has no output norms {fresh} (ImageNet files do not; '
                  f'they keep their initial values); output norms not in the model, left out: '
                  f'{unused_norms}', logger='current', level=logging.INFO)
    return {k: v for k, v in converted.items() if k in own}


def load_swin_checkpoint(module: nn.Module, path: str | Path, prefix: str = 'backbone.',
                         convert_weights: bool | None = None) -> str:
    """Load a local Swin checkpoint of any known layout into a codetr ``SwinTransformer``.

    Args:
        module: the backbone.
        path: a local file: ImageNet classifier (original release, MMPretrain, timm) or a
            detector (official Co-DETR, the MMDetection port, codetr) checkpoint.
        prefix: keys under it are taken when present (a detector's ``backbone.``).
        convert_weights: MMDetection's flag ("the file is in the original layout"); only
            compared with the detected layout, and a contradiction is logged.

    Returns:
        The detected layout.

    Raises:
        CheckpointConversionError: unknown layout (with example keys), a shape mismatch
            (key and both shapes), or keys found on one side only.
    """
    state = extract_state_dict(read_checkpoint(path), prefix)
    layout = detect_swin_layout(state)
    if convert_weights is not None and convert_weights == (layout == 'mmdet'):
        print_log(f'SwinTransformer: convert_weights={convert_weights}, but {path} is in the '
                  f'{layout} layout; loading it as such', logger='current', level=logging.INFO)
    converted, _, dropped = swin_to_codetr(state, layout, module.state_dict())
    module.load_state_dict(fit_swin_state(module, converted, str(path)), strict=False)
    print_log(f'SwinTransformer: loaded {len(converted)} tensors from {path} ({layout} layout; '
              f'{len(dropped)} recomputed buffers / classifier tensors left out)',
              logger='current')
    return layout
