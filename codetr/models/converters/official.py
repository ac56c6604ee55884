"""Official Co-DETR checkpoints (Sense-X release, MMDetection 3.x port) -> codetr state dicts.

The official code and its port hold the collaborative branch under list indices; codetr
names it. Everything else (backbone, neck, one-to-one head, transformer) already has the
official names. The renames:

=============================================  ================================================
official key                                   codetr key
=============================================  ================================================
``query_head.downsample.*``                    ``adapter.downsample.0.*`` (the extra level)
``rpn_head.*``                                 ``aux_heads.<1st two-stage head>.rpn_head.*``
``roi_head.i.*``                               ``aux_heads.<i-th two-stage head>.roi_head.*``
``bbox_head.j.*``                              ``aux_heads.<j-th one-stage head>.*``
``query_head.transformer.aux_pos_trans.k.*``   ``query_head.pos_query_generators.<k>.pos_trans.*``
``...aux_pos_trans_norm.k.*``                  ``...pos_query_generators.<k>.pos_trans_norm.*``
``...pos_feats_trans.k.*`` (Co-Deform-DETR)    ``...pos_query_generators.<k>.feats_trans.*``
``...pos_feats_norm.k.*`` (Co-Deform-DETR)     ``...pos_query_generators.<k>.feats_norm.*``
``...head_pos_embed.weight`` row k             ``...pos_query_generators.<k>.head_pos_embed``
=============================================  ================================================

``k`` is the official head index, which counts the RoI (two-stage) heads first and the dense
(one-stage) heads after them, each group in the model's ``aux_heads`` order; an aux head's
kind is its ``eval_kind`` class attribute. A checkpoint saved by a DDP wrapper (``module.``
prefix) is accepted.

A Swin backbone (``backbone.*``) in MMDetection's or timm's layout, or carrying the buffers
and classifier keys of the official release, goes through ``converters.swin.swin_to_codetr``
(``codetr/models/converters/swin.py`` has its table); an official ViT backbone
(``backbone.blocks.i.attn.q_bias`` ...) is renamed by
:func:`codetr.models.converters.vit.convert_vit_backbone`, which also drops the official EMA
hook's ``ema_*`` buffers; other backbones keep their names.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

from mmengine.logging import print_log
from torch import Tensor, nn

from .errors import CheckpointConversionError
from .swin import swin_needs_conversion, swin_to_codetr

# Official parameter families of the positive-query projections (CoDinoTransformer /
# CoDeformableDetrTransformer) -> the parameter's name inside a PositiveQueryGenerator.
_POS_QUERY_PARAMS = {
    'aux_pos_trans': 'pos_trans',
    'aux_pos_trans_norm': 'pos_trans_norm',
    'pos_feats_trans': 'feats_trans',
    'pos_feats_norm': 'feats_norm',
}
_POS_QUERY_KEY = re.compile(r'^query_head\.transformer\.(' + '|'.join(_POS_QUERY_PARAMS)
                            + r')\.(\d+)\.(.+)$')
_HEAD_POS_EMBED = 'query_head.transformer.head_pos_embed.weight'
# Prefixes codetr adds for the collaborative branch; deployment drops them.
AUX_PREFIXES = ('aux_heads.', 'adapter.', 'query_head.pos_query_generators.')
# Prefixes the official layout uses for the same parameters.
OFFICIAL_AUX_PREFIXES = ('rpn_head.', 'roi_head.', 'bbox_head.', 'query_head.downsample.',
                         'query_head.transformer.aux_pos_trans', 'query_head.transformer.pos_feats',
                         _HEAD_POS_EMBED)


def official_head_order(model: nn.Module) -> list[str]:
    """The model's aux head names in official index order: two-stage heads, then the rest."""
    heads = getattr(model, 'aux_heads', None) or {}
    names = list(heads.keys())
    two_stage = [n for n in names if getattr(heads[n], 'eval_kind', None) == 'two-stage']
    return two_stage + [n for n in names if n not in two_stage]


def _backbone_part(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k.removeprefix('module.').removeprefix('backbone.'): v
            for k, v in state_dict.items() if k.removeprefix('module.').startswith('backbone.')}


