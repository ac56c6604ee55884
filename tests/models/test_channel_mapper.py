"""ChannelMapper: shapes, MMDetection key layout, init, extra levels, GroupNorm statistics."""
from __future__ import annotations

import pytest
import torch

from codetr.models.necks import ChannelMapper
from codetr.registry import MODELS

R50_CHANNELS = [256, 512, 1024, 2048]


def _inputs(batch: int = 2, size: int = 32, channels: list[int] = R50_CHANNELS) -> list:
    """Maps at strides 4..32 of a ``size`` x ``size`` image... here ``size`` is the C2 size."""
    return [torch.randn(batch, c, size // 2**i, size // 2**i) for i, c in enumerate(channels)]


def test_codino_shapes_and_registry() -> None:
    neck = MODELS.build(dict(type='ChannelMapper', in_channels=R50_CHANNELS, num_outs=5))
    outs = neck(_inputs(size=16))
    assert [tuple(o.shape) for o in outs] == [(2, 256, 16, 16), (2, 256, 8, 8), (2, 256, 4, 4),
                                              (2, 256, 2, 2), (2, 256, 1, 1)]


def test_keys_match_mmdet_codino_r50(shared_dir) -> None:
    table = shared_dir / 'reference' / 'co_dino_5scale_r50_mmdet3_state_dict.tsv'
    expected = {}
    for line in table.read_text().splitlines():
        key, shape = line.split('\t')
        if key.startswith('neck.'):
            expected[key[len('neck.'):]] = tuple(int(s) for s in shape.strip('()').split(',') if s)
    neck = ChannelMapper(in_channels=R50_CHANNELS, num_outs=5)
    assert {k: tuple(v.shape) for k, v in neck.state_dict().items()} == expected
    assert len(expected) == 15  # 5 levels x (conv weight, gn weight, gn bias): no conv bias


def test_extra_levels_chain_from_raw_last_input() -> None:
    neck = ChannelMapper(in_channels=[8, 16], out_channels=32, num_outs=4,
                         norm_cfg=dict(type='GN', num_groups=4))
    assert neck.extra_convs[0].conv.in_channels == 16  # the raw C5, not its projection
    assert [m.conv.in_channels for m in neck.extra_convs] == [16, 32]
    x = [torch.randn(1, 8, 13, 13), torch.randn(1, 16, 7, 7)]
    outs = neck(x)
    assert [o.shape[-1] for o in outs] == [13, 7, 4, 2]  # ceil(7/2)=4, ceil(4/2)=2
    torch.testing.assert_close(outs[2], neck.extra_convs[0](x[1]))
    torch.testing.assert_close(outs[3], neck.extra_convs[1](outs[2]))


def test_init_and_bias() -> None:
    torch.manual_seed(0)
    neck = ChannelMapper(in_channels=[512], out_channels=256, num_outs=2)
    conv = neck.convs[0].conv
    assert conv.bias is None and neck.extra_convs[0].conv.bias is None
    # xavier uniform bound sqrt(6 / (fan_in + fan_out)), fan = channels * 1x1 kernel
    bound = (6 / (512 + 256)) ** 0.5
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.95 * bound
    assert torch.allclose(conv.weight.std(), torch.tensor(bound / 3 ** 0.5), rtol=0.02)
    gn = neck.convs[0].gn
    assert torch.equal(gn.weight, torch.ones(256)) and torch.equal(gn.bias, torch.zeros(256))
    with torch.no_grad():
        conv.weight.zero_()
    neck.init_weights()
    assert conv.weight.abs().max() > 0.9 * bound
    no_norm = ChannelMapper(in_channels=[4], out_channels=8, norm_cfg=dict(type='BN'),
                            bias=True, act_cfg=dict(type='ReLU'))
    assert no_norm.convs[0].conv.bias is not None and hasattr(no_norm.convs[0], 'bn')


def test_group_norm_statistics() -> None:
    """With unit affine, every 32-group of 8 channels of each output has mean 0, var 1."""
    neck = ChannelMapper(in_channels=R50_CHANNELS, num_outs=5)
    for out in neck([x * 5 + 3 for x in _inputs(size=16)]):
        groups = out.reshape(out.shape[0], 32, -1)
        torch.testing.assert_close(groups.mean(-1), torch.zeros(2, 32), atol=1e-4, rtol=0)
        torch.testing.assert_close(groups.var(-1, unbiased=False), torch.ones(2, 32),
                                   atol=1e-2 if out.shape[-1] > 1 else 0.05, rtol=0)


def test_user_errors() -> None:
    with pytest.raises(ValueError, match='num_outs'):
        ChannelMapper(in_channels=[8, 16], num_outs=1, norm_cfg=dict(type='GN', num_groups=4))
    neck = ChannelMapper(in_channels=[8, 16], out_channels=8,
                         norm_cfg=dict(type='GN', num_groups=4))
    with pytest.raises(ValueError, match='out_indices'):
        neck([torch.randn(1, 8, 4, 4)])


def test_explicit_none_norm_is_detrs_plain_projection() -> None:
    """``norm_cfg=None`` (MMDetection's DETR / Conditional-DETR / DAB-DETR C5 necks) means no
    norm and a conv bias; left out, the norm is GroupNorm(32)."""
    neck = ChannelMapper(in_channels=[64], out_channels=32, norm_cfg=None, act_cfg=None)
    assert set(neck.state_dict()) == {'convs.0.conv.weight', 'convs.0.conv.bias'}
    x = torch.randn(1, 64, 3, 5)
    conv = neck.convs[0].conv
    torch.testing.assert_close(neck([x])[0], torch.nn.functional.conv2d(x, conv.weight, conv.bias))
    assert hasattr(ChannelMapper(in_channels=[64], out_channels=32).convs[0], 'gn')
