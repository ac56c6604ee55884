"""FocalLoss and QualityFocalLoss against hand-computed values."""
import math

import pytest
import torch

from codetr.models.losses import FocalLoss, QualityFocalLoss
from codetr.registry import MODELS

LN3 = math.log(3.0)  # logit of p = 0.75


def test_focal_loss_hand_computed_labels_with_background():
    # sample 0: logits (0, ln3) -> p = (0.5, 0.75), label 0
    # sample 1: logits (0, 0) -> p = (0.5, 0.5), label 2 = background (C = 2)
    pred = torch.tensor([[0.0, LN3], [0.0, 0.0]])
    labels = torch.tensor([0, 2])
    pos = 0.25 * 0.5 ** 2 * math.log(2)           # alpha (1-p)^2 (-log p), p = 0.5
    neg_075 = 0.75 * 0.75 ** 2 * math.log(4)      # (1-alpha) p^2 (-log(1-p)), p = 0.75
    neg_05 = 0.75 * 0.5 ** 2 * math.log(2)        # p = 0.5
    expected = torch.tensor([[pos, neg_075], [neg_05, neg_05]])
    loss = FocalLoss(reduction='none')(pred, labels)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(FocalLoss(reduction='sum')(pred, labels), expected.sum())
    torch.testing.assert_close(FocalLoss()(pred, labels), expected.mean())
    torch.testing.assert_close(FocalLoss(loss_weight=2.0)(pred, labels, avg_factor=2.0),
                               2.0 * expected.sum() / 2.0)


def test_focal_loss_one_hot_target_equals_labels_and_activated_matches_logits():
    pred = torch.tensor([[0.3, -1.2, 2.0], [0.7, 0.1, -0.4]])
    labels = torch.tensor([2, 3])
    one_hot = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    loss = FocalLoss(reduction='none')
    torch.testing.assert_close(loss(pred, labels), loss(pred, one_hot))
    activated = FocalLoss(reduction='none', activated=True)
    torch.testing.assert_close(activated(pred.sigmoid(), labels), loss(pred, labels))


def test_focal_loss_weights_per_sample_and_per_element():
    pred = torch.tensor([[0.0, LN3], [0.0, 0.0]])
    labels = torch.tensor([0, 2])
    elementwise = FocalLoss(reduction='none')(pred, labels)
    weight = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(FocalLoss(reduction='sum')(pred, labels, weight),
                               elementwise[0].sum())
    element_weight = torch.tensor([[0.0, 1.0], [2.0, 0.0]])
    torch.testing.assert_close(FocalLoss(reduction='sum')(pred, labels, element_weight),
                               elementwise[0, 1] + 2 * elementwise[1, 0])
    torch.testing.assert_close(
        FocalLoss()(pred, labels, reduction_override='sum'), elementwise.sum())


def test_focal_loss_errors_name_the_fix():
    with pytest.raises(NotImplementedError, match='use_sigmoid=True'):
        FocalLoss(use_sigmoid=False)
    with pytest.raises(ValueError, match='reduction'):
        FocalLoss(reduction='avg')
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 2\]'):
        FocalLoss()(torch.zeros(1, 2), torch.tensor([5]))
    with pytest.raises(ValueError, match='avg_factor'):
        FocalLoss(reduction='sum')(torch.zeros(1, 2), torch.tensor([0]), avg_factor=1.0)


def test_quality_focal_loss_hand_computed():
    # sample 0: label 0 with IoU score 0.5, logits (ln3, 0) -> p = (0.75, 0.5)
    # sample 1: background (label 2), logits (0, ln3) -> p = (0.5, 0.75)
    pred = torch.tensor([[LN3, 0.0], [0.0, LN3]])
    labels = torch.tensor([0, 2])
    scores = torch.tensor([0.5, 0.9])  # background scores are ignored
    bce_075_05 = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))  # BCE(p=0.75, t=0.5)
    pos = bce_075_05 * (0.75 - 0.5) ** 2
    neg_05 = math.log(2) * 0.5 ** 2        # BCE(p, 0) * p^beta, p = 0.5
    neg_075 = math.log(4) * 0.75 ** 2
    expected = torch.tensor([pos + neg_05, neg_05 + neg_075])
    qfl = QualityFocalLoss(reduction='none')
    torch.testing.assert_close(qfl(pred, (labels, scores)), expected)
    torch.testing.assert_close(QualityFocalLoss()(pred, (labels, scores)), expected.mean())
    torch.testing.assert_close(
        QualityFocalLoss(loss_weight=3.0)(pred, (labels, scores), avg_factor=4.0),
        3.0 * expected.sum() / 4.0)


def test_quality_focal_loss_weights_and_tensor_target():
    pred = torch.tensor([[LN3, 0.0], [0.0, LN3]])
    labels, scores = torch.tensor([0, 2]), torch.tensor([0.5, 0.0])
    qfl = QualityFocalLoss(reduction='sum')
    per_sample = QualityFocalLoss(reduction='none')(pred, (labels, scores))
    torch.testing.assert_close(qfl(pred, (labels, scores), torch.tensor([0.0, 2.0])),
                               2 * per_sample[1])
    soft = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(qfl(pred, soft), per_sample.sum())
    # (N, C) weights act per class before the sum over classes
    element = QualityFocalLoss(reduction='none')(pred, soft, torch.tensor([[1.0, 0.0]] * 2))
    neg_05 = math.log(2) * 0.25
    torch.testing.assert_close(element[1], torch.tensor(neg_05))
    activated = QualityFocalLoss(reduction='none', activated=True)
    torch.testing.assert_close(activated(pred.sigmoid(), (labels, scores)), per_sample)


@pytest.mark.parametrize('cfg', [dict(type='FocalLoss'), dict(type='QualityFocalLoss')])
def test_empty_input_gives_zero_with_gradient(cfg):
    pred = torch.zeros(0, 3, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long)
    target = (labels, torch.zeros(0)) if cfg['type'] == 'QualityFocalLoss' else labels
    loss_module = MODELS.build(cfg)
    for reduction in ('sum', 'mean'):
        loss = loss_module(pred, target, reduction_override=reduction)
        assert loss.item() == 0.0
        loss.backward()
        assert pred.grad is not None and pred.grad.shape == (0, 3)
