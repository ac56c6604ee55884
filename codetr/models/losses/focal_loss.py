"""Sigmoid focal loss (Lin et al., "Focal Loss for Dense Object Detection", 2017)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from codetr.registry import MODELS

from .utils import check_reduction, expand_weight, labels_to_one_hot, weight_reduce_loss


def sigmoid_focal_loss(pred: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = 0.25,
                       activated: bool = False) -> Tensor:
    """Element-wise focal loss.

    Args:
        pred: ``(N, C)`` logits, or probabilities when ``activated``.
        target: ``(N, C)`` one-hot or soft targets in [0, 1].
        gamma: focusing exponent on ``1 - p_t``.
        alpha: weight of the positive term; negatives get ``1 - alpha``.
        activated: ``pred`` already went through a sigmoid.

    Returns:
        ``(N, C)`` loss, not reduced.
    """
    target = target.type_as(pred)
    prob = pred if activated else pred.sigmoid()
    p_t_complement = (1 - prob) * target + prob * (1 - target)  # 1 - p_t
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * p_t_complement.pow(gamma)
    if activated:
        bce = F.binary_cross_entropy(pred, target, reduction='none')
    else:
        bce = F.binary_cross_entropy_with_logits(pred, target, reduction='none')
    return bce * focal_weight


@MODELS.register_module()
class FocalLoss(nn.Module):
    """Sigmoid focal loss over ``C`` independent classes.

    Args:
        use_sigmoid: must be True; only the sigmoid form exists (as in MMDetection).
        gamma: focusing exponent; 2.0 in the paper.
        alpha: positive / negative balance; 0.25 in the paper.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the reduced loss.
        activated: predictions are probabilities, not logits.
    """

    def __init__(self, use_sigmoid: bool = True, gamma: float = 2.0, alpha: float = 0.25,
                 reduction: str = 'mean', loss_weight: float = 1.0,
                 activated: bool = False) -> None:
        super().__init__()
        if not use_sigmoid:
            raise NotImplementedError('FocalLoss only has the sigmoid form; set use_sigmoid=True '
                                      'or use CrossEntropyLoss for a softmax classifier')
        self.use_sigmoid = use_sigmoid
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight
        self.activated = activated

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None,
                reduction_override: str | None = None) -> Tensor:
        """Focal loss of ``pred`` against ``target``.

        Args:
            pred: ``(N, C)`` logits (probabilities if ``activated``).
            target: ``(N,)`` labels in ``[0, C]`` with background ``C``, or ``(N, C)``
                one-hot / soft targets.
            weight: ``(N,)`` per sample, or ``(N, C)`` / ``(N * C,)`` per element.
            avg_factor: divisor for ``'mean'`` instead of ``N * C``.
            reduction_override: replaces ``self.reduction`` for this call.

        Returns:
            A scalar, or ``(N, C)`` for ``'none'``.
        """
        reduction = check_reduction(reduction_override or self.reduction)
        if target.dim() != pred.dim():
            target = labels_to_one_hot(target, pred.size(1))
        loss = sigmoid_focal_loss(pred, target, self.gamma, self.alpha, self.activated)
        loss = weight_reduce_loss(loss, expand_weight(weight, loss), reduction, avg_factor)
        return self.loss_weight * loss
