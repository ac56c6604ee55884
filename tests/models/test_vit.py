"""ViT (EVA-02, ViTDet layout): shapes, padding, RoPE, windows, checkpointing, and the
official layout converted and checked against the official computation written out."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from codetr.models.backbones.vit import ViT, window_partition, window_unpartition
from codetr.models.converters import CheckpointConversionError, vit_official_to_codetr
from codetr.registry import MODELS

from .official_vit_reference import OfficialViTConfig, official_state, rope_freqs, vit_forward

TINY = OfficialViTConfig()  # dim 32, 3 blocks (window 4 in blocks 0 and 2), 2 heads


def tiny_vit(**overrides) -> ViT:
    cfg = dict(type='ViT', embed_dim=TINY.embed_dim, depth=TINY.depth,
               num_heads=TINY.num_heads, patch_size=TINY.patch_size,
               window_size=TINY.window_size, window_block_indexes=TINY.window_block_indexes,
               pretrain_img_size=TINY.pretrain_img_size, drop_path_rate=0.0)
    cfg.update(overrides)
    torch.manual_seed(0)
    return MODELS.build(cfg)


@pytest.fixture(scope='module')
def vit() -> ViT:
    return tiny_vit().eval()


@pytest.mark.parametrize('size', [(64, 64), (70, 90), (33, 17)])
def test_any_input_size_gives_one_stride_16_map(vit, size):
    out = vit(torch.randn(2, 3, *size))
    assert isinstance(out, tuple) and len(out) == 1
    assert out[0].shape == (2, TINY.embed_dim, math.ceil(size[0] / 16), math.ceil(size[1] / 16))
    assert vit.out_channels == [TINY.embed_dim] and vit.strides == [16]


def test_vit_l_defaults_are_the_official_configuration():
    defaults = {k: p.default for k, p in inspect.signature(ViT).parameters.items()}
    assert {k: defaults[k] for k in ('embed_dim', 'depth', 'num_heads', 'patch_size',
                                      'mlp_ratio', 'qkv_bias', 'drop_path_rate', 'window_size',
                                      'pretrain_img_size', 'rope_ref_size')} == dict(
        embed_dim=1024, depth=24, num_heads=16, patch_size=16, mlp_ratio=4 * 2 / 3,
        qkv_bias=True, drop_path_rate=0.4, window_size=24, pretrain_img_size=512,
        rope_ref_size=16)
    assert [i for i in range(24) if i not in defaults['window_block_indexes']] == \
        [3, 7, 11, 15, 19, 23]


def test_window_partition_pads_bottom_right_and_round_trips():
    x = torch.arange(2 * 5 * 6 * 3, dtype=torch.float).view(2, 5, 6, 3)
    windows, padded = window_partition(x, 4)
    assert padded == (8, 8) and windows.shape == (2 * 4, 4, 4, 3)
    assert torch.equal(windows[1], F.pad(x[0, :4, 4:], (0, 0, 0, 2)))  # top-right, 2 padded
    assert windows[3, 1:].abs().sum() == 0 and windows[3, :, 2:].abs().sum() == 0
    assert torch.equal(window_unpartition(windows, 4, padded, (5, 6)), x)


@pytest.mark.parametrize('grid', [(4, 4), (5, 7)])
def test_rope_is_the_official_formula(vit, grid):
    cos, sin = rope_freqs(*grid, TINY.head_dim)
    table = vit.rope_table(*grid)
    assert table.shape == (grid[0] * grid[1], 2 * TINY.head_dim)
    torch.testing.assert_close(table[:, :TINY.head_dim], sin, atol=1e-6, rtol=0)
    torch.testing.assert_close(table[:, TINY.head_dim:], cos, atol=1e-6, rtol=0)


def test_position_embedding_is_resized_bicubically_without_antialiasing(vit):
    g = TINY.pretrain_img_size // 16
    pos = vit.pos_embed[:, 1:].reshape(1, g, g, -1)
    assert torch.equal(vit.abs_pos_embed(g, g), pos)
    expected = F.interpolate(pos.permute(0, 3, 1, 2), size=(2, 3), mode='bicubic',
                             align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(vit.abs_pos_embed(2, 3), expected)


def test_checkpointing_gives_the_same_outputs_and_gradients():
    x = torch.randn(1, 3, 80, 96)
    results = []
    for with_cp in (False, True):
        model = tiny_vit(with_cp=with_cp).train()
        out = model(x)[0]
        out.square().mean().backward()
        results.append((out.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)
    assert all(g is not None and g.abs().sum() > 0 for g in results[1][1])


def test_config_errors_say_what_to_fix():
    with pytest.raises(ValueError, match='divisible by 4'):
        tiny_vit(embed_dim=36, num_heads=6)
    with pytest.raises(ValueError, match='window_block_indexes'):
        tiny_vit(window_block_indexes=(5,))
    with pytest.raises(ValueError, match='multiple of patch_size'):
        tiny_vit(pretrain_img_size=72)


# ------------------------------------------------------------------ official layout
def test_official_layout_converts_exactly_and_computes_the_official_output(vit):
    """Random official-layout weights -> rename -> strict load; the forward equals the official
    forward written out independently (padded windows, interpolated positions, RoPE)."""
    state = official_state(TINY)
    converted = vit_official_to_codetr(state, vit)
    assert sorted(converted) == sorted(vit.state_dict())
    model = tiny_vit().eval()
    model.load_state_dict(converted, strict=True)
    img = torch.randn(2, 3, 80, 96)  # 5 x 6 tokens: windows padded, positions resized
    with torch.no_grad():
        torch.testing.assert_close(model(img)[0], vit_forward(state, img, TINY),
                                   atol=2e-5, rtol=1e-4)


def test_converter_hand_examples_and_lsj_tables(vit):
    state = official_state(OfficialViTConfig(use_lsj=True, img_size=96))
    assert {'rope_glb.freqs_cos', 'blocks.1.attn.rope.freqs_sin',
            'blocks.2.attn.rope.freqs_cos'} <= set(state)
    converted = vit_official_to_codetr(state, vit)
    assert torch.equal(converted['blocks.0.attn.q_proj.bias'], state['blocks.0.attn.q_bias'])
    assert torch.equal(converted['blocks.1.attn.v_proj.bias'], state['blocks.1.attn.v_bias'])
    for old, new in (('w1', 'fc1_g'), ('w2', 'fc1_x'), ('ffn_ln', 'norm'), ('w3', 'fc2')):
        assert torch.equal(converted[f'blocks.2.mlp.{new}.weight'],
                           state[f'blocks.2.mlp.{old}.weight'])
    assert not any('rope' in k for k in converted)


@pytest.mark.parametrize('change, match', [
    (dict(window_size=5), 'window_size=5'),
    (dict(window_block_indexes=(0, 1)), 'window blocks are \\[0, 1\\]'),
    (dict(pt_hw_seq_len=14), 'RoPE table'),
])
def test_converter_refuses_tables_of_another_configuration(vit, change, match):
    cfg = OfficialViTConfig(**change)
    with pytest.raises(CheckpointConversionError, match=match):
        vit_official_to_codetr(official_state(cfg), vit)


def test_init_from_an_eva02_pretrained_file(tmp_path):
    """EVA-02 layout with patch 14 and a 3 x 3 grid: kernel and grid resized, pre-training
    keys dropped, everything else loaded."""
    state = official_state(TINY)
    state = {k: v for k, v in state.items() if 'rope' not in k}
    state['patch_embed.proj.weight'] = torch.randn(TINY.embed_dim, 3, 14, 14)
    pos = torch.randn(1, 1 + 9, TINY.embed_dim)
    state.update(pos_embed=pos, cls_token=torch.randn(1, 1, TINY.embed_dim),
                 **{'lm_head.weight': torch.randn(5, TINY.embed_dim),
                    'rope.freqs_cos': torch.randn(9, TINY.head_dim),
                    'blocks.0.attn.inner_attn_ln.weight': torch.ones(TINY.embed_dim)})
    path = tmp_path / 'eva02.pt'
    torch.save({'module': state}, path)
    model = tiny_vit(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert model.patch_embed.proj.weight.shape == (TINY.embed_dim, 3, 16, 16)
    g = TINY.pretrain_img_size // 16
    expected = F.interpolate(pos[:, 1:].reshape(1, 3, 3, -1).permute(0, 3, 1, 2), size=(g, g),
                             mode='bicubic', align_corners=False)
    torch.testing.assert_close(model.pos_embed[:, 1:], expected.flatten(2).transpose(1, 2))
    assert torch.equal(model.pos_embed[:, :1], pos[:, :1])
    assert torch.equal(model.blocks[2].mlp.fc2.weight, state['blocks.2.mlp.w3.weight'])
    torch.save({'model': {'blocks.0.mlp.w1.weight': torch.randn(3, 3)}}, path)
    with pytest.raises(ValueError, match='does not fit'):
        model.init_weights()


@pytest.mark.slow
def test_vit_l_official_layout_computes_the_official_output():
    """The same check at full ViT-L size (24 blocks of 1024, window 24, global 3, 7, ..., 23);
    ~2.5 GB and ~40 s on a CPU."""
    cfg = OfficialViTConfig(embed_dim=1024, depth=24, num_heads=16, window_size=24,
                            window_block_indexes=tuple(i for i in range(24) if i % 4 != 3),
                            pretrain_img_size=512)
    state = {k: v * 0.1 if v.dim() > 1 and 'rope' not in k else v
             for k, v in official_state(cfg).items()}
    model = ViT().eval()
    model.load_state_dict(vit_official_to_codetr(state, model), strict=True)
    img = torch.randn(1, 3, 160, 224)  # 10 x 14 tokens: every window padded to 24 x 24
    with torch.no_grad():
        torch.testing.assert_close(model(img)[0], vit_forward(state, img, cfg), atol=1e-4,
                                   rtol=1e-4)
