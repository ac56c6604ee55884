"""CoRetinaHead: the max-IoU rule of Table 1, loss values, positives, prediction."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.aux_heads.anchor_head_utils import image_anchors
from codetr.registry import MODELS
from codetr.structures import DetDataSample, bbox_overlaps

NUM_CLASSES = 3
WIDTH = 16


def make_sample(boxes: list[list[float]], labels: list[int], size: int = 64,
                scale: float = 1.0) -> DetDataSample:
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                         batch_input_shape=(size, size),
                                         scale_factor=(scale, scale)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                       labels=torch.tensor(labels, dtype=torch.long))
    return sample


def build_head(strides=(8, 16, 32), octave_base_scale=4, **kwargs):
    return MODELS.build(dict(
        type='CoRetinaHead', num_classes=NUM_CLASSES, in_channels=WIDTH, feat_channels=WIDTH,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=octave_base_scale,
                              scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                              strides=list(strides)), **kwargs))


def pyramid_for(size: int, strides, batch: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, WIDTH, size // s, size // s, requires_grad=True) for s in strides]


def anchors_of(head, sizes) -> torch.Tensor:
    return torch.cat(head.prior_generator.grid_priors(sizes))


def test_parameter_names_and_official_defaults():
    head = MODELS.build(dict(type='CoRetinaHead', num_classes=80))
    names = set(dict(head.named_parameters()))
    assert names == {'cls_convs.0.conv.weight', 'cls_convs.0.conv.bias',
                     'reg_convs.0.conv.weight', 'reg_convs.0.conv.bias', 'retina_cls.weight',
                     'retina_cls.bias', 'retina_reg.weight', 'retina_reg.bias'}
    assert head.retina_cls.out_channels == 9 * 80 and head.retina_reg.out_channels == 9 * 4
    assigner = head.assigner
    assert (assigner.pos_iou_thr, assigner.neg_iou_thr, assigner.min_pos_iou) == (0.5, 0.4, 0)
    assert head.retina_cls.bias[0].item() == pytest.approx(-math.log(99))


def test_max_iou_rule_on_hand_made_boxes():
    """Positives: IoU >= 0.5, or the best anchor of a GT (the thin box has no anchor at 0.5);
    negatives: IoU < 0.4; in between: ignored (label weight 0)."""
    head = build_head(strides=(8, 16), octave_base_scale=2)
    gts = torch.tensor([[2.0, 12.0, 30.0, 15.0], [8.0, 6.0, 24.0, 26.0]])
    sample = make_sample(gts.tolist(), [2, 0], size=32)
    anchors = anchors_of(head, [(4, 4), (2, 2)])
    inside = torch.ones(len(anchors), dtype=torch.bool)
    target = head.get_targets(anchors, [inside], [sample])[0]

    ious = bbox_overlaps(gts, anchors)  # (2, N)
    best, best_gt = ious.max(0)
    low_quality = (ious == ious.max(1, keepdim=True).values).any(0)
    assert ious[0].max() < 0.5  # the thin box is only matched by the low-quality rule
    expected_pos = (best >= 0.5) | low_quality
    pos = target.labels < NUM_CLASSES
    assert torch.equal(pos, expected_pos) and target.num_pos == int(expected_pos.sum())
    neg = ~pos & (best < 0.4)
    ignored = ~pos & ~neg
    assert neg.any() and ignored.any()
    assert (target.label_weights[pos | neg] == 1).all()
    assert (target.label_weights[ignored] == 0).all()
    assert (target.labels[~pos] == NUM_CLASSES).all()
    above = best >= 0.5
    assert torch.equal(target.gt_boxes[above], gts[best_gt[above]])
    assert torch.equal(target.labels[above], torch.tensor([2, 0])[best_gt[above]])
    assert (target.gt_boxes[~pos] == 0).all()


def test_loss_values_with_zero_predictions():
    """Deltas 0 decode to the anchors and every class probability is the prior 0.01."""
    head = build_head(strides=(8, 16), octave_base_scale=2)
    for layer in (head.retina_cls, head.retina_reg):
        torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(head.retina_reg.bias)
    gts = [[2.0, 12.0, 30.0, 15.0], [8.0, 6.0, 24.0, 26.0]]
    sample = make_sample(gts, [2, 0], size=32)
    losses, _ = head.loss(pyramid_for(32, (8, 16), batch=1), [sample])

    anchors = anchors_of(head, [(4, 4), (2, 2)])
    target = head.get_targets(anchors, [torch.ones(len(anchors), dtype=torch.bool)], [sample])[0]
    pos = target.labels < NUM_CLASSES
    num_pos, weighted = int(pos.sum()), int((target.label_weights > 0).sum())
    p, alpha = 0.01, 0.25
    neg_term = -(1 - alpha) * p ** 2 * math.log(1 - p)
    pos_term = -alpha * (1 - p) ** 2 * math.log(p)
    expected_cls = (num_pos * pos_term + (weighted * NUM_CLASSES - num_pos) * neg_term) / num_pos
    assert losses['loss_cls'].item() == pytest.approx(expected_cls, rel=1e-4)
    giou = bbox_overlaps(anchors[pos], target.gt_boxes[pos], mode='giou', is_aligned=True)
    expected_bbox = 2 * (1 - giou).sum().item() / num_pos
    assert losses['loss_bbox'].item() == pytest.approx(expected_bbox, rel=1e-5)


def test_loss_gradients_and_positives():
    head = build_head()
    pyramid = pyramid_for(64, (8, 16, 32))
    samples = [make_sample([[4, 6, 40, 50], [30, 20, 60, 36]], [0, 2]),
               make_sample([[10, 10, 30, 28]], [1])]
    losses, positives = head.loss(pyramid, samples)
    assert set(losses) == {'loss_cls', 'loss_bbox'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()] == []

    num_pos = (positives.bbox_weights > 0).sum(1)
    m = min(max(int(num_pos.max()), 9), 300)
    assert positives.coords.shape == (2, m, 4) and positives.feats.shape == (2, m, WIDTH)
    for i, sample in enumerate(samples):
        keep = positives.bbox_weights[i] > 0
        gts = sample.gt_instances.bboxes
        ious = bbox_overlaps(positives.coords[i][keep], positives.targets[i][keep],
                             is_aligned=True)
        best_of_gt = bbox_overlaps(gts, anchors_of(head, [(8, 8), (4, 4), (2, 2)])).max(1).values
        target_best = best_of_gt[(positives.targets[i][keep][:, None] == gts).all(-1).float()
                                 .argmax(1)]
        assert ((ious >= 0.5) | torch.isclose(ious, target_best)).all()


def test_feats_of_nine_anchors_per_location():
    head = build_head(strides=(16, 32), octave_base_scale=4)
    pyramid = pyramid_for(64, (16, 32), batch=1)
    _, positives = head.loss(pyramid, [make_sample([[0, 0, 40, 40]], [1])])
    anchors = anchors_of(head, [(4, 4), (2, 2)])
    idx = (positives.coords[0][:, None] == anchors[None]).all(-1).float().argmax(1)
    flat = torch.cat([p.flatten(2).transpose(1, 2) for p in pyramid], 1)[0]  # (20, C)
    assert torch.equal(positives.feats[0], flat[idx // 9])


def test_image_without_boxes():
    head = build_head()
    losses, positives = head.loss(pyramid_for(64, (8, 16, 32), batch=1), [make_sample([], [])])
    assert losses['loss_cls'] > 0 and losses['loss_bbox'] == 0
    assert positives.coords.shape == (1, 9, 4) and (positives.labels == NUM_CLASSES).all()
    assert (positives.bbox_weights == 0).all()


def test_predict_caps_detections_and_rescales():
    head = build_head(test_cfg=dict(score_thr=0.0, max_per_img=7))
    pyramid = pyramid_for(64, (8, 16, 32), batch=1)
    with torch.no_grad():
        plain = head.predict(pyramid, [make_sample([], [])], rescale=False)[0]
        rescaled = head.predict(pyramid, [make_sample([], [], scale=0.5)], rescale=True)[0]
    assert len(plain) == 7 and (plain.scores[:-1] >= plain.scores[1:]).all()
    assert (plain.bboxes >= 0).all() and (plain.bboxes <= 64).all()
    assert torch.allclose(rescaled.bboxes, plain.bboxes * 2)


def test_other_samplers_are_refused():
    with pytest.raises(ValueError, match='PseudoSampler'):
        build_head(train_cfg=dict(sampler=dict(type='RandomSampler', num=256)))


def test_anchors_outside_the_padded_or_real_image_take_no_part():
    """pad_shape (32, 64) on a 64 px map: stride-8 rows >= 4 and stride-16 rows >= 2 are
    invalid; with allowed_border 0 anchors crossing img_shape (24, 64) are left out too."""
    head = build_head(strides=(8, 16), octave_base_scale=2,
                      train_cfg=dict(allowed_border=0))
    sample = make_sample([[20.0, 4.0, 44.0, 20.0]], [1])
    sample.set_metainfo(dict(img_shape=(24, 64), pad_shape=(32, 64)))
    sizes = [(8, 8), (4, 4)]
    _, anchors, inside = image_anchors(head.prior_generator, sizes, [sample], 0,
                                       torch.zeros(1))
    rows = torch.cat([torch.arange(8).repeat_interleave(8 * 9),
                      torch.arange(4).repeat_interleave(4 * 9)])
    valid = torch.cat([rows[:576] < 4, rows[576:] < 2])
    within = ((anchors[:, :2] >= 0).all(1) & (anchors[:, 2] < 64) & (anchors[:, 3] < 24))
    assert torch.equal(inside[0], valid & within) and within.any() and (~within).any()

    target = head.get_targets(anchors, inside, [sample])[0]
    assert (target.label_weights[~inside[0]] == 0).all()
    assert (target.labels[~inside[0]] == NUM_CLASSES).all()
    assert target.num_pos > 0 and (target.labels[inside[0]] < NUM_CLASSES).sum() == target.num_pos
