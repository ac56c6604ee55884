"""SingleScaleAdapter: levels, shapes and strides of the pyramid built from one C5 map."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codetr.models.co_modules import SingleScaleAdapter
from codetr.registry import MODELS

C = 16
GN = dict(type='GN', num_groups=4)
INPUT = (96, 160)  # padded network input (h, w); the C5 map is 3 x 5


def _c5(batch: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(batch, C, INPUT[0] // 32, INPUT[1] // 32, generator=g)]


@pytest.mark.parametrize('upsample', ['bilinear', 'deconv'])
def test_default_pyramid_has_strides_8_to_128(upsample):
    adapter = MODELS.build(dict(type='SingleScaleAdapter', in_channels=C, upsample=upsample,
                                norm_cfg=GN))
    assert adapter.strides == (8, 16, 32, 64, 128)
    memory = _c5()
    pyramid = adapter(memory)
    assert pyramid[2] is memory[0]  # the encoder map itself is the stride-32 level
    # Each level covers the input at its stride: ceil(input / stride) cells per side.
    for level, stride in zip(pyramid, adapter.strides):
        assert tuple(level.shape) == (2, C, math.ceil(INPUT[0] / stride),
                                      math.ceil(INPUT[1] / stride)), stride
    shapes = {k: tuple(v.shape) for k, v in adapter.state_dict().items()
              if k.endswith('0.weight')}
    up = (C, C, 2, 2) if upsample == 'deconv' else (C, C, 3, 3)
    assert shapes == {'upsample.0.0.weight': up, 'upsample.1.0.weight': up,
                      'downsample.0.0.weight': (C, C, 3, 3),
                      'downsample.1.0.weight': (C, C, 3, 3)}


def test_levels_are_built_successively_bilinear_then_conv_then_group_norm():
    adapter = SingleScaleAdapter(C, norm_cfg=GN)
    memory = _c5()
    x = memory[0]
    stride16 = F.group_norm(adapter.upsample[0][0](
        F.interpolate(x, scale_factor=2.0, mode='bilinear', align_corners=False)), 4)
    stride8 = F.group_norm(adapter.upsample[1][0](
        F.interpolate(stride16, scale_factor=2.0, mode='bilinear', align_corners=False)), 4)
    down = adapter.downsample[0][0]
    stride64 = F.group_norm(F.conv2d(x, down.weight, down.bias, stride=2, padding=1), 4)
    pyramid = adapter(memory)
    torch.testing.assert_close(pyramid[1], stride16)
    torch.testing.assert_close(pyramid[0], stride8)
    torch.testing.assert_close(pyramid[3], stride64)
    # GroupNorm output: every group of every image has zero mean.
    torch.testing.assert_close(pyramid[0].reshape(2, 4, -1).mean(-1), torch.zeros(2, 4),
                               atol=1e-5, rtol=0)


def test_other_strides_choose_the_steps():
    adapter = SingleScaleAdapter(C, in_stride=32, strides=(16, 32, 64), norm_cfg=GN)
    assert (len(adapter.upsample), len(adapter.downsample)) == (1, 1)
    assert [tuple(p.shape[-2:]) for p in adapter(_c5())] == [(6, 10), (3, 5), (2, 3)]
    only_coarser = SingleScaleAdapter(C, strides=(32, 64, 128), norm_cfg=GN)
    assert (len(only_coarser.upsample), len(only_coarser.downsample)) == (0, 2)


@pytest.mark.parametrize('kwargs, match', [
    (dict(strides=(16, 32, 128)), 'must double'),
    (dict(strides=(8, 16)), 'must contain in_stride=32'),
    (dict(upsample='nearest'), 'upsample'),
    (dict(norm_cfg=dict(type='BN')), "type='GN'"),
])
def test_config_errors_say_what_to_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SingleScaleAdapter(C, **{'norm_cfg': GN, **kwargs})


def test_input_errors_say_what_to_fix():
    adapter = SingleScaleAdapter(C, norm_cfg=GN)
    with pytest.raises(ValueError, match='use MultiScaleAdapter'):
        adapter(_c5() * 2)
    with pytest.raises(ValueError, match='model.adapter.in_channels'):
        SingleScaleAdapter(2 * C, norm_cfg=GN)(_c5())
