"""AnchorGenerator and MlvlPointGenerator: hand-computed priors, ordering, valid flags."""
import math

import pytest
import torch

from codetr.models.task_modules import AnchorGenerator, MlvlPointGenerator
from codetr.registry import TASK_UTILS


def test_atss_style_anchors_on_2x2_map():
    # one square anchor per location: base 8 * octave_base_scale 8 = 64 px, centred on the
    # top-left pixel corner of each cell (center_offset 0)
    gen = TASK_UTILS.build(dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                                scales_per_octave=1, strides=[8]))
    (anchors,) = gen.grid_priors([(2, 2)])
    expected = torch.tensor([[-32., -32., 32., 32.],   # location (x=0, y=0)
                             [-24., -32., 40., 32.],   # (x=8, y=0): rows are x-inner
                             [-32., -24., 32., 40.],   # (x=0, y=8)
                             [-24., -24., 40., 40.]])
    torch.testing.assert_close(anchors, expected)
    assert gen.num_base_priors == [1]


def test_rpn_style_3_scales_3_ratios():
    gen = AnchorGenerator(strides=[4], ratios=[0.5, 1.0, 2.0], scales=[8, 16, 32])
    assert gen.num_base_priors == [9]
    (anchors,) = gen.grid_priors([(1, 2)])
    assert anchors.shape == (2 * 9, 4)
    r2 = math.sqrt(2)
    # scale-major: the 3 scales of ratio 0.5 first; ratio = h / w, w = 4 * s * sqrt(2)
    half_w = torch.tensor([2 * 8 * r2, 2 * 16 * r2, 2 * 32 * r2, 16., 32., 64.,
                           2 * 8 / r2, 2 * 16 / r2, 2 * 32 / r2])
    half_h = torch.tensor([2 * 8 / r2, 2 * 16 / r2, 2 * 32 / r2, 16., 32., 64.,
                           2 * 8 * r2, 2 * 16 * r2, 2 * 32 * r2])
    base = torch.stack([-half_w, -half_h, half_w, half_h], dim=1)
    torch.testing.assert_close(anchors[:9], base)
    torch.testing.assert_close(anchors[9:], base + torch.tensor([4., 0., 4., 0.]))
    torch.testing.assert_close(anchors[0], torch.tensor([-22.6274, -11.3137, 22.6274, 11.3137]))


def test_ratio_major_order_and_center_offset():
    gen = AnchorGenerator(strides=[(8, 16)], ratios=[1.0, 4.0], scales=[1, 2],
                          scale_major=False, center_offset=0.5)
    (anchors,) = gen.grid_priors([(2, 1)])
    # base 8 (the smaller stride), centre (4, 4); ratio-inner: (s1,r1) (s1,r4) (s2,r1) (s2,r4)
    sizes = torch.tensor([[8., 8.], [4., 16.], [16., 16.], [8., 32.]])
    base = torch.cat([4 - sizes / 2, 4 + sizes / 2], dim=1)
    torch.testing.assert_close(anchors[:4], base)
    torch.testing.assert_close(anchors[4:], base + torch.tensor([0., 16., 0., 16.]))


def test_sparse_priors_match_grid_priors():
    gen = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0], scales=[2, 3])
    sizes = [(3, 5), (2, 3)]
    grids = gen.grid_priors(sizes, dtype=torch.float64)
    for level, size in enumerate(sizes):
        idx = torch.tensor([0, 3, 7, len(grids[level]) - 1])
        sparse = gen.sparse_priors(idx, size, level, dtype=torch.float64)
        torch.testing.assert_close(sparse, grids[level][idx])
    assert grids[0].dtype == torch.float64


def test_anchor_valid_flags_cut_at_pad_shape():
    gen = AnchorGenerator(strides=[8], ratios=[0.5, 1.0], scales=[1])
    # pad (12, 20): ceil(12/8) = 2 valid rows, ceil(20/8) = 3 valid columns of a 3x4 map
    (flags,) = gen.valid_flags([(3, 4)], (12, 20))
    per_location = flags.reshape(3, 4, 2)
    assert per_location[..., 0].equal(per_location[..., 1])
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert per_location[..., 0].equal(expected)


def test_anchor_generator_rejects_bad_configs():
    with pytest.raises(ValueError, match='either scales'):
        AnchorGenerator(strides=[8], ratios=[1.0], scales=[1], octave_base_scale=4,
                        scales_per_octave=1)
    with pytest.raises(ValueError, match='either scales'):
        AnchorGenerator(strides=[8], ratios=[1.0])
    with pytest.raises(ValueError, match='base_sizes'):
        AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1], base_sizes=[8])
    gen = AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1])
    with pytest.raises(ValueError, match='2 levels'):
        gen.grid_priors([(2, 2)])


def test_octave_scales():
    gen = AnchorGenerator(strides=[8], ratios=[1.0], octave_base_scale=4, scales_per_octave=3)
    torch.testing.assert_close(gen.scales, 4 * torch.tensor([1., 2 ** (1 / 3), 2 ** (2 / 3)]))


def test_point_generator_centres_and_strides():
    gen = TASK_UTILS.build(dict(type='MlvlPointGenerator', strides=[8, (16, 32)]))
    p0, p1 = gen.grid_priors([(2, 3), (1, 2)], with_stride=True)
    expected0 = torch.tensor([[4., 4.], [12., 4.], [20., 4.], [4., 12.], [12., 12.], [20., 12.]])
    torch.testing.assert_close(p0[:, :2], expected0)
    torch.testing.assert_close(p0[:, 2:], torch.full((6, 2), 8.))
    torch.testing.assert_close(p1, torch.tensor([[8., 16., 16., 32.], [24., 16., 16., 32.]]))
    (q0,) = MlvlPointGenerator([8], offset=0.).grid_priors([(2, 3)])
    torch.testing.assert_close(q0, expected0 - 4)
    assert gen.num_base_priors == [1, 1]


def test_point_generator_sparse_and_valid_flags():
    gen = MlvlPointGenerator([8])
    (grid,) = gen.grid_priors([(3, 4)])
    idx = torch.tensor([0, 5, 11])
    torch.testing.assert_close(gen.sparse_priors(idx, (3, 4), 0), grid[idx])
    (flags,) = gen.valid_flags([(3, 4)], (9, 8))
    assert flags.reshape(3, 4).equal(torch.tensor([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]],
                                                  dtype=torch.bool))
