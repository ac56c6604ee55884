"""SwinTransformer: MMDetection parity on the shared fixtures (converted weights, padded inputs),
shapes, frozen stages, activation checkpointing, stochastic depth, qk_scale, the absolute
position embedding and argument checks."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import codetr.models.backbones.swin as swin_module
from codetr.models.backbones.swin import SwinTransformer, shifted_window_mask
from codetr.models.converters import convert_official
from codetr.registry import MODELS

FIXTURES = Path(__file__).resolve().parents[3] / 'shared' / 'fixtures'
# Every MMDetection-layout Swin fixture (a directory with swin_args in its fixture.json).
SWIN_FIXTURES = sorted(p.parent for p in FIXTURES.glob('*/fixture.json')
                       if 'swin_args' in json.loads(p.read_text()))
# 2 blocks in stages 0 and 1 so that shifted windows (and their masks) run.
TINY = dict(embed_dims=16, depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window_size=4,
            drop_path_rate=0.0)


def tiny(**overrides) -> SwinTransformer:
    torch.manual_seed(0)
    model = SwinTransformer(**{**TINY, **overrides})
    model.init_weights()
    return model


def load_fixture(path: Path) -> tuple[dict, dict, dict]:
    meta = json.loads((path / 'fixture.json').read_text())
    weights = torch.load(path / 'weights_mmdet3.pth', weights_only=True)
    data = torch.load(path / 'inputs_outputs.pth', weights_only=True)
    return meta, weights, data


@pytest.mark.parametrize('fixture', SWIN_FIXTURES, ids=lambda p: p.name)
def test_converted_mmdet_weights_reproduce_mmdetection(fixture: Path):
    """convert_official maps every tensor (zero missing / unexpected keys) and the backbone
    gives MMDetection's eight feature maps within 1e-4, padded input included."""
    meta, weights, data = load_fixture(fixture)
    assert len(weights) == meta['keys']
    holder = nn.ModuleDict({'backbone': SwinTransformer(**meta['swin_args'])}).eval()
    converted = convert_official(weights, holder)  # strict: raises on any unmatched key
    buffers = [k for k in weights if k.endswith('relative_position_index')]
    assert len(converted) == len(weights) - len(buffers)
    assert holder.load_state_dict(converted, strict=True)
    assert sum(p.numel() for p in holder.parameters()) == meta['params']
    with torch.no_grad():
        for x, expected, shapes in zip(data['inputs'], data['outputs'], meta['shapes']):
            outs = holder.backbone(x)
            assert [list(o.shape) for o in outs] == shapes
            for level, (out, ref) in enumerate(zip(outs, expected)):
                err = (out - ref).abs().max().item()
                assert err < 1e-4, f'{fixture.name} input {tuple(x.shape)} level {level}: {err}'


@pytest.mark.parametrize('fixture', SWIN_FIXTURES[:1], ids=lambda p: p.name)
def test_init_cfg_loads_the_mmdet_file_directly(fixture: Path):
    meta, _, data = load_fixture(fixture)
    path = str(fixture / 'weights_mmdet3.pth')
    model = SwinTransformer(**meta['swin_args'], init_cfg=dict(type='Pretrained',
                                                               checkpoint=path))
    model.init_weights()
    with torch.no_grad():
        outs = model.eval()(data['inputs'][1])
    for out, ref in zip(outs, data['outputs'][1]):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_registry_build_shapes_and_strides():
    model = MODELS.build(dict(type='SwinTransformer', **TINY, out_indices=(1, 2, 3)))
    assert model.channels == (32, 64, 128) and model.strides == (8, 16, 32)
    assert not hasattr(model, 'norm0') and hasattr(model, 'norm3')
    outs = model(torch.randn(1, 3, 70, 93))  # not a multiple of the patch or any window
    assert [tuple(o.shape) for o in outs] == [(1, 32, 9, 12), (1, 64, 5, 6), (1, 128, 3, 3)]
    assert all(o.is_contiguous() for o in outs)


def test_shifted_window_mask_separates_the_wrapped_regions():
    mask = shifted_window_mask(8, 8, window=4, shift=2)  # 4 windows of 16 tokens
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()  # the top-left window holds one region
    # bottom-right window: 2x2 regions of 2x2 tokens -> 4 tokens see each other
    assert ((mask[3] == 0).sum(-1) == 4).all() and set(mask[3].unique().tolist()) == {-100, 0}
    # top-right window: two regions (columns 4-5 and wrapped 6-7) of 8 tokens
    assert ((mask[1] == 0).sum(-1) == 8).all()


