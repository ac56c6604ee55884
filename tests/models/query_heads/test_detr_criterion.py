"""DetrCriterion: hand-computed losses, matching, denoising targets, key names, empty GT."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.layers.dn_query import CdnQueryGenerator
from codetr.models.query_heads import DetrCriterion, DetrTargets
from codetr.structures import DetDataSample

IMG_META = dict(img_shape=(100, 200))  # h, w
# pixel xyxy in the 100 x 200 image = normalised cxcywh (0.4, 0.4, 0.2, 0.2)
GT_BOX = [60.0, 30.0, 100.0, 50.0]


def _criterion(**kwargs) -> DetrCriterion:
    cfg = dict(num_classes=2,
               loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0,
                             loss_weight=1.0),
               loss_bbox=dict(type='L1Loss', loss_weight=5.0),
               loss_iou=dict(type='GIoULoss', loss_weight=2.0),
               assigner=dict(type='HungarianAssigner'))
    cfg.update(kwargs)
    return DetrCriterion(**cfg)


def _gt(boxes: list[list[float]], labels: list[int]) -> InstanceData:
    return InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4),
                        labels=torch.tensor(labels, dtype=torch.long))


def test_matched_losses_equal_hand_computed_values() -> None:
    crit = _criterion()
    cls = torch.zeros(1, 2, 2)  # every probability 0.5
    # query 0 is the GT shifted right by 0.05 (10 px); query 1 is far away
    boxes = torch.tensor([[[0.45, 0.4, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]]])
    targets = crit.match(cls, boxes, [_gt([GT_BOX], [1])], [IMG_META])
    assert targets.labels.tolist() == [[1, 2]] and targets.num_pos == 1
    assert targets.bbox_weights[0, :, 0].tolist() == [1.0, 0.0]
    torch.testing.assert_close(targets.bbox_targets[0, 0], torch.tensor([0.4, 0.4, 0.2, 0.2]))

    losses = crit.loss_single(cls, boxes, targets, [IMG_META])
    # L1: |0.45 - 0.4| / 1 positive, times 5
    assert losses['bbox'].item() == pytest.approx(0.25, rel=1e-5)
    # pred x 70..110, gt x 60..100, both y 30..50: IoU 600 / 1000, enclosure = union -> GIoU 0.6
    assert losses['iou'].item() == pytest.approx(2 * (1 - 0.6), rel=1e-5)
    # QFL at p = 0.5: three negatives BCE(.5, 0) * .5^2 = .25 ln2; the positive has target
    # IoU 0.6: BCE(.5, .6) * |.6 - .5|^2 = .01 ln2
    assert losses['cls'].item() == pytest.approx(0.76 * math.log(2), rel=1e-5)


def test_focal_loss_takes_plain_labels() -> None:
    crit = _criterion(loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                                    loss_weight=2.0))
    cls = torch.zeros(1, 2, 2)
    boxes = torch.tensor([[[0.4, 0.4, 0.2, 0.2], [0.8, 0.8, 0.1, 0.1]]])
    targets = crit.match(cls, boxes, [_gt([GT_BOX], [0])], [IMG_META])
    losses = crit.loss_single(cls, boxes, targets, [IMG_META])
    # focal at p = .5: positive .25 * .25 * ln2, each of 3 negatives .75 * .25 * ln2; weight 2
    expected = 2 * (0.25 * 0.25 + 3 * 0.75 * 0.25) * math.log(2)
    assert losses['cls'].item() == pytest.approx(expected, rel=1e-5)
    assert losses['bbox'].item() == pytest.approx(0.0, abs=1e-6)


def test_empty_gt_gives_positive_cls_and_zero_box_losses_with_gradient() -> None:
    crit = _criterion()
    cls = torch.zeros(2, 3, 2, requires_grad=True)
    boxes = torch.full((2, 3, 4), 0.3, requires_grad=True)
    losses = crit.loss_layers(cls[None], boxes[None], [IMG_META] * 2,
                              gt_instances_list=[_gt([], []), _gt([], [])])
    assert losses['loss_cls'].item() == pytest.approx(12 * 0.25 * math.log(2), rel=1e-5)
    assert losses['loss_bbox'].item() == 0 and losses['loss_iou'].item() == 0
    sum(losses.values()).backward()
    assert cls.grad is not None and boxes.grad is not None


def test_loss_layers_names_and_fixed_targets() -> None:
    crit = _criterion()
    cls, boxes = torch.zeros(3, 1, 2, 2), torch.full((3, 1, 2, 4), 0.4)
    matched = crit.loss_layers(cls, boxes, [IMG_META], gt_instances_list=[_gt([GT_BOX], [1])],
                               prefix='enc_')
    assert set(matched) == {f'{d}enc_loss_{n}' for d in ('', 'd0.', 'd1.')
                            for n in ('cls', 'bbox', 'iou')}
    targets = DetrTargets(labels=torch.tensor([[2, 2]]), label_weights=torch.ones(1, 2),
                          bbox_targets=torch.zeros(1, 2, 4), bbox_weights=torch.zeros(1, 2, 4),
                          num_pos=0)
    fixed = crit.loss_layers(cls[:2], boxes[:2], [IMG_META], targets=targets, suffix='_aux')
    assert set(fixed) == {f'{d}loss_{n}_aux' for d in ('', 'd0.') for n in ('cls', 'bbox', 'iou')}
    with pytest.raises(ValueError, match='exactly one'):
        crit.loss_layers(cls, boxes, [IMG_META])


def test_dn_targets_follow_the_generator_layout() -> None:
    torch.manual_seed(0)
    gen = CdnQueryGenerator(num_classes=2, embed_dims=4, num_matching_queries=3,
                            group_cfg=dict(dynamic=False, num_groups=2))
    samples = []
    for boxes, labels in (([GT_BOX], [1]), ([GT_BOX, [0.0, 0.0, 20.0, 10.0]], [0, 1])):
        sample = DetDataSample(metainfo=IMG_META)
        sample.gt_instances = _gt(boxes, labels)
        samples.append(sample)
    _, _, _, meta = gen(samples)
    crit = _criterion()
    targets = crit.dn_targets([s.gt_instances for s in samples], [IMG_META] * 2, meta,
                              torch.zeros(1))
    # per group: [pos slot 0, pos slot 1, neg slot 0, neg slot 1]; image 0 pads slot 1
    assert targets.labels.tolist() == [[1, 2, 2, 2] * 2, [0, 1, 2, 2] * 2]
    assert targets.num_pos == 2 * 3
    assert targets.bbox_weights[..., 0].sum().item() == 6
    assert targets.label_weights.sum().item() == 16  # padding and negatives count as bg
    torch.testing.assert_close(targets.bbox_targets[1, 5], torch.tensor([0.05, 0.05, 0.1, 0.1]))


def test_match_without_assigner_explains_the_fix() -> None:
    crit = _criterion(assigner=None)
    with pytest.raises(ValueError, match='train_cfg'):
        crit.match(torch.zeros(1, 2, 2), torch.full((1, 2, 4), 0.4), [_gt([GT_BOX], [0])],
                   [IMG_META])