def is_official_layout(state_dict: Mapping[str, Tensor]) -> bool:
    """True if ``state_dict`` has the official aux / adapter keys and none of codetr's, or a
    Swin backbone that needs renaming (MMDetection / timm layout, official buffers)."""
    keys = [k.removeprefix('module.') for k in state_dict]
    official = any(k.startswith(OFFICIAL_AUX_PREFIXES) for k in keys)
    ours = any(k.startswith(AUX_PREFIXES) for k in keys)
    return (official and not ours) or swin_needs_conversion(_backbone_part(state_dict))


def _name_maps(model: nn.Module, aux_head_order: Sequence[str] | None
               ) -> tuple[list[str], list[str], list[str]]:
    """(all heads in official order, two-stage heads, one-stage heads)."""
    heads = getattr(model, 'aux_heads', None) or {}
    order = list(aux_head_order) if aux_head_order is not None else official_head_order(model)
    if sorted(order) != sorted(heads.keys()):
        raise CheckpointConversionError(
            f'aux_head_order={order} must list exactly the model\'s aux heads '
            f'{list(heads.keys())} (official index order: RoI heads first, then dense heads)')
    two_stage = [n for n in order if getattr(heads[n], 'eval_kind', None) == 'two-stage']
    return order, two_stage, [n for n in order if n not in two_stage]


def _indexed(names: list[str], index: int) -> str | None:
    return names[index] if index < len(names) else None


def _rename(key: str, order: list[str], two_stage: list[str],
            one_stage: list[str]) -> str | None:
    """codetr name of one official key; None when the model has no such aux head."""
    if key.startswith('query_head.downsample.'):
        return 'adapter.downsample.0.' + key.removeprefix('query_head.downsample.')
    if key.startswith('rpn_head.'):
        name = _indexed(two_stage, 0)
        return None if name is None else f'aux_heads.{name}.{key}'
    for prefix, names, sub in (('roi_head.', two_stage, 'roi_head.'),
                               ('bbox_head.', one_stage, '')):
        if key.startswith(prefix):
            index, rest = key.removeprefix(prefix).split('.', 1)
            name = _indexed(names, int(index))
            return None if name is None else f'aux_heads.{name}.{sub}{rest}'
    match = _POS_QUERY_KEY.match(key)
    if match:
        family, index, rest = match.groups()
        name = _indexed(order, int(index))
        if name is None:
            return None
        return f'query_head.pos_query_generators.{name}.{_POS_QUERY_PARAMS[family]}.{rest}'
    return key


def _split_head_pos_embed(weight: Tensor, order: list[str]) -> dict[str, Tensor]:
    """Official (K, D) embedding -> one (D,) parameter per generator, official row order."""
    return {f'query_head.pos_query_generators.{name}.head_pos_embed': weight[i].clone()
            for i, name in enumerate(order[:weight.size(0)])}


def _check(converted: dict[str, Tensor], sources: dict[str, str], dropped: list[str],
           model: nn.Module, strict: bool, skip_mismatched: bool = False) -> dict[str, Tensor]:
    """Raise on (or, ``skip_mismatched``, leave out) shape mismatches; report (strict: raise
    on) keys matched in one side only.

    ``sources`` maps a converted key to its official name, for the messages.
    """
    target = model.state_dict()
    wrong = [k for k, v in converted.items() if k in target and v.shape != target[k].shape]
    mismatched = [f'{k} (official {sources[k]}): checkpoint {tuple(converted[k].shape)} vs '
                  f'model {tuple(target[k].shape)}' for k in wrong]
    if mismatched and not skip_mismatched:
        raise CheckpointConversionError(
            'shape mismatch between the official checkpoint and the model (is the config the '
            'checkpoint\'s?):\n  ' + '\n  '.join(mismatched))
    if mismatched:  # e.g. an Objects365 model's 365-class layers, fine-tuned on 80 classes
        print_log(f'left out {len(wrong)} tensors whose shape differs from the model\'s (they '
                  'keep their initial values):\n  ' + '\n  '.join(mismatched),
                  logger='current', level=logging.WARNING)
        converted = {k: v for k, v in converted.items() if k not in wrong}
        target = {k: v for k, v in target.items() if k not in wrong}
    unexpected = sorted(k for k in converted if k not in target) + dropped
    missing = sorted(k for k in target if k not in converted)
    if not (unexpected or missing):
        return converted
    message = ('official checkpoint and model do not match:\n'
               f'  in the checkpoint but not the model ({len(unexpected)}): {unexpected}\n'
               f'  in the model but not the checkpoint ({len(missing)}): {missing}')
    if strict:
        raise CheckpointConversionError(message + '\nconvert for the checkpoint\'s own config, '
                                        'or pass strict=False to keep the matching keys')
    print_log(message, logger='current', level=logging.WARNING)
    return {k: v for k, v in converted.items() if k in target}


