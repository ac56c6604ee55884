"""DistributionFocalLoss (GFL) against hand-computed values."""
import math

import pytest
import torch

from codetr.models.losses import DistributionFocalLoss
from codetr.registry import MODELS

# logits log(1..4): softmax = (0.1, 0.2, 0.3, 0.4) over the bins 0..3
LOGITS = torch.tensor([1.0, 2.0, 3.0, 4.0]).log()


def test_hand_computed_values():
    pred = LOGITS.expand(3, 4)
    target = torch.tensor([1.25, 0.0, 2.0])
    expected = torch.tensor([
        -(0.75 * math.log(0.2) + 0.25 * math.log(0.3)),  # bins 1 and 2 around 1.25
        -math.log(0.1),                                   # on a bin: all its weight there
        -math.log(0.3)])
    loss = DistributionFocalLoss(reduction='none')
    torch.testing.assert_close(loss(pred, target), expected)
    torch.testing.assert_close(DistributionFocalLoss(reduction='sum')(pred, target),
                               expected.sum())
    weight = torch.tensor([1.0, 0.0, 2.0])
    weighted = DistributionFocalLoss(loss_weight=0.25)(pred, target, weight, avg_factor=4.0)
    torch.testing.assert_close(weighted, 0.25 * (expected[0] + 2 * expected[2]) / 4.0)


def test_gradient_is_softmax_minus_the_two_bin_target():
    """DFL is a cross-entropy with the soft target (0, 0.75, 0.25, 0) for 1.25: its gradient
    is ``softmax - target``, zero when the distribution's mass sits on the two neighbouring
    bins in that ratio, whose expected value (GFL's integral) is then the target."""
    pred = LOGITS[None].clone().requires_grad_(True)
    DistributionFocalLoss()(pred, torch.tensor([1.25])).backward()
    soft_target = torch.tensor([[0.0, 0.75, 0.25, 0.0]])
    torch.testing.assert_close(pred.grad, torch.tensor([[0.1, 0.2, 0.3, 0.4]]) - soft_target)
    assert (soft_target * torch.arange(4.0)).sum().item() == 1.25


def test_targets_outside_the_bins_are_refused():
    loss = MODELS.build(dict(type='DistributionFocalLoss', loss_weight=0.25))
    with pytest.raises(ValueError, match='clamp them below reg_max'):
        loss(LOGITS.expand(1, 4), torch.tensor([3.0]))  # needs bin 4
    with pytest.raises(ValueError, match=r'\[0, 3\)'):
        loss(LOGITS.expand(1, 4), torch.tensor([-0.5]))
