"""TimmSwinTransformer: shapes and strides, padding to 32, frozen stages, checkpointing, and
the official-layout key map (round trip, loading from a file, patch-merging order)."""
from __future__ import annotations

import math

import pytest
import torch

from codetr.models.backbones.timm_swin import (
    TimmSwinTransformer,
    is_official_swin_layout,
    swin_official_to_timm,
    swin_timm_to_official,
)
from codetr.registry import MODELS

# A tiny Swin: 2 blocks in stage 0 so that a shifted-window block (with its mask) runs.
TINY = dict(embed_dim=16, depths=(2, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=4,
            drop_path_rate=0.0)


def tiny(**overrides) -> TimmSwinTransformer:
    torch.manual_seed(0)
    return TimmSwinTransformer(**{**TINY, **overrides})


def test_builds_from_registry_with_strides_and_channels():
    model = MODELS.build(dict(type='TimmSwinTransformer', **TINY))
    assert model.strides == (4, 8, 16, 32)
    assert model.channels == (16, 32, 64, 128)
    outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6),
                                              (2, 128, 2, 3)]
    assert all(o.is_contiguous() for o in outs)


@pytest.mark.parametrize('size', [(70, 93), (33, 65)])
def test_odd_sizes_are_padded_to_32_and_cropped_back(size):
    """An odd input gives ceil(H / s) maps equal to the crop of its explicitly padded copy."""
    model = tiny(out_indices=(0, 1, 2, 3)).eval()
    h, w = size
    x = torch.randn(1, 3, h, w)
    padded = torch.nn.functional.pad(x, (0, 32 * math.ceil(w / 32) - w,
                                         0, 32 * math.ceil(h / 32) - h))
    with torch.no_grad():
        outs, ref = model(x), model(padded)
    for out, full, stride in zip(outs, ref, model.strides):
        assert out.shape[-2:] == (math.ceil(h / stride), math.ceil(w / stride))
        torch.testing.assert_close(out, full[..., :out.shape[-2], :out.shape[-1]])


def test_out_indices_subset_and_bad_indices():
    model = tiny(out_indices=(1, 3))
    assert model.channels == (32, 128) and model.strides == (8, 32)
    assert not hasattr(model, 'norm0') and hasattr(model, 'norm3')
    assert len(model(torch.randn(1, 3, 64, 64))) == 2
    with pytest.raises(ValueError, match='out_indices'):
        tiny(out_indices=(4,))


def test_frozen_stages_follow_the_official_stage_boundaries():
    model = tiny(frozen_stages=1, drop_path_rate=0.2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    # stage 0 = patch embedding, stage-0 blocks, the merge that ends stage 0, norm0
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(('body.patch_embed.', 'body.layers.0.',
                                       'body.layers.1.downsample.', 'norm0.'))}
    assert 'body.layers.1.blocks.0.attn.qkv.weight' not in frozen
    model.train()
    assert not model.body.layers[0].blocks.training and model.body.layers[1].blocks.training
    loss = sum(o.sum() for o in model(torch.randn(1, 3, 64, 64)))
    loss.backward()
    for name, param in model.named_parameters():
        assert (param.grad is not None) == (name not in frozen), name
    with pytest.raises(ValueError, match='frozen_stages'):
        tiny(frozen_stages=5)


def test_with_cp_gives_the_same_outputs_and_gradients():
    x = torch.randn(1, 3, 64, 64)
    grads = []
    for with_cp in (False, True):
        model = tiny(with_cp=with_cp).train()
        outs = model(x)
        sum((o * o).mean() for o in outs).backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def official_state(model: TimmSwinTransformer) -> dict:
    """A synthetic checkpoint in the official layout made from ``model``'s weights, with the
    buffers and classifier keys an official file carries."""
    state = swin_timm_to_official(model.state_dict())
    state['layers.0.blocks.0.attn.relative_position_index'] = torch.zeros(16, 16,
                                                                          dtype=torch.long)
    state['layers.0.blocks.1.attn_mask'] = torch.zeros(4, 16, 16)
    state['norm.weight'] = torch.ones(128)
    state['head.weight'] = torch.zeros(10, 128)
    return state


def test_key_map_hand_examples():
    mapped = swin_official_to_timm({
        'patch_embed.proj.weight': 1, 'layers.2.blocks.3.attn.qkv.bias': 2,
        'layers.0.downsample.reduction.weight': 3, 'layers.2.downsample.norm.bias': 4,
        'norm2.weight': 5, 'norm.weight': 6, 'head.bias': 7,
        'layers.1.blocks.1.attn_mask': 8, 'layers.1.blocks.0.attn.relative_position_index': 9})
    assert mapped == {'body.patch_embed.proj.weight': 1,
                      'body.layers.2.blocks.3.attn.qkv.bias': 2,
                      'body.layers.1.downsample.reduction.weight': 3,
                      'body.layers.3.downsample.norm.bias': 4, 'norm2.weight': 5}


def test_key_map_round_trips_and_covers_the_model():
    model = tiny()
    own = model.state_dict()
    state = official_state(model)
    assert is_official_swin_layout(state)
    assert not is_official_swin_layout(own)
    assert 'layers.0.downsample.reduction.weight' in state
    assert not any(k.startswith('layers.3.downsample') for k in state)  # last stage: none
    converted = swin_official_to_timm(state)
    assert converted.keys() == own.keys()
    for key, value in own.items():
        assert torch.equal(converted[key], value), key
    back = swin_timm_to_official(converted)
    dropped = {'layers.0.blocks.0.attn.relative_position_index', 'layers.0.blocks.1.attn_mask',
               'norm.weight', 'head.weight'}
    assert back.keys() == state.keys() - dropped


def test_init_from_official_checkpoint_file(tmp_path):
    source = tiny()
    path = tmp_path / 'swin_official.pth'
    state = {f'backbone.{k}': v for k, v in official_state(source).items()}
    torch.save({'state_dict': state}, path)
    torch.manual_seed(1)
    model = TimmSwinTransformer(**TINY, frozen_stages=0,
                                init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    assert not model.body.patch_embed.proj.weight.requires_grad
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), source.eval()(x)):
            torch.testing.assert_close(a, b)


def test_init_rejects_a_checkpoint_of_another_model(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'conv1.weight': torch.zeros(1)}, path)
    model = tiny(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match='shares no parameter name'):
        model.init_weights()
    wide = tmp_path / 'wide.pth'
    torch.save(swin_timm_to_official(tiny(embed_dim=32).state_dict()), wide)
    model = tiny(init_cfg=dict(type='Pretrained', checkpoint=str(wide)))
    with pytest.raises(ValueError, match='does not fit'):
        model.init_weights()


def test_patch_merging_concatenates_in_the_official_order():
    """Official Swin merges x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] (rows,
    columns) before its norm and reduction; timm's merge with the same weights must agree,
    otherwise the key map would need a weight permutation."""
    merge = tiny().body.layers[1].downsample
    x = torch.randn(2, 4, 6, 16)  # (B, H, W, C) NHWC
    official = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                          x[:, 1::2, 1::2]], dim=-1)
    expected = merge.reduction(merge.norm(official))
    torch.testing.assert_close(merge(x), expected)
