"""Match costs against hand-computed matrices; per-image and batched costs agree."""
import math

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.task_modules import MatchInputs
from codetr.registry import TASK_UTILS

LN3 = math.log(3.0)
IMG_META = dict(img_shape=(100, 200))  # (h, w): factor (w, h, w, h) = (200, 100, 200, 100)


def focal_pos(p: float) -> float:
    return -math.log(p) * 0.25 * (1 - p) ** 2


def focal_neg(p: float) -> float:
    return -math.log(1 - p) * 0.75 * p ** 2


def scene() -> tuple[InstanceData, InstanceData]:
    """3 queries, 2 GT boxes in a 100 x 200 (h x w) image.

    g0 = (0, 0, 100, 50) px -> cxcywh (0.25, 0.25, 0.5, 0.5), label 0
    g1 = (100, 50, 200, 100) px -> cxcywh (0.75, 0.75, 0.5, 0.5), label 1
    q0 sits exactly on g1, q1 exactly on g0, q2 covers the whole image.
    """
    preds = InstanceData(
        scores=torch.tensor([[0.0, LN3], [LN3, 0.0], [0.0, 0.0]]),  # p = 0.5 / 0.75
        bboxes=torch.tensor([[0.75, 0.75, 0.5, 0.5], [0.25, 0.25, 0.5, 0.5],
                             [0.5, 0.5, 1.0, 1.0]]))
    gts = InstanceData(bboxes=torch.tensor([[0.0, 0.0, 100.0, 50.0], [100.0, 50.0, 200.0, 100.0]]),
                       labels=torch.tensor([0, 1]))
    return preds, gts


def test_focal_loss_cost_hand_computed():
    preds, gts = scene()
    cost = TASK_UTILS.build(dict(type='FocalLossCost', weight=2.0))(preds, gts, IMG_META)
    c05 = focal_pos(0.5) - focal_neg(0.5)
    c075 = focal_pos(0.75) - focal_neg(0.75)
    expected = 2.0 * torch.tensor([[c05, c075], [c075, c05], [c05, c05]])
    torch.testing.assert_close(cost, expected)


def test_focal_loss_cost_binary_masks():
    preds = InstanceData(masks=torch.tensor([[[0.0, LN3]]]))  # (Q=1, H=1, W=2): p = 0.5, 0.75
    gts = InstanceData(masks=torch.tensor([[[1, 0]], [[0, 1]]]), labels=torch.tensor([0, 0]))
    cost = TASK_UTILS.build(dict(type='FocalLossCost', binary_input=True))(preds, gts)
    expected = [(focal_pos(0.5) + focal_neg(0.75)) / 2, (focal_neg(0.5) + focal_pos(0.75)) / 2]
    torch.testing.assert_close(cost, torch.tensor([expected]))


def test_classification_cost_is_negative_softmax_probability():
    preds = InstanceData(scores=torch.tensor([[0.0, 0.0, math.log(2)]]))  # (1/4, 1/4, 1/2)
    gts = InstanceData(labels=torch.tensor([2, 0]))
    cost = TASK_UTILS.build(dict(type='ClassificationCost', weight=3.0))(preds, gts)
    torch.testing.assert_close(cost, torch.tensor([[-1.5, -0.75]]))


def test_bbox_l1_cost_both_formats():
    preds, gts = scene()
    xywh = TASK_UTILS.build(dict(type='BBoxL1Cost', box_format='xywh', weight=5.0))
    # q0 vs g0: |0.5| + |0.5| = 1; q2 vs either: 0.25 + 0.25 + 0.5 + 0.5 = 1.5
    torch.testing.assert_close(xywh(preds, gts, IMG_META),
                               5.0 * torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.5, 1.5]]))
    xyxy = TASK_UTILS.build(dict(type='BBoxL1Cost'))
    # normalised xyxy: q2 = (0, 0, 1, 1) vs g0 = (0, 0, 0.5, 0.5) -> 1.0; q0 vs g0 -> 2.0
    torch.testing.assert_close(xyxy(preds, gts, IMG_META),
                               torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match='box_format'):
        TASK_UTILS.build(dict(type='BBoxL1Cost', box_format='cxcywh'))
    with pytest.raises(ValueError, match='img_shape'):
        xywh(preds, gts, None)


def test_iou_cost_hand_computed():
    preds, gts = scene()
    # q0 vs g0 touch at a corner: IoU 0, union 10000 px, enclosing box 20000 -> GIoU -0.5
    # q2 (whole image) vs g0: IoU 5000 / 20000, enclosing = union -> GIoU 0.25
    giou = TASK_UTILS.build(dict(type='IoUCost', iou_mode='giou', weight=2.0))
    torch.testing.assert_close(giou(preds, gts, IMG_META),
                               -2.0 * torch.tensor([[-0.5, 1.0], [1.0, -0.5], [0.25, 0.25]]))
    iou = TASK_UTILS.build(dict(type='IoUCost', iou_mode='iou'))
    torch.testing.assert_close(iou(preds, gts, IMG_META),
                               -torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.25, 0.25]]))


@pytest.mark.parametrize('cfg', [dict(type='FocalLossCost'), dict(type='ClassificationCost'),
                                 dict(type='BBoxL1Cost', box_format='xywh'),
                                 dict(type='IoUCost')])
def test_batched_cost_blocks_equal_per_image_costs(cfg):
    torch.manual_seed(0)
    cost = TASK_UTILS.build(cfg)
    num_gts, shapes = [2, 0, 3], [(64, 48), (32, 32), (100, 80)]
    preds, gts, metas = [], [], []
    for n, (h, w) in zip(num_gts, shapes):
        preds.append(InstanceData(scores=torch.randn(5, 4), bboxes=torch.rand(5, 4) * 0.5 + 0.2))
        xy = torch.rand(n, 2) * 0.5
        boxes = torch.cat([xy, xy + 0.3], dim=1) * torch.tensor([w, h, w, h])
        gts.append(InstanceData(bboxes=boxes, labels=torch.randint(0, 4, (n,))))
        metas.append(dict(img_shape=(h, w)))
    batched = cost.batch_cost(MatchInputs.from_lists(preds, gts, metas))
    assert batched.shape == (3, 5, 5)
    blocks = batched.split(num_gts, dim=-1)
    for b in range(3):
        torch.testing.assert_close(blocks[b][b], cost(preds[b], gts[b], metas[b]))
