"""DeltaXYWHBBoxCoder and DistancePointBBoxCoder: hand values, round trips, clamping."""
import math

import pytest
import torch

from codetr.models.task_modules import DeltaXYWHBBoxCoder, DistancePointBBoxCoder
from codetr.registry import TASK_UTILS


def test_delta_encode_hand_values():
    coder = DeltaXYWHBBoxCoder()
    prior = torch.tensor([[0., 0., 10., 20.]])  # centre (5, 10), size (10, 20)
    gt = torch.tensor([[2., 4., 22., 24.]])     # centre (12, 14), size (20, 20)
    expected = torch.tensor([[0.7, 0.2, math.log(2.), 0.]])
    torch.testing.assert_close(coder.encode(prior, gt), expected)
    normed = DeltaXYWHBBoxCoder(target_means=(0.1, 0., 0., 0.), target_stds=(0.1, 0.1, 0.2, 0.2))
    torch.testing.assert_close(normed.encode(prior, gt),
                               torch.tensor([[6., 2., 5 * math.log(2.), 0.]]))


@pytest.mark.parametrize('stds', [(1., 1., 1., 1.), (0.1, 0.1, 0.2, 0.2)])
def test_delta_round_trip_is_identity(stds):
    coder = TASK_UTILS.build(dict(type='DeltaXYWHBBoxCoder', target_means=(0., 0., 0., 0.),
                                  target_stds=stds))
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 7, 2, generator=gen) * 50
    priors = torch.cat([xy, xy + 5 + torch.rand(2, 7, 2, generator=gen) * 30], dim=-1)
    gxy = torch.rand(2, 7, 2, generator=gen) * 50
    gts = torch.cat([gxy, gxy + 5 + torch.rand(2, 7, 2, generator=gen) * 30], dim=-1)
    decoded = coder.decode(priors, coder.encode(priors, gts))
    torch.testing.assert_close(decoded, gts, rtol=0, atol=1e-4)


def test_delta_decode_clamps_scale_and_border():
    coder = DeltaXYWHBBoxCoder()
    prior = torch.tensor([[10., 10., 20., 20.]])
    # dw = 10 would scale by e^10; clamped to |log(16 / 1000)| = log(62.5)
    boxes = coder.decode(prior, torch.tensor([[0., 0., 10., -10.]]))
    half_w, half_h = 0.5 * 10 * 62.5, 0.5 * 10 / 62.5
    torch.testing.assert_close(boxes, torch.tensor([[15 - half_w, 15 - half_h,
                                                     15 + half_w, 15 + half_h]]))
    clipped = coder.decode(prior, torch.tensor([[0., 0., 10., -10.]]), max_shape=(30, 40))
    torch.testing.assert_close(clipped, torch.tensor([[0., 15 - half_h, 40., 15 + half_h]]))
    with_channels = coder.decode(prior, torch.tensor([[0., 0., 10., -10.]]), max_shape=(30, 40, 3))
    torch.testing.assert_close(with_channels, clipped)
    # per-image limits for a batch of 2
    batched = coder.decode(prior.expand(2, 1, 4), torch.tensor([[[1., 1., 0., 0.]]] * 2),
                           max_shape=[(100, 100), (22, 23)])
    torch.testing.assert_close(batched, torch.tensor([[[20., 20., 30., 30.]],
                                                      [[20., 20., 23., 22.]]]))


def test_delta_decode_several_boxes_per_prior_and_ctr_clamp():
    coder = DeltaXYWHBBoxCoder(add_ctr_clamp=True, ctr_clamp=4)
    prior = torch.tensor([[0., 0., 10., 10.]])
    deltas = torch.tensor([[0., 0., 0., 0., 1., -1., 0., 0.]])  # k = 2 boxes per prior
    boxes = coder.decode(prior, deltas)
    assert boxes.shape == (1, 8)
    # second box: shift of 10 px clamped to 4
    torch.testing.assert_close(boxes, torch.tensor([[0., 0., 10., 10., 4., -4., 14., 6.]]))


def test_delta_rejects_mismatched_inputs_and_accepts_empty_ones():
    coder = DeltaXYWHBBoxCoder()
    assert coder.decode(torch.zeros(0, 4), torch.zeros(0, 4), max_shape=(8, 8)).shape == (0, 4)
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    with pytest.raises(ValueError, match='one GT per prior'):
        coder.encode(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match='4 values'):
        DeltaXYWHBBoxCoder(target_stds=(1., 1.))


def test_distance_coder_hand_values_and_round_trip():
    coder = TASK_UTILS.build(dict(type='DistancePointBBoxCoder'))
    points = torch.tensor([[10., 10.], [0., 5.]])
    gts = torch.tensor([[4., 6., 20., 30.], [2., 1., 8., 9.]])
    dist = coder.encode(points, gts)
    torch.testing.assert_close(dist, torch.tensor([[6., 4., 10., 20.], [-2., 4., 8., 4.]]))
    torch.testing.assert_close(coder.decode(points, dist), gts)
    torch.testing.assert_close(coder.encode(points, gts, max_dis=8., eps=0.1),
                               torch.tensor([[6., 4., 7.9, 7.9], [0., 4., 7.9, 4.]]))
    clipped = coder.decode(points, dist, max_shape=(25, 15))
    torch.testing.assert_close(clipped, torch.tensor([[4., 6., 15., 25.], [2., 1., 8., 9.]]))
    no_clip = DistancePointBBoxCoder(clip_border=False).decode(points, dist, max_shape=(25, 15))
    torch.testing.assert_close(no_clip, gts)
