"""L1, smooth-L1, GIoU and IoU losses against hand-computed values."""
import math

import pytest
import torch

from codetr.models.losses import GIoULoss, IoULoss, L1Loss, SmoothL1Loss, weight_reduce_loss
from codetr.registry import MODELS


def test_weight_reduce_loss_modes():
    loss = torch.tensor([1.0, 2.0, 3.0])
    weight = torch.tensor([1.0, 0.0, 2.0])
    torch.testing.assert_close(weight_reduce_loss(loss, weight, 'sum'), torch.tensor(7.0))
    torch.testing.assert_close(weight_reduce_loss(loss, weight, 'mean'), torch.tensor(7.0 / 3))
    torch.testing.assert_close(weight_reduce_loss(loss, weight, 'mean', avg_factor=2.0),
                               torch.tensor(3.5))
    torch.testing.assert_close(weight_reduce_loss(loss, weight, 'none'),
                               torch.tensor([1.0, 0.0, 6.0]))
    # avg_factor 0 (no GT anywhere in the batch) must not divide by zero
    assert weight_reduce_loss(loss * 0, None, 'mean', avg_factor=0).item() == 0.0


def test_l1_and_smooth_l1_hand_computed():
    pred = torch.tensor([[0.0, 0.5, 2.0, 4.0]])
    target = torch.tensor([[1.0, 0.0, 2.0, 1.0]])
    # |d| = 1, 0.5, 0, 3
    torch.testing.assert_close(L1Loss(reduction='sum')(pred, target), torch.tensor(4.5))
    torch.testing.assert_close(L1Loss(loss_weight=5.0)(pred, target), torch.tensor(5 * 4.5 / 4))
    # beta 1: |d| < 1 -> 0.5 d^2, else |d| - 0.5: 0.5, 0.125, 0, 2.5
    torch.testing.assert_close(SmoothL1Loss(reduction='none')(pred, target),
                               torch.tensor([[0.5, 0.125, 0.0, 2.5]]))
    # beta 2: 0.5 d^2 / 2 below 2: 0.25, 0.0625, 0, and 3 - 1 = 2
    torch.testing.assert_close(SmoothL1Loss(beta=2.0, reduction='sum')(pred, target),
                               torch.tensor(2.3125))


def test_l1_weights_per_box_and_per_coordinate():
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    target = torch.zeros(2, 4)
    l1 = L1Loss()
    torch.testing.assert_close(l1(pred, target, torch.tensor([0.0, 1.0]), avg_factor=2.0),
                               torch.tensor(8.0 / 2))
    coord_weight = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    torch.testing.assert_close(l1(pred, target, coord_weight, reduction_override='sum'),
                               torch.tensor(3.0))
    with pytest.raises(ValueError, match='same shape'):
        l1(pred, target[:, :2])


def test_giou_loss_hand_computed():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    # pair 0: inter 1, union 7, enclose 9 -> GIoU 1/7 - 2/9
    # pair 1: inter 0, union 2, enclose 3 -> GIoU 0 - 1/3
    # pair 2: identical -> GIoU 1
    expected = torch.tensor([1 - (1 / 7 - 2 / 9), 1 + 1 / 3, 0.0])
    torch.testing.assert_close(GIoULoss(reduction='none')(pred, target), expected)
    torch.testing.assert_close(GIoULoss(loss_weight=2.0)(pred, target), 2 * expected.mean())
    # (N, 4) weights are averaged over the coordinates
    weight4 = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0], [0.0] * 4])
    torch.testing.assert_close(GIoULoss(reduction='sum')(pred, target, weight4),
                               expected[0] + 0.5 * expected[1])
    torch.testing.assert_close(
        GIoULoss()(pred, target, torch.tensor([1.0, 0.0, 1.0]), avg_factor=2.0),
        expected[0] / 2)


def test_iou_loss_modes_hand_computed():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0]])  # IoU 1/7
    iou = 1 / 7
    torch.testing.assert_close(IoULoss(reduction='sum')(pred, target),
                               torch.tensor(-math.log(iou)))
    torch.testing.assert_close(IoULoss(linear=True, reduction='sum')(pred, target),
                               torch.tensor(1 - iou))
    torch.testing.assert_close(IoULoss(mode='square', reduction='sum')(pred, target),
                               torch.tensor(1 - iou ** 2))
    with pytest.raises(ValueError, match='mode'):
        IoULoss(mode='cube')


@pytest.mark.parametrize('name', ['L1Loss', 'SmoothL1Loss', 'GIoULoss', 'IoULoss'])
def test_empty_boxes_give_zero_with_gradient(name):
    pred = torch.zeros(0, 4, requires_grad=True)
    loss_module = MODELS.build(dict(type=name, loss_weight=2.0))
    for kwargs in (dict(reduction_override='sum'), dict(), dict(avg_factor=1.0)):
        loss = loss_module(pred, torch.zeros(0, 4), **kwargs)
        assert loss.item() == 0.0
        loss.backward()
        assert pred.grad is not None
