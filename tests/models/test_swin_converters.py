"""Swin checkpoint layouts: MMDetection's patch-merging order against nn.Unfold itself, the
codetr -> MMDetection -> codetr round trip, timm / original-release files through init_cfg,
layout detection, and the errors for foreign, wrong-shaped and mismatched checkpoints."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from codetr.models.backbones.swin import SwinTransformer
from codetr.models.converters import (
    CheckpointConversionError,
    codetr_to_mmdet,
    convert_official,
    detect_swin_layout,
    is_official_layout,
    swin_needs_conversion,
    swin_to_codetr,
)
from codetr.models.converters.swin import merge_concat_to_unfold, merge_unfold_to_concat

TINY = dict(embed_dims=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4,
            drop_path_rate=0.0)


def tiny(seed: int = 0, **overrides) -> SwinTransformer:
    torch.manual_seed(seed)
    model = SwinTransformer(**{**TINY, **overrides})
    model.init_weights()
    with torch.no_grad():  # non-trivial norms and biases, so a wrong map shows
        for name, param in model.named_parameters():
            if 'norm' in name or name.endswith('bias'):
                param.add_(torch.randn_like(param) * 0.1)
    return model


def test_unfold_order_permutation_matches_nn_unfold():
    """A reduction weight in MMDetection's Unfold order, permuted, applied to the original
    release's 2x2 concatenation gives the same numbers as the weight on Unfold's output."""
    x = torch.randn(2, 3, 4, 6)  # (B, C, H, W)
    unfolded = nn.Unfold(kernel_size=2, stride=2)(x).transpose(1, 2)  # (B, L, 4C)
    rows = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    concat = torch.cat([rows[:, 0::2, 0::2], rows[:, 1::2, 0::2], rows[:, 0::2, 1::2],
                        rows[:, 1::2, 1::2]], -1).flatten(1, 2)  # (B, L, 4C)
    weight = torch.randn(5, 12)
    torch.testing.assert_close(unfolded @ weight.T, concat @ merge_unfold_to_concat(weight).T)
    scale = torch.randn(12)  # a LayerNorm's per-channel weight, before the reduction
    torch.testing.assert_close((unfolded * scale) @ weight.T,
                               (concat * merge_unfold_to_concat(scale))
                               @ merge_unfold_to_concat(weight).T)
    torch.testing.assert_close(merge_concat_to_unfold(merge_unfold_to_concat(weight)), weight)


def test_codetr_mmdet_codetr_round_trip():
    model = tiny(use_abs_pos_embed=True, pretrain_img_size=32)
    own = model.state_dict()
    mmdet = codetr_to_mmdet(own)
    # hand examples of MMDetection's names
    assert {'patch_embed.projection.weight', 'stages.0.blocks.1.attn.w_msa.qkv.weight',
            'stages.1.blocks.0.ffn.layers.0.0.bias', 'stages.1.blocks.0.ffn.layers.1.weight',
            'stages.2.downsample.reduction.weight', 'stages.0.blocks.0.attn.w_msa.'
            'relative_position_index', 'norm3.weight'} <= set(mmdet)
    assert mmdet['absolute_pos_embed'].shape == (1, 64, 16)
    assert not torch.equal(mmdet['stages.0.downsample.norm.weight'],
                           own['layers.0.downsample.norm.weight'])
    assert detect_swin_layout(mmdet) == 'mmdet' and swin_needs_conversion(mmdet)
    back, sources, dropped = swin_to_codetr(mmdet, target=own)
    assert back.keys() == own.keys()
    for key, value in own.items():
        assert torch.equal(back[key], value), key
    assert sources['layers.0.blocks.0.mlp.fc1.weight'] == 'stages.0.blocks.0.ffn.layers.0.0.weight'
    assert len(dropped) == sum(TINY['depths'])  # the relative position indices, checked


def test_port_checkpoint_converts_inside_convert_official():
    """A detector checkpoint whose backbone is in MMDetection's layout: recognised as needing
    conversion, and converted with the rest of the detector's keys."""
    holder = nn.ModuleDict({'backbone': tiny(), 'neck': nn.Linear(2, 3)})
    own = holder.state_dict()
    port = {f'backbone.{k}': v for k, v in codetr_to_mmdet(holder.backbone.state_dict()).items()}
    port.update({k: v for k, v in own.items() if k.startswith('neck.')})
    assert is_official_layout(port) and not is_official_layout(own)
    converted = convert_official(port, holder)
    assert converted.keys() == own.keys()
    assert all(torch.equal(converted[k], v) for k, v in own.items())