def _convert_swin_backbone(state_dict: Mapping[str, Tensor], model: nn.Module
                           ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The ``backbone.*`` part renamed by the Swin map, or nothing if it needs no renaming."""
    part = _backbone_part(state_dict)
    if not swin_needs_conversion(part):
        return {}, {}
    backbone = getattr(model, 'backbone', None)
    target = backbone.state_dict() if backbone is not None else None
    swin, sources, _ = swin_to_codetr(part, target=target)
    return ({f'backbone.{k}': v for k, v in swin.items()},
            {f'backbone.{k}': f'backbone.{v}' for k, v in sources.items()})


def convert_official(state_dict: Mapping[str, Tensor], model: nn.Module,
                     aux_head_order: Sequence[str] | None = None,
                     strict: bool = True, skip_mismatched: bool = False) -> dict[str, Tensor]:
    """Rename an official Co-DINO / Co-Deformable-DETR state dict for a codetr ``model``.

    Pure: the input is not modified and the model is only read (names, kinds, shapes).

    Args:
        state_dict: the official ``{key: tensor}`` (a checkpoint's ``state_dict``).
        model: the codetr ``CoDETR`` built from the matching config; its ``aux_heads`` give
            the names and kinds that the official indices map to.
        aux_head_order: the model's aux head names in official index order; by default the
            two-stage heads (``eval_kind == 'two-stage'``) first, then the others, each in
            ``model.aux_heads`` order (the official configs list RoI heads before dense ones).
        strict: raise :class:`CheckpointConversionError` listing the keys present on one
            side only (both directions); False logs them and drops the unexpected ones.
        skip_mismatched: leave out (and log) tensors whose shape differs from the model's
            instead of raising, as when fine-tuning an Objects365 model on COCO (class layers).

    Returns:
        A new state dict in codetr's names (tensors shared with the input, except the
        split ``head_pos_embed`` rows), loadable with ``model.load_state_dict(..., strict)``.

    Raises:
        CheckpointConversionError: on a shape mismatch (key and both shapes), a bad
            ``aux_head_order``, or (strict) unmatched keys.
    """
    from .vit import convert_vit_backbone  # imports this module's error class
    state_dict = convert_vit_backbone(
        {k.removeprefix('module.'): v for k, v in state_dict.items()}, model)
    order, two_stage, one_stage = _name_maps(model, aux_head_order)
    converted, sources = _convert_swin_backbone(state_dict, model)
    swin_done = bool(converted)
    dropped: list[str] = []
    for key, value in state_dict.items():
        key = key.removeprefix('module.')
        if swin_done and key.startswith('backbone.'):
            continue  # a Swin backbone, converted above
        if key == _HEAD_POS_EMBED:
            rows = _split_head_pos_embed(value, order)
            converted.update(rows)
            sources.update({new_key: key for new_key in rows})
            continue
        new_key = _rename(key, order, two_stage, one_stage)
        if new_key is None:
            dropped.append(key)
        else:
            converted[new_key], sources[new_key] = value, key
    return _check(converted, sources, dropped, model, strict, skip_mismatched)


def drop_aux(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state dict without the collaborative branch (aux heads, their positive-query
    generators and the adapter): what a K = 0 model loads for deployment."""
    return {k: v for k, v in state_dict.items() if not k.startswith(AUX_PREFIXES)}
