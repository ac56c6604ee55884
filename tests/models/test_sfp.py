"""SimpleFeaturePyramid (ViTDet / official Co-DETR SFP): levels, official names, LayerNorm2d."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from codetr.models.necks import LayerNorm2d, SimpleFeaturePyramid
from codetr.registry import MODELS

C, OUT = 32, 16


@pytest.fixture(scope='module')
def sfp() -> SimpleFeaturePyramid:
    torch.manual_seed(0)
    return MODELS.build(dict(type='SFP', in_channels=[C], out_channels=OUT, num_outs=5,
                             use_p2=True))


@pytest.mark.parametrize('h, w', [(6, 8), (5, 7)])
def test_five_levels_at_strides_4_to_64(sfp, h, w):
    outs = sfp([torch.randn(2, C, h, w)])  # a stride-16 map
    half = (math.ceil(h / 2), math.ceil(w / 2))
    sizes = [(4 * h, 4 * w), (2 * h, 2 * w), (h, w), half,
             (math.ceil(half[0] / 2), math.ceil(half[1] / 2))]
    assert [tuple(o.shape) for o in outs] == [(2, OUT, *s) for s in sizes]


def test_parameter_names_and_shapes_are_the_official_ones(sfp):
    shapes = {k: tuple(v.shape) for k, v in sfp.state_dict().items()}
    expected = {
        'p2.1.weight': (C // 2, C, 3, 3), 'p2.2.weight': (C // 2,),
        'p2.5.weight': (C // 4, C // 2, 3, 3),
        'p2.6.bias': (C // 4,), 'p2.8.weight': (OUT, C // 4, 1, 1), 'p2.9.weight': (OUT,),
        'p2.11.weight': (OUT, OUT, 3, 3), 'p2.12.bias': (OUT,),
        'p3.1.weight': (C // 2, C, 3, 3), 'p3.4.weight': (OUT, C // 2, 1, 1),
        'p3.7.weight': (OUT, OUT, 3, 3), 'p3.8.weight': (OUT,),
        'p4.0.weight': (OUT, C, 1, 1), 'p4.3.weight': (OUT, OUT, 3, 3), 'p4.4.bias': (OUT,),
        'p5.1.weight': (OUT, C, 1, 1), 'p5.4.weight': (OUT, OUT, 3, 3),
        'p6.1.weight': (C, C, 3, 3), 'p6.2.weight': (C,), 'p6.4.weight': (OUT, C, 1, 1),
        'p6.7.weight': (OUT, OUT, 3, 3), 'p6.8.bias': (OUT,)}
    assert {k: shapes.get(k) for k in expected} == expected
    convs = [m for m in sfp.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 14 and all(m.bias is None for m in convs)  # official: bias-free
    assert len(shapes) == 14 + 2 * 14  # 14 conv weights, 14 LayerNorms


def test_layernorm2d_is_the_official_channels_first_formula():
    norm = LayerNorm2d(C)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, C, 3, 5) * 3 + 1
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    expected = norm.weight[:, None, None] * (x - u) / torch.sqrt(s + 1e-6) + \
        norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), expected, atol=1e-5, rtol=1e-5)


def test_every_parameter_learns_and_checkpointing_changes_nothing():
    x = torch.randn(1, C, 4, 6)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = SimpleFeaturePyramid(C, OUT, with_cp=with_cp).train()
        sum(o.square().mean() for o in model([x])).backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(g is not None and g.abs().sum() > 0 for g in grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_deconv_variant_and_four_levels():
    model = SimpleFeaturePyramid(C, OUT, num_outs=4, use_p2=False, upsample='deconv')
    outs = model([torch.randn(1, C, 4, 4)])
    assert [o.shape[-1] for o in outs] == [8, 4, 2, 1]
    assert isinstance(model.p3[1], nn.ConvTranspose2d) and not hasattr(model, 'p2')


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_outs=4), 'num_outs=5'), (dict(in_channels=[C, C]), 'one input map'),
    (dict(upsample='bilinear'), 'upsample')])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimpleFeaturePyramid(**{'in_channels': C, 'out_channels': OUT, **kwargs})
