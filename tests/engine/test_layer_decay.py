"""Layer-wise lr decay constructor: hand-computed rates of the official ViT-L recipe and the
no-weight-decay groups."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from codetr.engine.layer_decay import is_no_decay, vit_layer_id
from codetr.models.backbones.vit import ViT
from codetr.registry import OPTIM_WRAPPER_CONSTRUCTORS

BASE_LR, WD = 5e-5, 0.01


class TinyDetector(nn.Module):
    """A 24-block ViT (4 channels wide) plus a neck, a norm and position tables."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ViT(embed_dim=8, depth=24, num_heads=2, window_size=2,
                            window_block_indexes=(0, 1), pretrain_img_size=32)
        self.neck = nn.Sequential(nn.Conv2d(8, 4, 1), nn.GroupNorm(2, 4))
        self.rel_pos_h = nn.Parameter(torch.zeros(3, 4))
        self.relative_position_bias_table = nn.Parameter(torch.zeros(5, 2))
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def build(model: nn.Module, **paramwise) -> torch.optim.Optimizer:
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
        type='LayerDecayOptimizerConstructor',  # the official name
        optim_wrapper_cfg=dict(type='OptimWrapper',
                               optimizer=dict(type='AdamW', lr=BASE_LR, weight_decay=WD)),
        paramwise_cfg=paramwise or dict(num_layers=24, layer_decay_rate=0.8)))
    return constructor(model).optimizer


@pytest.fixture(scope='module')
def model() -> TinyDetector:
    return TinyDetector()


@pytest.fixture(scope='module')
def groups(model) -> dict[str, dict]:
    optimizer = build(model)
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in optimizer.param_groups for p in g['params']}


@pytest.mark.parametrize('name, lr', [
    # base_lr * 0.8 ** (24 + 1 - layer_id), the powers of 0.8 worked out by hand
    ('backbone.pos_embed', BASE_LR * 0.003777893186295716),  # id 0: 0.8 ** 25
    ('backbone.patch_embed.proj.weight', BASE_LR * 0.003777893186295716),
    ('backbone.blocks.0.attn.q_proj.weight', BASE_LR * 0.004722366482869645),  # id 1: 0.8 ** 24
    ('backbone.blocks.11.mlp.fc2.weight', BASE_LR * 0.054975581388800036),  # id 12: 0.8 ** 13
    ('backbone.blocks.23.norm1.weight', BASE_LR * 0.8),  # id 24
    ('backbone.out_norm.weight', BASE_LR),  # id 25: outside the blocks
    ('neck.0.weight', BASE_LR),
])
def test_lr_of_each_layer(groups, name, lr):
    assert groups[name]['lr'] == pytest.approx(lr, rel=1e-12)


@pytest.mark.parametrize('name, decayed', [
    ('backbone.pos_embed', False), ('backbone.patch_embed.proj.weight', True),
    ('backbone.patch_embed.proj.bias', False), ('backbone.blocks.3.norm2.weight', False),
    ('backbone.blocks.3.attn.q_proj.bias', False), ('backbone.blocks.3.attn.k_proj.weight', True),
    ('backbone.blocks.3.mlp.norm.weight', False), ('neck.0.weight', True),
    ('neck.1.weight', False), ('rel_pos_h', False), ('relative_position_bias_table', False),
])
def test_weight_decay_only_on_weights(groups, name, decayed):
    assert groups[name]['weight_decay'] == (WD if decayed else 0.0)


def test_frozen_parameters_are_left_out_and_groups_are_shared(groups):
    assert 'frozen.weight' not in groups
    assert groups['backbone.out_norm.weight'] is groups['neck.1.weight']  # id 25, no decay
    assert len({id(g) for g in groups.values()}) == 2 * 26  # ids 0..25, decay / no decay


def test_layer_ids_and_no_decay_rules():
    assert vit_layer_id('backbone.cls_token', 24) == 0
    assert vit_layer_id('backbone.blocks.7.attn.proj.weight', 24) == 8
    assert vit_layer_id('query_head.cls_branches.0.weight', 24) == 25
    assert is_no_decay('backbone.rope.bands', 2) and not is_no_decay('neck.p4.0.weight', 4)


@pytest.mark.parametrize('paramwise, match', [
    (dict(num_layers=12, decay_rate=0.8), 'num_layers=24'),
    (dict(num_layers=24), 'num_layers=..., decay_rate'),
    (dict(num_layers=24, decay_rate=0.8, custom_keys={}), 'custom_keys'),
    (dict(num_layers=24, decay_rate=1.5), 'decay_rate <= 1'),
])
def test_config_errors(model, paramwise, match):
    with pytest.raises(ValueError, match=match):
        build(model, **paramwise)
