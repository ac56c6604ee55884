"""CoPAAHead: the mixture fit, PAA's split on hand-made boxes, losses, positives, prediction."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.structures import InstanceData

from codetr.models.aux_heads.anchor_head_utils import anchor_targets
from codetr.models.aux_heads.paa_utils import (
    fit_gmm_1d,
    gmm_positives,
    paa_select,
    score_voting,
)
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
        type='CoPAAHead', num_classes=NUM_CLASSES, in_channels=WIDTH, feat_channels=WIDTH,
        norm_cfg=dict(type='GN', num_groups=4),
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], scales_per_octave=1,
                              octave_base_scale=octave_base_scale, strides=list(strides)),
        **kwargs))


def pyramid_for(size: int, strides, batch: int = 2) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(batch, WIDTH, size // s, size // s, requires_grad=True) for s in strides]


def focal_positive(logit: float, alpha: float = 0.25) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -alpha * (1 - p) ** 2 * math.log(p)


# ------------------------------------------------------------------ the mixture
def test_gmm_fit_matches_scikit_learn():
    """GaussianMixture(2, covariance_type='diag') of scikit-learn 1.9.1 with PAA's
    initialisation (means at min / max, unit precisions, equal weights) on three rows of
    ascending losses, fitted here in one batch with padding."""
    rows = [[0.21, 0.25, 0.3, 0.34, 0.41, 1.2, 1.35, 1.6, 1.9],
            [0.35, 0.4, 0.52, 0.6, 0.71, 0.9, 1.05, 1.4],
            [0.5, 0.9, 1.1, 1.3, 1.8, 2.6]]
    sklearn = [  # means_, covariances_, weights_, PAA positives
        ([0.30199724, 1.51245678], [0.00485684, 0.07051556], [0.55553842, 0.44446158], 3),
        ([0.49561307, 1.01819345], [0.0155565, 0.0754504], [0.52995378, 0.47004622], 3),
        ([0.94660326, 2.04286046], [0.10079671, 0.29404526], [0.61682039, 0.38317961], 2)]
    x = torch.full((3, 9), 99.0, dtype=torch.float64)  # padding far away must not matter
    valid = torch.zeros(3, 9, dtype=torch.bool)
    for i, row in enumerate(rows):
        x[i, :len(row)] = torch.tensor(row, dtype=torch.float64)
        valid[i, :len(row)] = True
    gmm = fit_gmm_1d(x, valid)
    positives = gmm_positives(x, valid)
    for i, (means, variances, weights, num_pos) in enumerate(sklearn):
        torch.testing.assert_close(gmm.means[i], torch.tensor(means, dtype=torch.float64),
                                   atol=1e-7, rtol=0)
        torch.testing.assert_close(gmm.variances[i],
                                   torch.tensor(variances, dtype=torch.float64),
                                   atol=1e-7, rtol=0)
        torch.testing.assert_close(gmm.weights[i], torch.tensor(weights, dtype=torch.float64),
                                   atol=1e-7, rtol=0)
        assert positives[i].tolist() == [j < num_pos for j in range(9)]


def test_bimodal_losses_split_at_the_peak_of_the_low_component():
    """Two well separated clusters: EM ends at each cluster's mean and (population)
    variance + 1e-6, weights 1/2. The low cluster (0.10, 0.13, 0.14, 0.19) has mean 0.14, so
    the mixture peaks there among its members: the positives are 0.10, 0.13 and 0.14."""
    x = torch.tensor([[0.10, 0.13, 0.14, 0.19, 1.9, 2.0, 2.1, 2.2]], dtype=torch.float64)
    valid = torch.ones_like(x, dtype=torch.bool)
    gmm = fit_gmm_1d(x, valid)
    torch.testing.assert_close(gmm.means[0], torch.tensor([0.14, 2.05], dtype=torch.float64))
    torch.testing.assert_close(gmm.variances[0],
                               torch.tensor([0.00105, 0.0125], dtype=torch.float64) + 1e-6)
    torch.testing.assert_close(gmm.weights[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert gmm_positives(x, valid)[0].tolist() == [True] * 3 + [False] * 5


def test_paa_select_pools_topk_per_level_and_keeps_a_lone_candidate():
    """GT 0: level 0 (0.1, 0.12, 5.0), level 1 (0.11, 2.0, 2.1); topk 2 pools 0.1, 0.12,
    0.11, 2.0; the low component (mean 0.11) peaks at 0.11, so 0.1 and 0.11 stay. GT 1 has one
    candidate, which stays."""
    losses = torch.tensor([0.1, 0.12, 5.0, 0.11, 2.0, 2.1, 0.7])
    gt_inds = torch.tensor([0, 0, 0, 0, 0, 0, 1])
    levels = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    keep = paa_select(losses, gt_inds, levels, num_gts=2, num_levels=2, topk=2)
    assert keep.tolist() == [True, False, False, True, False, False, True]
    assert not paa_select(losses[:0], gt_inds[:0], levels[:0], 2, 2, 2).any()


# ------------------------------------------------------------------ the head's assignment
def test_good_and_bad_candidates_on_hand_made_boxes():
    """32 px image, 16 px anchors at stride 8 and 32 px at stride 16, one GT (4, 4, 20, 20).

    The max-IoU rule (IoU >= 0.1) makes 16 anchors candidates. Three of them predict the GT
    box exactly with class-1 logits 3, 1 and 0 (other classes -10): their loss is the focal
    term alone, 2.7e-5, 5.7e-3 and 4.3e-2. The others predict their anchor box with logits
    -4: loss >= 1.86. The low component holds the three good ones (mean 1.6e-2); its peak is
    the second, so exactly the two best are positive.
    """
    head = build_head(strides=(8, 16), octave_base_scale=2)
    gt = torch.tensor([[4.0, 4.0, 20.0, 20.0]])
    sample = make_sample(gt.tolist(), [1], size=32)
    anchors = torch.cat(head.prior_generator.grid_priors([(4, 4), (2, 2)]))
    inside = torch.ones(len(anchors), dtype=torch.bool)
    initial = anchor_targets(anchors, inside, sample, NUM_CLASSES, -1, head.assigner.assign)
    candidates = (initial.labels < NUM_CLASSES).nonzero().squeeze(1)
    assert torch.equal(candidates, (bbox_overlaps(anchors, gt)[:, 0] >= 0.1).nonzero()[:, 0])

    good = [10, 9, 6]  # stride-8 anchors (8, 8, 24, 24), (0, 8, 16, 24), (8, 0, 24, 16)
    cls = torch.full((1, len(anchors), NUM_CLASSES), -4.0)
    deltas = torch.zeros(1, len(anchors), 4)
    for index, logit in zip(good, [3.0, 1.0, 0.0]):
        cls[0, index] = torch.tensor([-10.0, logit, -10.0])
        deltas[0, index] = head.bbox_coder.encode(anchors[index:index + 1], gt)[0]
    costs = head.candidate_losses(anchors[good], cls[0, good], deltas[0, good],
                                  initial.labels[good], initial.label_weights[good],
                                  initial.gt_boxes[good])
    expected = [focal_positive(v) + 2 * 0.75 * (1 / (1 + math.exp(10))) ** 2 * math.log1p(
        math.exp(-10)) for v in (3.0, 1.0, 0.0)]  # + two negligible negative-class terms
    torch.testing.assert_close(costs, torch.tensor(expected), rtol=1e-4, atol=1e-7)

    target = head.get_targets(anchors, [inside], [(4, 4), (2, 2)], [sample], cls, deltas)[0]
    assert (target.labels < NUM_CLASSES).nonzero()[:, 0].tolist() == [9, 10]
    assert target.num_pos == 2 and (target.labels[[9, 10]] == 1).all()
    assert (target.gt_boxes[[9, 10]] == gt).all() and target.gt_inds[[9, 10]].tolist() == [0, 0]
    others = torch.ones(len(anchors), dtype=torch.bool)
    others[[9, 10]] = False
    assert (target.labels[others] == NUM_CLASSES).all() and (target.gt_boxes[others] == 0).all()
    assert (target.label_weights == 1).all()  # dropped candidates train as background


# ------------------------------------------------------------------ losses and positives
def test_loss_normalisers_with_zero_predictions():
    """Zero conv weights: every class probability is the prior 0.01, deltas 0 decode to the
    anchors, IoU logits 0. The losses follow MMDetection's PAA normalisers."""
    head = build_head(strides=(8, 16), octave_base_scale=2)
    for layer in (head.paa_cls, head.paa_reg, head.paa_iou):
        torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(head.paa_reg.bias)
    torch.nn.init.zeros_(head.paa_iou.bias)
    sample = make_sample([[2.0, 12.0, 30.0, 15.0], [8.0, 6.0, 24.0, 26.0]], [2, 0], size=32)
    losses, positives = head.loss(pyramid_for(32, (8, 16), batch=1), [sample])

    pos = positives.bbox_weights[0] > 0
    num_pos = int(pos.sum())
    assert num_pos > 0
    p, alpha = 0.01, 0.25
    neg = -(1 - alpha) * p ** 2 * math.log(1 - p)
    pos_term = -alpha * (1 - p) ** 2 * math.log(p)
    expected_cls = (num_pos * pos_term + (20 * NUM_CLASSES - num_pos) * neg) / num_pos
    assert losses['loss_cls'].item() == pytest.approx(expected_cls, rel=1e-4)
    assert losses['loss_iou'].item() == pytest.approx(0.5 * math.log(2), rel=1e-5)
    coords, targets = positives.coords[0][pos], positives.targets[0][pos]
    iou = bbox_overlaps(coords, targets, is_aligned=True)
    giou = bbox_overlaps(coords, targets, mode='giou', is_aligned=True)
    expected_bbox = 1.3 * (iou * (1 - giou)).sum() / iou.sum()
    assert losses['loss_bbox'].item() == pytest.approx(expected_bbox.item(), rel=1e-5)


