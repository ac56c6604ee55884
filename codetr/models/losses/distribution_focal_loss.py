"""Distribution focal loss (Li et al., "Generalized Focal Loss", NeurIPS 2020, eq. 6).

A box side is predicted as a discrete distribution over the integers ``0..n`` (GFL: ``n =
reg_max = 16``, in units of the level's stride) and read out as its expected value. DFL
pushes the probability mass onto the two integers around the continuous target ``y``:
``-((y_r - y) log p(y_l) + (y - y_l) log p(y_r))`` with ``y_l = floor(y)``, ``y_r = y_l + 1``.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from codetr.registry import MODELS

from .utils import check_reduction, weight_reduce_loss


def distribution_focal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Element-wise DFL.

    Args:
        pred: ``(N, n + 1)`` logits of the distribution over ``0..n``.
        target: ``(N,)`` continuous targets in ``[0, n)`` (the right neighbour ``floor + 1``
            must be a bin).

    Returns:
        ``(N,)`` loss, not reduced.
    """
    if target.numel() and (target.min() < 0 or target.max() >= pred.size(-1) - 1):
        raise ValueError(f'DFL targets must lie in [0, {pred.size(-1) - 1}) for {pred.size(-1)} '
                         f'bins, got [{float(target.min()):.3f}, {float(target.max()):.3f}]; '
                         'clamp them below reg_max (GFL clamps to reg_max - 0.01)')
    left = target.long()  # floor, targets are >= 0
    right = left + 1
    weight_left = right.to(target.dtype) - target
    weight_right = target - left.to(target.dtype)
    return (F.cross_entropy(pred, left, reduction='none') * weight_left
            + F.cross_entropy(pred, right, reduction='none') * weight_right)


@MODELS.register_module()
class DistributionFocalLoss(nn.Module):
    """Distribution focal loss of GFL.

    Args:
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the reduced loss (GFL: 0.25).
    """

    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None,
                reduction_override: str | None = None) -> Tensor:
        """DFL of ``pred`` against ``target``.

        Args:
            pred: ``(N, n + 1)`` logits, one distribution per box side.
            target: ``(N,)`` continuous targets in ``[0, n)``.
            weight: ``(N,)`` per-side weights.
            avg_factor: divisor for ``'mean'`` instead of ``N``.
            reduction_override: replaces ``self.reduction`` for this call.

        Returns:
            A scalar, or ``(N,)`` for ``'none'``.
        """
        reduction = check_reduction(reduction_override or self.reduction)
        loss = distribution_focal_loss(pred, target)
        return self.loss_weight * weight_reduce_loss(loss, weight, reduction, avg_factor)
