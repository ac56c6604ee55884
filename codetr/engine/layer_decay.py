"""Layer-wise learning-rate decay for ViT backbones (BEiT / EVA-02 fine-tuning recipe).

Block ``i`` of the backbone learns at ``lr * decay_rate ** (num_layers - i)``, the patch and
position embeddings at ``lr * decay_rate ** (num_layers + 1)``, and everything else (the
backbone's output norm, the neck, the heads) at ``lr``: layer ids 0 (embeddings), ``i + 1``
(block i) and ``num_layers + 1`` (rest), scale ``decay_rate ** (num_layers + 1 - id)``, as
the official Co-DETR ``LayerDecayOptimizerConstructor`` computes them (its ``num_layers + 2``
groups). Norm weights, biases, position embeddings and relative-position / rotary tables
get no weight decay.
"""
from __future__ import annotations

import json
import re

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn

from codetr.registry import OPTIM_WRAPPER_CONSTRUCTORS

_EMBEDDINGS = ('backbone.cls_token', 'backbone.mask_token', 'backbone.pos_embed')
_BLOCK = re.compile(r'^backbone\.blocks\.(\d+)\.')
# Parameter names (last part) that are positions, not weights: never decayed.
_POSITION_NAMES = ('pos_embed', 'absolute_pos_embed', 'cls_token', 'mask_token')
_TABLE_PARTS = ('relative_position_bias_table', 'rel_pos', 'rope')


def vit_layer_id(name: str, num_layers: int) -> int:
    """Layer id of parameter ``name`` of a detector with a ViT ``backbone``: 0 for the patch /
    position embeddings, ``i + 1`` for ``backbone.blocks.i.*``, ``num_layers + 1`` else."""
    if name in _EMBEDDINGS or name.startswith('backbone.patch_embed.'):
        return 0
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    return num_layers + 1


def is_no_decay(name: str, ndim: int) -> bool:
    """Norm weights and biases (every 1-D tensor), position embeddings, relative-position
    and rotary tables take no weight decay."""
    return (ndim <= 1 or name.endswith('.bias') or name.rsplit('.', 1)[-1] in _POSITION_NAMES
            or any(part in name for part in _TABLE_PARTS))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(
    name=['LayerDecayOptimWrapperConstructor', 'LayerDecayOptimizerConstructor'])
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Optimizer wrapper constructor with layer-wise lr decay over a ViT backbone's blocks.

    ``paramwise_cfg``: ``num_layers`` (the backbone's depth, e.g. 24), ``decay_rate`` (e.g.
    0.8; the official configs' ``layer_decay_rate`` is accepted), ``decay_type='layer_wise'``.
    Param groups hold ``lr``, ``weight_decay`` (0 or the optimizer's) and ``lr_scale``.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        if 'layer_decay_rate' in paramwise_cfg:  # the official key
            paramwise_cfg['decay_rate'] = paramwise_cfg.pop('layer_decay_rate')
        unknown = set(paramwise_cfg) - {'num_layers', 'decay_rate', 'decay_type'}
        if unknown or not {'num_layers', 'decay_rate'} <= set(paramwise_cfg):
            raise ValueError(f'LayerDecayOptimWrapperConstructor takes paramwise_cfg='
                             f'dict(num_layers=..., decay_rate=...), got {paramwise_cfg} '
                             f'(custom_keys and the *_mult options do not combine with it)')
        if paramwise_cfg.get('decay_type', 'layer_wise') != 'layer_wise':
            raise ValueError("only decay_type='layer_wise' is implemented")
        if not 0 < paramwise_cfg['decay_rate'] <= 1 or paramwise_cfg['num_layers'] < 1:
            raise ValueError(f'need 0 < decay_rate <= 1 and num_layers >= 1, got '
                             f'{paramwise_cfg}')
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        if self.base_lr is None:
            raise ValueError('LayerDecayOptimWrapperConstructor needs optimizer.lr')

    def add_params(self, params: list[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: int | float | None = None) -> None:
        """Append one param group per (layer id, decay / no decay) of ``module``'s trainable
        parameters to ``params``."""
        num_layers = self.paramwise_cfg['num_layers']
        rate = self.paramwise_cfg['decay_rate']
        depth = getattr(getattr(module, 'backbone', None), 'num_layers', num_layers)
        if depth != num_layers:
            raise ValueError(f'paramwise_cfg.num_layers={num_layers} but the backbone has '
                             f'{depth} blocks; set num_layers={depth}')
        groups: dict[str, dict] = {}
        names: dict[str, list[str]] = {}
        for name, param in module.named_parameters(prefix=prefix.rstrip('.')):
            if not param.requires_grad:
                continue
            layer_id = vit_layer_id(name, num_layers)
            no_decay = is_no_decay(name, param.ndim)
            key = f'layer_{layer_id}_{"no_decay" if no_decay else "decay"}'
            if key not in groups:
                scale = rate ** (num_layers + 1 - layer_id)
                groups[key] = dict(params=[], lr=self.base_lr * scale, lr_scale=scale)
                if no_decay or self.base_wd is not None:  # else the optimizer's default
                    groups[key]['weight_decay'] = 0.0 if no_decay else self.base_wd
                names[key] = []
            groups[key]['params'].append(param)
            names[key].append(name)
        summary = {k: dict(lr_scale=g['lr_scale'], weight_decay=g.get('weight_decay'),
                           params=len(g['params']), first=names[k][0]) for k, g in groups.items()}
        print_log(f'layer-wise lr decay {rate} over {num_layers} layers: '
                  f'{json.dumps(summary)}', logger='current')
        params.extend(groups.values())
