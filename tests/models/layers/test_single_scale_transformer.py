"""The single-scale DETR blocks: conditional attention, DETR encoder, Conditional / DAB decoders."""
from __future__ import annotations

import math

import pytest
import torch

from codetr.models.layers.transformer import (
    ConditionalAttention,
    ConditionalDetrTransformerDecoder,
    DabDetrTransformerDecoder,
    DetrTransformerEncoder,
    coordinate_to_encoding,
    inverse_sigmoid,
)
from codetr.models.layers.transformer.mlp import MLP

C, H = 8, 2
G = torch.Generator().manual_seed(0)


def _rand(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=G)


def _manual_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, H, Q, D), (B, H, S, D), (B, H, S, Dv) -> (B, Q, H * Dv), softmax(q k / sqrt(D)) v."""
    weights = (q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))).softmax(-1)
    return (weights @ v).transpose(1, 2).flatten(2)


def _split(x: torch.Tensor) -> torch.Tensor:
    return x.view(*x.shape[:2], H, -1).transpose(1, 2)


def test_self_attention_sums_content_and_position_projections():
    attn = ConditionalAttention(C, H, cross_attn=False).eval()
    x, pos = _rand(2, 5, C), _rand(2, 5, C)
    q = _split(attn.qcontent_proj(x) + attn.qpos_proj(pos))
    k = _split(attn.kcontent_proj(x) + attn.kpos_proj(pos))
    expected = x + attn.out_proj(_manual_attention(q, k, _split(attn.v_proj(x))))
    torch.testing.assert_close(attn(x, query_pos=pos), expected)


@pytest.mark.parametrize('with_query_pos', [True, False])
def test_cross_attention_concatenates_content_and_spatial_parts_per_head(with_query_pos):
    attn = ConditionalAttention(C, H, cross_attn=True, with_query_pos=with_query_pos).eval()
    assert hasattr(attn, 'qpos_proj') == with_query_pos
    x, pos, sine = _rand(2, 3, C), _rand(2, 3, C), _rand(2, 3, C)
    memory, memory_pos = _rand(2, 6, C), _rand(2, 6, C)
    q_content, k_content = attn.qcontent_proj(x), attn.kcontent_proj(memory)
    k_pos = attn.kpos_proj(memory_pos)
    if with_query_pos:
        q_content, k_content = q_content + attn.qpos_proj(pos), k_content + k_pos
    q = torch.cat([_split(q_content), _split(attn.qpos_sine_proj(sine))], -1)  # [B,H,Q,2C/H]
    k = torch.cat([_split(k_content), _split(k_pos)], -1)
    expected = x + attn.out_proj(_manual_attention(q, k, _split(attn.v_proj(memory))))
    out = attn(x, key=memory, query_pos=pos, key_pos=memory_pos, query_sine_embed=sine)
    torch.testing.assert_close(out, expected)


def test_cross_attention_ignores_padded_memory():
    attn = ConditionalAttention(C, H, cross_attn=True).eval()
    x, pos, sine = _rand(1, 3, C), _rand(1, 3, C), _rand(1, 3, C)
    memory, memory_pos = _rand(1, 6, C), _rand(1, 6, C)
    mask = torch.tensor([[False, False, False, False, True, True]])
    changed = memory.clone()
    changed[:, 4:] = 100.0
    outs = [attn(x, key=m, query_pos=pos, key_pos=memory_pos, query_sine_embed=sine,
                 key_padding_mask=mask) for m in (memory, changed)]
    torch.testing.assert_close(outs[0], outs[1])


def test_dab_encoder_scales_positions_and_ignores_padding():
    layer_cfg = dict(self_attn_cfg=dict(embed_dims=C, num_heads=H),
                     ffn_cfg=dict(embed_dims=C, feedforward_channels=16))
    encoder = DetrTransformerEncoder(2, layer_cfg, scale_pos=True).eval()
    x, pos = _rand(1, 6, C), _rand(1, 6, C)
    seen = []
    encoder.layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[1]))
    mask = torch.tensor([[False] * 4 + [True] * 2])
    out = encoder(x, pos, mask)
    torch.testing.assert_close(seen[0], pos * encoder.query_scale(x))
    changed = x.clone()
    changed[:, 4:] = 50.0
    torch.testing.assert_close(encoder(changed, pos, mask)[:, :4], out[:, :4])
    assert not hasattr(DetrTransformerEncoder(1, layer_cfg), 'query_scale')


def _layer_cfg(**ffn) -> dict:
    attn = dict(embed_dims=C, num_heads=H)
    return dict(self_attn_cfg=attn, cross_attn_cfg=attn,
                ffn_cfg=dict(embed_dims=C, feedforward_channels=16, **ffn))


def test_conditional_decoder_reference_points_and_shapes():
    decoder = ConditionalDetrTransformerDecoder(3, _layer_cfg()).eval()
    # only the first layer adds the positional query in its cross-attention
    assert [hasattr(layer.cross_attn, 'qpos_proj') for layer in decoder.layers] == [
        True, False, False]
    query_pos, memory, memory_pos = _rand(2, 4, C), _rand(2, 6, C), _rand(2, 6, C)
    hidden, refs = decoder(torch.zeros(2, 4, C), query_pos, memory, memory_pos, None)
    assert hidden.shape == (3, 2, 4, C)
    torch.testing.assert_close(refs, decoder.ref_point_head(query_pos).sigmoid())
    given = torch.rand(2, 4, 2, generator=G)
    _, refs = decoder(torch.zeros(2, 4, C), query_pos, memory, memory_pos, None,
                      reference_points=given)
    assert refs is given


def test_dab_decoder_modulates_the_spatial_query_and_refines_the_anchors():
    decoder = DabDetrTransformerDecoder(2, _layer_cfg(act_cfg=dict(type='PReLU'))).eval()
    reg = MLP(C, C, 4, 2)
    anchors = torch.tensor([[[0.3, 0.4, 0.2, 0.5], [0.6, 0.5, 0.4, 0.1]]])
    memory, memory_pos = _rand(1, 6, C), _rand(1, 6, C)
    spatial, outputs = [], []
    decoder.layers[0].register_forward_pre_hook(lambda m, args: spatial.append(args[4]))
    decoder.layers[0].register_forward_hook(lambda m, args, out: outputs.append(out))
    query = torch.zeros(1, 2, C)
    hidden, refs = decoder(query, memory, memory_pos, None, anchors, reg)
    assert hidden.shape == (2, 1, 2, C) and refs.shape == (2, 1, 2, 4)
    assert torch.equal(refs[0], anchors)
    # first layer: the (y, x) half of the anchor embedding, y scaled by h_ref / h, x by w_ref / w
    embed = coordinate_to_encoding(anchors, num_feats=C // 2)[..., :C]
    ref_wh = decoder.ref_anchor_head(query).sigmoid()
    half = C // 2
    expected = torch.cat([embed[..., :half] * (ref_wh[..., 1:] / anchors[..., 3:]),
                          embed[..., half:] * (ref_wh[..., :1] / anchors[..., 2:3])], -1)
    torch.testing.assert_close(spatial[0], expected)
    # second layer's anchor: the first layer's raw output refined, not detached
    torch.testing.assert_close(refs[1], (reg(outputs[0]) + inverse_sigmoid(anchors)).sigmoid())
    assert refs[1].requires_grad