def test_loss_gradients_and_positive_shapes():
    head = build_head()
    pyramid = pyramid_for(64, (8, 16, 32))
    samples = [make_sample([[4, 6, 40, 50], [30, 20, 60, 36]], [0, 2]),
               make_sample([[10, 10, 30, 28]], [1])]
    losses, positives = head.loss(pyramid, samples)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_iou'}
    assert all(v.dim() == 0 and torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    params = dict(head.named_parameters())
    assert [n for n, p in params.items() if p.grad is None] == []
    # a level's Scale only moves through its own positives' boxes
    assert [n for n, p in params.items() if not p.grad.any() and 'scales' not in n] == []

    num_pos = (positives.bbox_weights > 0).sum(1)
    m = min(max(int(num_pos.max()), 9), 300)
    assert positives.coords.shape == (2, m, 4) and positives.targets.shape == (2, m, 4)
    assert positives.labels.shape == (2, m) and positives.feats.shape == (2, m, WIDTH)
    assert (positives.label_weights == 1).all()
    pos = positives.bbox_weights > 0
    assert (positives.labels[pos] < NUM_CLASSES).all()
    assert (positives.labels[~pos] == NUM_CLASSES).all()
    for i, sample in enumerate(samples):  # every GT box keeps at least one positive
        gts = sample.gt_instances.bboxes
        hits = (positives.targets[i][pos[i]][:, None] == gts[None]).all(-1)
        assert hits.any(-1).all() and hits.any(0).all()
    anchors = torch.cat(head.prior_generator.grid_priors([(8, 8), (4, 4), (2, 2)]))
    flat = torch.cat([p.flatten(2).transpose(1, 2) for p in pyramid], 1)
    idx = (positives.coords[0][:, None] == anchors[None]).all(-1).float().argmax(1)
    assert torch.equal(positives.feats[0], flat[0][idx])


def test_image_without_boxes_trains_background_only():
    head = build_head()
    losses, positives = head.loss(pyramid_for(64, (8, 16, 32), batch=1), [make_sample([], [])])
    assert losses['loss_cls'] > 0
    assert losses['loss_bbox'] == 0 and losses['loss_iou'] == 0
    sum(losses.values()).backward()  # the zero losses still reach the box and IoU branches
    assert head.paa_reg.weight.grad is not None and head.paa_iou.weight.grad is not None
    assert positives.coords.shape == (1, 9, 4) and (positives.labels == NUM_CLASSES).all()


# ------------------------------------------------------------------ inference
def test_score_voting_by_hand():
    """Detection (0, 0, 10, 10) of class 0; candidates: itself (score 0.9), (0, 0, 10, 12)
    (IoU 10/12, score 0.6), a class-1 box and a disjoint box (neither votes)."""
    det = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    cands = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 12.0],
                          [0.0, 0.0, 10.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.6, 0.8, 0.9])
    labels = torch.tensor([0, 0, 1, 0])
    w = 0.6 * math.exp(-(1 - 10 / 12) ** 2 / 0.025)
    expected = (0.9 * det[0] + w * cands[1]) / (0.9 + w)
    voted = score_voting(det, torch.tensor([0]), cands, scores, labels)
    torch.testing.assert_close(voted[0], expected)