def test_padding_happens_before_the_shift():
    """A map smaller than the window is padded to one whole window and still shifted (as
    MMDetection does): the shifted block then differs from the same block unshifted."""
    block = tiny().layers[0].blocks[1].eval()
    x = torch.randn(1, 3, 3, 16)  # (B, H, W, C) < window 4
    mask = shifted_window_mask(4, 4, 4, 2)
    with torch.no_grad():
        shifted = block(x, mask)
        block.shift = 0
        plain = block(x, None)
    assert shifted.shape == x.shape and not torch.allclose(shifted, plain, atol=1e-4)


def test_frozen_stages_follow_mmdetection():
    model = tiny(frozen_stages=1, drop_path_rate=0.2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    # stage 0 = patch embedding, its blocks, the merging that ends it, norm0
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(('patch_embed.', 'layers.0.', 'norm0.'))}
    assert 'layers.0.downsample.reduction.weight' in frozen
    model.train()
    assert not model.layers[0].training and model.layers[1].training
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == (name not in frozen), name
    with pytest.raises(ValueError, match='frozen_stages'):
        tiny(frozen_stages=5)


def test_with_cp_checkpoints_every_block_with_the_same_gradients(monkeypatch):
    calls = []
    original = swin_module.checkpoint
    monkeypatch.setattr(swin_module, 'checkpoint',
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    x = torch.randn(1, 3, 60, 72)
    grads = []
    for with_cp in (False, True):
        model = tiny(with_cp=with_cp).train()
        sum((o * o).mean() for o in model(x)).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert len(calls) == sum(TINY['depths'])
    assert all(g is not None for g in grads[1].values())
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_drop_path_rises_linearly_and_acts_in_training_only():
    model = tiny(drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for s in model.layers for b in s.blocks]
    assert rates == pytest.approx([0.3 * i / 5 for i in range(6)])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), model(x))
        torch.manual_seed(1)
        a = model.train()(x)
        torch.manual_seed(2)
        b = model(x)
    assert not torch.allclose(a[-1], b[-1])


def test_qk_scale_is_honoured():
    """The window attention equals softmax(q k^T * qk_scale + bias) v, projected."""
    attn = tiny(qk_scale=0.7).layers[1].blocks[0].attn.eval()  # 2 heads of 16 channels
    x = torch.randn(3, 16, 32)  # (windows, tokens, C)
    q, k, v = attn.qkv(x).reshape(3, 16, 3, 2, 16).permute(2, 0, 3, 1, 4)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    logits = q @ k.transpose(-2, -1) * 0.7 + bias.view(16, 16, 2).permute(2, 0, 1)
    expected = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(3, 16, 32))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected)
        assert tiny().layers[1].blocks[0].attn.scale == 16 ** -0.5


def test_absolute_position_embedding_is_added_and_resized():
    model = tiny(use_abs_pos_embed=True, pretrain_img_size=32, frozen_stages=0).eval()
    assert model.absolute_pos_embed.shape == (1, 16, 8, 8)
    assert not model.absolute_pos_embed.requires_grad
    tokens = torch.randn(1, 8, 8, 16)
    torch.testing.assert_close(model._add_abs_pos_embed(tokens),
                               tokens + model.absolute_pos_embed.permute(0, 2, 3, 1))
    assert model._add_abs_pos_embed(torch.zeros(1, 5, 7, 16)).shape == (1, 5, 7, 16)
    assert len(model(torch.randn(1, 3, 40, 24))) == 4


def test_patch_norm_off_has_no_embedding_or_merging_norms():
    keys = tiny(patch_norm=False).state_dict()
    assert not any(k.startswith('patch_embed.norm') or '.downsample.norm' in k for k in keys)


@pytest.mark.parametrize('overrides, match', [
    (dict(strides=(4, 2, 1, 2)), 'strides'),
    (dict(patch_size=2), 'strides'),
    (dict(out_indices=(4,)), 'out_indices'),
    (dict(num_heads=(1, 2)), 'one entry per stage'),
    (dict(act_cfg=dict(type='ReLU')), 'GELU'),
    (dict(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth')), 'either'),
])
def test_bad_arguments_are_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        SwinTransformer(**{**TINY, **overrides})


def test_level_sizes_are_ceil_divisions():
    model = tiny().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 33, 65))
    assert [o.shape[-2:] for o in outs] == [(math.ceil(33 / s), math.ceil(65 / s))
                                            for s in model.strides]