def original_release_file(model: SwinTransformer) -> dict:
    """An ImageNet file of the original Swin release made from ``model``: the model's names,
    plus the buffers and classifier that file carries, and no per-output norms."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('norm')}
    state['layers.0.blocks.0.attn.relative_position_index'] = \
        model.layers[0].blocks[0].attn.relative_position_index.clone()
    state['layers.0.blocks.1.attn_mask'] = torch.zeros(4, 16, 16)
    state.update({'norm.weight': torch.ones(128), 'head.weight': torch.zeros(10, 128),
                  'head.bias': torch.zeros(10)})
    return {'model': state}


def timm_file(model: SwinTransformer) -> dict:
    """The same weights in timm's layout: patch merging at the start of the next stage."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith('norm'):
            continue
        if '.downsample.' in key:
            stage = int(key.split('.')[1])
            key = key.replace(f'layers.{stage}.', f'layers.{stage + 1}.', 1)
        state[key] = value
    state['head.fc.weight'] = torch.zeros(10, 128)
    return state


@pytest.mark.parametrize('make_file, layout', [(original_release_file, 'codetr'),
                                               (timm_file, 'timm')])
def test_imagenet_files_load_through_init_cfg(tmp_path, make_file, layout):
    source = tiny()
    path = tmp_path / 'imagenet.pth'
    torch.save(make_file(source), path)
    model = SwinTransformer(**TINY, frozen_stages=0,
                            init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    state = torch.load(path, weights_only=True)
    assert detect_swin_layout(state.get('model', state)) == layout
    model.init_weights()
    for key, value in source.state_dict().items():
        if not key.startswith('norm'):  # ImageNet files have no per-output norms
            assert torch.equal(model.state_dict()[key], value), key
    assert torch.equal(model.norm0.weight, torch.ones(16))  # kept its initial value
    assert not model.patch_embed.proj.weight.requires_grad  # frozen after loading


def test_foreign_checkpoint_names_its_keys(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'conv1.weight': torch.zeros(1), 'layer1.0.conv1.weight': torch.zeros(1)}, path)
    model = SwinTransformer(**TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointConversionError, match=r"not a Swin.*conv1\.weight"):
        model.init_weights()


def test_wrong_shaped_checkpoint_names_key_and_shapes(tmp_path):
    path = tmp_path / 'wide.pth'
    torch.save({f'backbone.{k}': v for k, v in
                codetr_to_mmdet(tiny(embed_dims=32).state_dict()).items()}, path)
    model = SwinTransformer(**TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointConversionError,
                       match=r'patch_embed\.proj\.weight: checkpoint \(32, 3, 4, 4\) vs model '
                             r'\(16, 3, 4, 4\)'):
        model.init_weights()


def test_deeper_checkpoint_is_refused_not_truncated(tmp_path):
    path = tmp_path / 'deep.pth'
    torch.save(tiny(depths=(2, 2, 2, 1)).state_dict(), path)
    model = SwinTransformer(**TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(CheckpointConversionError, match=r'checkpoint only \(\d+\).*layers\.2\.'
                                                        r'blocks\.1'):
        model.init_weights()


def test_a_different_relative_position_index_is_an_error():
    state = codetr_to_mmdet(tiny().state_dict())
    key = 'stages.0.blocks.0.attn.w_msa.relative_position_index'
    state[key] = state[key].flip(0)
    with pytest.raises(CheckpointConversionError, match='relative_position_index'):
        swin_to_codetr(state)