def test_predict_with_and_without_score_voting():
    head = build_head(test_cfg=dict(score_thr=0.0, max_per_img=5, nms_pre=50))
    pyramid = pyramid_for(64, (8, 16, 32), batch=1)
    with torch.no_grad():
        voted = head.predict(pyramid, [make_sample([], [])], rescale=False)[0]
        rescaled = head.predict(pyramid, [make_sample([], [], scale=0.5)], rescale=True)[0]
        head.score_voting = False
        plain = head.predict(pyramid, [make_sample([], [])], rescale=False)[0]
    assert len(plain) == 5 and plain.bboxes.shape == (5, 4)
    assert (plain.scores[:-1] >= plain.scores[1:]).all()
    assert (plain.bboxes >= 0).all() and (plain.bboxes <= 64).all()  # clipped to img_shape
    # voting moves boxes, never scores or labels
    assert torch.equal(voted.scores, plain.scores) and torch.equal(voted.labels, plain.labels)
    assert not torch.allclose(voted.bboxes, plain.bboxes)
    torch.testing.assert_close(rescaled.bboxes, voted.bboxes * 2)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match='one ratio'):
        MODELS.build(dict(type='CoPAAHead', num_classes=2, anchor_generator=dict(
            type='AnchorGenerator', ratios=[0.5, 1.0], octave_base_scale=8,
            scales_per_octave=1, strides=[8])))
    with pytest.raises(ValueError, match='topk'):
        build_head(topk=0)
    with pytest.raises(ValueError, match='pyramid levels'):
        build_head().loss(pyramid_for(64, (8, 16)), [make_sample([], [])])


