"""L1 and smooth-L1 regression losses on box coordinates (or any paired tensors)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from codetr.registry import MODELS

from .utils import check_reduction, weight_reduce_loss


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f'pred {tuple(pred.shape)} and target {tuple(target.shape)} must have '
                         'the same shape')


def l1_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Element-wise ``|pred - target|``, same shape as the inputs."""
    _check_pair(pred, target)
    return (pred - target).abs()


def smooth_l1_loss(pred: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Element-wise Huber-style loss: ``0.5 d^2 / beta`` below ``beta``, ``d - 0.5 beta`` above."""
    if beta <= 0:
        raise ValueError(f'SmoothL1Loss beta must be > 0, got {beta}; use L1Loss for beta = 0')
    _check_pair(pred, target)
    diff = (pred - target).abs()
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


class _PairwiseLoss(nn.Module):
    """Shared constructor and forward of the element-wise regression losses."""

    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0) -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None,
                reduction_override: str | None = None) -> Tensor:
        """Loss between ``pred`` and ``target``.

        Args:
            pred: ``(N, 4)`` (any shape) predictions.
            target: same shape as ``pred``.
            weight: same shape as ``pred``, or ``(N,)`` per sample.
            avg_factor: divisor for ``'mean'`` instead of the element count.
            reduction_override: replaces ``self.reduction`` for this call.

        Returns:
            A scalar, or the element-wise loss for ``'none'``.
        """
        reduction = check_reduction(reduction_override or self.reduction)
        if weight is not None and weight.dim() == pred.dim() - 1:
            weight = weight.unsqueeze(-1)
        loss = weight_reduce_loss(self.elementwise(pred, target), weight, reduction, avg_factor)
        return self.loss_weight * loss


@MODELS.register_module()
class L1Loss(_PairwiseLoss):
    """L1 loss; DETR heads use it on normalised cxcywh boxes (weight 5 in Co-DINO).

    Args:
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the reduced loss.
    """

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return l1_loss(pred, target)


@MODELS.register_module()
class SmoothL1Loss(_PairwiseLoss):
    """Smooth-L1 loss.

    Args:
        beta: where the quadratic part turns linear, in the units of the inputs.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the reduced loss.
    """

    def __init__(self, beta: float = 1.0, reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__(reduction, loss_weight)
        self.beta = beta

    def elementwise(self, pred: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(pred, target, self.beta)
