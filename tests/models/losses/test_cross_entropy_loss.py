"""CrossEntropyLoss: softmax, sigmoid (labels and binary targets) and mask criteria."""
import math

import pytest
import torch

from codetr.models.losses import CrossEntropyLoss

LN3 = math.log(3.0)


def test_softmax_cross_entropy_hand_computed():
    # row 0: logits (0, 0, ln2) -> softmax (1/4, 1/4, 1/2); row 1: (ln3, 0, 0) -> (3/5, 1/5, 1/5)
    pred = torch.tensor([[0.0, 0.0, math.log(2)], [LN3, 0.0, 0.0]])
    label = torch.tensor([2, 1])
    expected = torch.tensor([math.log(2), math.log(5)])
    torch.testing.assert_close(CrossEntropyLoss(reduction='none')(pred, label), expected)
    torch.testing.assert_close(CrossEntropyLoss()(pred, label), expected.mean())
    torch.testing.assert_close(
        CrossEntropyLoss(loss_weight=2.0)(pred, label, torch.tensor([0.0, 1.0]), avg_factor=4),
        2 * expected[1] / 4)
    # class_weight scales each sample by its label's weight
    weighted = CrossEntropyLoss(reduction='none', class_weight=[1.0, 3.0, 0.5])(pred, label)
    torch.testing.assert_close(weighted, expected * torch.tensor([0.5, 3.0]))


def test_softmax_ignore_index_and_avg_non_ignore():
    pred = torch.tensor([[0.0, 0.0, math.log(2)], [LN3, 0.0, 0.0], [5.0, 1.0, 0.0]])
    label = torch.tensor([2, 1, 255])
    expected_sum = math.log(2) + math.log(5)
    plain = CrossEntropyLoss(ignore_index=255)
    torch.testing.assert_close(plain(pred, label), torch.tensor(expected_sum / 3))
    non_ignore = CrossEntropyLoss(ignore_index=255, avg_non_ignore=True)
    torch.testing.assert_close(non_ignore(pred, label), torch.tensor(expected_sum / 2))
    torch.testing.assert_close(CrossEntropyLoss()(pred, torch.tensor([2, 1, 0]),
                                                  ignore_index=0, reduction_override='sum'),
                               torch.tensor(expected_sum))


def test_sigmoid_cross_entropy_labels_expand_to_one_hot():
    # logits (0, ln3): p = (0.5, 0.75); label 1 -> targets (0, 1); label 2 = background
    pred = torch.tensor([[0.0, LN3], [0.0, LN3]])
    label = torch.tensor([1, 2])
    row0 = [math.log(2), -math.log(0.75)]
    row1 = [math.log(2), -math.log(0.25)]
    loss = CrossEntropyLoss(use_sigmoid=True, reduction='none')(pred, label)
    torch.testing.assert_close(loss, torch.tensor([row0, row1]))
    torch.testing.assert_close(
        CrossEntropyLoss(use_sigmoid=True, reduction='sum')(pred, label, torch.tensor([1.0, 0.0])),
        torch.tensor(sum(row0)))
    # ignored labels drop out of the mean's denominator with avg_non_ignore
    ignoring = CrossEntropyLoss(use_sigmoid=True, ignore_index=-1, avg_non_ignore=True)
    torch.testing.assert_close(ignoring(pred, torch.tensor([1, -1])),
                               torch.tensor(sum(row0) / 2))


def test_sigmoid_cross_entropy_binary_targets_centerness():
    # centerness: (N,) logits against (N,) soft targets
    pred = torch.tensor([0.0, LN3])
    target = torch.tensor([0.5, 1.0])
    expected = torch.tensor([math.log(2), -math.log(0.75)])
    loss = CrossEntropyLoss(use_sigmoid=True, reduction='none')
    torch.testing.assert_close(loss(pred, target), expected)
    torch.testing.assert_close(loss(pred[:, None], target[:, None]), expected[:, None])


def test_mask_cross_entropy_scores_the_roi_class_channel():
    pred = torch.zeros(2, 3, 2, 2)
    pred[0, 1] = LN3  # RoI 0, class 1: p = 0.75 everywhere
    target = torch.ones(2, 2, 2)
    loss = CrossEntropyLoss(use_mask=True)(pred, target, torch.tensor([1, 0]))
    # RoI 0: -log 0.75 on 4 pixels, RoI 1 (class 0, logit 0): log 2 on 4 pixels
    torch.testing.assert_close(loss, torch.tensor([(-math.log(0.75) + math.log(2)) / 2]))
    with pytest.raises(ValueError, match='exclusive'):
        CrossEntropyLoss(use_sigmoid=True, use_mask=True)


@pytest.mark.parametrize('use_sigmoid', [False, True])
def test_empty_input_gives_zero_with_gradient(use_sigmoid):
    pred = torch.zeros(0, 4, requires_grad=True)
    label = torch.zeros(0, dtype=torch.long)
    for reduction in ('sum', 'mean'):
        loss = CrossEntropyLoss(use_sigmoid=use_sigmoid, reduction=reduction)(pred, label)
        assert loss.item() == 0.0
        loss.backward()
        assert pred.grad is not None