def test_default_head_is_mmdetections_paa():
    head = MODELS.build(dict(type='CoPAAHead', num_classes=80))
    assert head.eval_kind == 'one-stage' and head.topk == 9 and head.score_voting
    assert (head.assigner.pos_iou_thr, head.assigner.neg_iou_thr) == (0.1, 0.1)
    assert (head.loss_cls.loss_weight, head.loss_bbox.loss_weight,
            head.loss_iou.loss_weight) == (1.0, 1.3, 0.5)
    assert head.paa_cls.out_channels == 80 and head.paa_iou.out_channels == 1
    assert len(head.cls_convs) == 1 and len(head.scales) == 6
    assert head.paa_cls.bias[0].item() == pytest.approx(-math.log(99))


def test_tiny_co_dino_with_paa_alone_trains_every_parameter():
    """K = 1: a tiny Co-DINO (pyramid strides 16, 32, 64) with the PAA head as its only aux
    head; every parameter gets a finite gradient and the collaborative ones a non-zero one."""
    from tests.models.test_co_detr import EMBED, aux_model_cfg, build, make_batch

    paa = dict(type='CoPAAHead', num_classes=4, in_channels=EMBED, feat_channels=EMBED,
               norm_cfg=dict(type='GN', num_groups=8),
               anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=2,
                                     scales_per_octave=1, strides=[16, 32, 64]))
    model = build(aux_model_cfg(aux_heads=dict(paa=paa)))
    model.train()
    data = model.data_preprocessor(make_batch([(64, 64), (48, 56)]), training=True)
    losses = model(**data, mode='loss')
    assert {'paa.loss_cls', 'paa.loss_bbox', 'paa.loss_iou', 'paa.pos.loss_cls',
            'paa.pos.d0.loss_iou'} <= set(losses)
    total, _ = model.parse_losses(losses)
    total.backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, f'parameters without a finite gradient: {missing}'
    collaborative = ('aux_heads.', 'adapter.', 'query_head.pos_query_generators.')
    zero = [n for n, p in model.named_parameters()
            if n.startswith(collaborative) and not p.grad.any() and 'scales' not in n]
    assert not zero, f'collaborative parameters with a zero gradient: {zero}'
