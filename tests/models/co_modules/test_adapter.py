"""MultiScaleAdapter: shapes, strides, the extra level's computation, parameter names."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from codetr.models.co_modules import MultiScaleAdapter
from codetr.registry import MODELS

C = 32


def _memory(sizes: list[tuple[int, int]], batch: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, C, h, w) for h, w in sizes]


def test_built_from_config_with_the_port_layout():
    adapter = MODELS.build(dict(type='MultiScaleAdapter', in_channels=C,
                                norm_cfg=dict(type='GN', num_groups=8)))
    shapes = {k: tuple(v.shape) for k, v in adapter.state_dict().items()}
    # The port's query_head.downsample.{0,1} (conv, GroupNorm), one per extra level.
    assert shapes == {'downsample.0.0.weight': (C, C, 3, 3), 'downsample.0.0.bias': (C,),
                      'downsample.0.1.weight': (C,), 'downsample.0.1.bias': (C,)}
    assert adapter.downsample[0][1].num_groups == 8


@pytest.mark.parametrize('num_extra', [0, 1, 2])
def test_levels_and_strides(num_extra):
    # Strides 8, 16, 32, 64 of a 64 x 96 input, as Co-Deformable-DETR's 4 encoder levels.
    memory = _memory([(8, 12), (4, 6), (2, 3), (1, 2)])
    adapter = MultiScaleAdapter(C, num_extra=num_extra, norm_cfg=dict(type='GN', num_groups=8))
    pyramid = adapter(memory)
    assert len(pyramid) == 4 + num_extra
    for given, out in zip(memory, pyramid):
        assert out is given  # the encoder levels pass through untouched
    expected = [(1, 1), (1, 1)][:num_extra]  # ceil halving of (1, 2): (1, 1), then (1, 1)
    assert [tuple(p.shape[-2:]) for p in pyramid[4:]] == expected
    assert all(p.shape[:2] == (2, C) for p in pyramid)


def test_extra_level_halves_odd_sizes_with_ceil():
    pyramid = MultiScaleAdapter(C, norm_cfg=dict(type='GN', num_groups=8))(
        _memory([(10, 14), (5, 7)]))
    assert tuple(pyramid[-1].shape) == (2, C, 3, 4)


def test_extra_level_is_stride_2_conv_then_group_norm():
    memory = _memory([(6, 6), (3, 5)])
    adapter = MultiScaleAdapter(C, norm_cfg=dict(type='GN', num_groups=4))
    conv = adapter.downsample[0][0]
    expected = F.group_norm(F.conv2d(memory[-1], conv.weight, conv.bias, stride=2, padding=1), 4)
    torch.testing.assert_close(adapter(memory)[-1], expected)
    # GroupNorm output: each group of each image has zero mean and unit variance.
    groups = expected.reshape(2, 4, -1)
    torch.testing.assert_close(groups.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)


def test_user_errors_say_what_to_fix():
    with pytest.raises(ValueError, match='model.adapter.in_channels'):
        MultiScaleAdapter(64)(_memory([(4, 4)]))
    with pytest.raises(ValueError, match="type='GN'"):
        MultiScaleAdapter(C, norm_cfg=dict(type='BN'))
    with pytest.raises(ValueError, match='not divisible'):
        MultiScaleAdapter(C, norm_cfg=dict(type='GN', num_groups=5))
