"""PositiveQueryGenerator: the box sine embedding by hand, both modes, errors."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codetr.models.co_modules import PositiveQueryGenerator, positive_box_embedding
from codetr.registry import MODELS

C = 8  # embed dims; 4 sine features per coordinate


def _features(value: float) -> list[float]:
    """Four features of one coordinate: dim_t = 10000 ** (2 * (i // 2) / 4) = 1, 1, 100, 100."""
    p = value * 2 * math.pi
    return [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]


BOX = (0.5, 0.25, 0.2, 0.1)  # cx, cy, w, h
BOX_EMBED = torch.tensor([f for v in BOX for f in _features(v)])


def test_box_embedding_by_hand_in_cx_cy_w_h_order():
    embed = positive_box_embedding(torch.tensor([[BOX]]), num_feats=4)
    assert embed.shape == (1, 1, 16)
    torch.testing.assert_close(embed[0, 0], BOX_EMBED)
    # cx = 0.5: sin(pi) = 0, cos(pi) = -1, the official first channels.
    torch.testing.assert_close(embed[0, 0, :2], torch.tensor([0.0, -1.0]), atol=1e-6, rtol=0)


def test_box_embedding_clamps_boxes_leaving_the_image():
    outside = positive_box_embedding(torch.tensor([[[0.5, 0.25, 1.3, -0.2]]]), num_feats=4)
    inside = positive_box_embedding(torch.tensor([[[0.5, 0.25, 1.0, 0.0]]]), num_feats=4)
    torch.testing.assert_close(outside, inside, atol=1e-4, rtol=0)


def test_dino_mode_is_layer_norm_of_linear_of_the_embedding():
    gen = MODELS.build(dict(type='PositiveQueryGenerator', embed_dims=C))
    # Names and shapes of the port's transformer.aux_pos_trans.i / aux_pos_trans_norm.i.
    assert {k: tuple(v.shape) for k, v in gen.state_dict().items()} == {
        'pos_trans.weight': (C, 2 * C), 'pos_trans.bias': (C,),
        'pos_trans_norm.weight': (C,), 'pos_trans_norm.bias': (C,)}
    with torch.no_grad():  # select the cx and cy features: query = LN(embed[:8])
        gen.pos_trans.weight.copy_(torch.eye(C, 2 * C))
        gen.pos_trans.bias.zero_()
    query, query_pos = gen(torch.tensor([[BOX, BOX]]))
    assert query.shape == (1, 2, C) and query_pos is None
    picked = BOX_EMBED[:C]
    expected = (picked - picked.mean()) / torch.sqrt(picked.var(unbiased=False) + 1e-5)
    torch.testing.assert_close(query[0, 1], expected)


def test_deformable_mode_splits_position_then_content_and_adds_features():
    torch.manual_seed(0)
    gen = PositiveQueryGenerator(C, mode='deformable', with_coord_feat=True)
    gen.init_weights()
    boxes = torch.rand(2, 3, 4)
    feats = torch.randn(2, 3, C)
    out = F.layer_norm(F.linear(positive_box_embedding(boxes, C // 2), gen.pos_trans.weight,
                                gen.pos_trans.bias), (2 * C,),
                       gen.pos_trans_norm.weight, gen.pos_trans_norm.bias)
    feat_term = F.layer_norm(F.linear(feats, gen.feats_trans.weight, gen.feats_trans.bias),
                             (C,), gen.feats_norm.weight, gen.feats_norm.bias)
    with torch.no_grad():
        gen.head_pos_embed.fill_(0.5)  # official R50: one scalar added to every channel
    query, query_pos = gen(boxes, feats)
    torch.testing.assert_close(query_pos, out[..., :C] + 0.5)
    torch.testing.assert_close(query, out[..., C:] + feat_term)


def test_deformable_mode_without_features():
    gen = PositiveQueryGenerator(C, mode='deformable', with_coord_feat=False)
    query, query_pos = gen(torch.rand(1, 2, 4))
    assert query.shape == query_pos.shape == (1, 2, C)
    assert not hasattr(gen, 'head_pos_embed')


def test_errors_say_what_to_fix():
    with pytest.raises(ValueError, match='mode='):
        PositiveQueryGenerator(C, mode='detr')
    with pytest.raises(ValueError, match="mode='deformable'"):
        PositiveQueryGenerator(C, with_coord_feat=True)
    with pytest.raises(ValueError, match='head_pos_dims'):
        PositiveQueryGenerator(C, mode='deformable', with_coord_feat=True, head_pos_dims=3)
    gen = PositiveQueryGenerator(C, mode='deformable', with_coord_feat=True)
    with pytest.raises(ValueError, match='returned no feats'):
        gen(torch.rand(1, 2, 4))
