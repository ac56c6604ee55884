import pytest
import torch
from mmengine.structures import InstanceData

from codetr.structures import (
    DetDataSample,
    bbox_area,
    bbox_cxcywh_to_xyxy,
    bbox_flip,
    bbox_overlaps,
    bbox_xyxy_to_cxcywh,
    clip_bboxes,
    generalized_box_iou,
    scale_boxes,
)


def test_xyxy_cxcywh_round_trip():
    torch.manual_seed(0)
    xy = torch.rand(2, 7, 2) * 50
    boxes = torch.cat([xy, xy + torch.rand(2, 7, 2) * 30 + 1], dim=-1)
    back = bbox_cxcywh_to_xyxy(bbox_xyxy_to_cxcywh(boxes))
    torch.testing.assert_close(back, boxes)
    assert bbox_xyxy_to_cxcywh(torch.tensor([0., 0., 4., 2.])).tolist() == [2., 1., 4., 2.]


def test_area_and_iou_hand_values():
    a = torch.tensor([[0., 0., 2., 2.]])
    b = torch.tensor([[1., 1., 3., 3.], [4., 4., 5., 5.], [0., 0., 2., 2.]])
    assert bbox_area(b).tolist() == [4., 1., 4.]
    # overlap 1, union 7; disjoint; identical
    torch.testing.assert_close(bbox_overlaps(a, b), torch.tensor([[1 / 7, 0., 1.]]))
    # IoF: overlap / area of the first box
    torch.testing.assert_close(bbox_overlaps(a, b, mode='iof'), torch.tensor([[0.25, 0., 1.]]))
    # GIoU for the disjoint pair: enclosing box 5x5=25, union 5 -> 0 - 20/25
    giou = generalized_box_iou(a, b)
    torch.testing.assert_close(giou, torch.tensor([[1 / 7 - (9 - 7) / 9, -0.8, 1.]]))


def test_aligned_matches_diagonal_of_pairwise():
    torch.manual_seed(1)
    xy = torch.rand(5, 2) * 10
    b1 = torch.cat([xy, xy + torch.rand(5, 2) * 5 + 0.1], dim=1)
    xy = torch.rand(5, 2) * 10
    b2 = torch.cat([xy, xy + torch.rand(5, 2) * 5 + 0.1], dim=1)
    for mode in ('iou', 'iof', 'giou'):
        pairwise = bbox_overlaps(b1, b2, mode=mode)
        aligned = bbox_overlaps(b1, b2, mode=mode, is_aligned=True)
        torch.testing.assert_close(aligned, pairwise.diagonal())


def test_batched_overlaps_and_empty_inputs():
    b = torch.rand(3, 4, 4)
    b[..., 2:] += b[..., :2]
    assert bbox_overlaps(b, b).shape == (3, 4, 4)
    assert bbox_overlaps(torch.zeros(0, 4), b[0]).shape == (0, 4)
    degenerate = torch.tensor([[1., 1., 1., 1.]])
    assert bbox_overlaps(degenerate, degenerate).item() == 0.0  # no NaN
    with pytest.raises(ValueError, match='mode'):
        bbox_overlaps(b[0], b[0], mode='dice')


def test_flip_clip_scale():
    boxes = torch.tensor([[10., 20., 30., 60.]])
    assert bbox_flip(boxes, (100, 200)).tolist() == [[170., 20., 190., 60.]]
    assert bbox_flip(boxes, (100, 200), 'vertical').tolist() == [[10., 40., 30., 80.]]
    assert bbox_flip(bbox_flip(boxes, (100, 200), 'diagonal'), (100, 200),
                     'diagonal').tolist() == boxes.tolist()
    assert clip_bboxes(torch.tensor([[-5., 3., 250., 120.]]), (100, 200)).tolist() == \
        [[0., 3., 200., 100.]]
    assert scale_boxes(boxes, (2.0, 0.5)).tolist() == [[20., 10., 60., 30.]]


def test_det_data_sample_fields():
    sample = DetDataSample(metainfo=dict(img_shape=(10, 20)))
    sample.gt_instances = InstanceData(bboxes=torch.zeros(2, 4), labels=torch.tensor([0, 1]))
    assert len(sample.gt_instances) == 2
    assert sample.img_shape == (10, 20)
    with pytest.raises(AssertionError):
        sample.pred_instances = {'bboxes': 1}  # must be an InstanceData
    del sample.gt_instances
    assert 'gt_instances' not in sample
