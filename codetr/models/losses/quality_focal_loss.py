"""Quality focal loss (Li et al., "Generalized Focal Loss", 2020): focal loss toward IoU scores.

Co-DINO's main head uses it (beta 2) in place of the plain focal loss: the target of a matched
query's class is the IoU of its box with the GT box, not 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codetr.registry import MODELS

from .utils import check_reduction, expand_weight, weight_reduce_loss


def quality_focal_loss(pred: Tensor, soft_target: Tensor, beta: float = 2.0,
                       activated: bool = False) -> Tensor:
    """Element-wise QFL, ``BCE(p, t) * |t - p| ** beta``.

    For a negative entry (``t = 0``) this is ``BCE(p, 0) * p ** beta``; for the positive class
    it pulls ``p`` toward the quality score ``t``. The modulating factor is not detached, as in
    the reference implementation.

    Args:
        pred: ``(N, C)`` logits, or probabilities when ``activated``.
        soft_target: ``(N, C)`` scores in [0, 1]; zero except at positive (sample, class).
        beta: exponent of the modulating factor.
        activated: ``pred`` already went through a sigmoid.

    Returns:
        ``(N, C)`` loss, not reduced.
    """
    soft_target = soft_target.type_as(pred)
    prob = pred if activated else pred.sigmoid()
    if activated:
        bce = F.binary_cross_entropy(pred, soft_target, reduction='none')
    else:
        bce = F.binary_cross_entropy_with_logits(pred, soft_target, reduction='none')
    return bce * (soft_target - prob).abs().pow(beta)


def labels_scores_to_soft_target(labels: Tensor, scores: Tensor, num_classes: int) -> Tensor:
    """``(N,)`` labels (background ``num_classes``) and ``(N,)`` scores -> ``(N, C)`` target."""
    positive = (labels >= 0) & (labels < num_classes)
    # background rows scatter into a throw-away column C, dropped below
    index = torch.where(positive, labels.long(), torch.full_like(labels.long(), num_classes))
    soft = scores.new_zeros(labels.size(0), num_classes + 1)
    soft.scatter_(1, index[:, None], scores[:, None].to(soft.dtype))
    return soft[:, :num_classes]


@MODELS.register_module()
class QualityFocalLoss(nn.Module):
    """Quality focal loss; the per-sample loss is summed over classes before reduction.

    Args:
        use_sigmoid: must be True (only the sigmoid form exists).
        beta: modulating exponent; 2.0 in the GFL paper and Co-DINO's configs.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the reduced loss.
        activated: predictions are probabilities, not logits.
    """

    def __init__(self, use_sigmoid: bool = True, beta: float = 2.0, reduction: str = 'mean',
                 loss_weight: float = 1.0, activated: bool = False) -> None:
        super().__init__()
        if not use_sigmoid:
            raise NotImplementedError('QualityFocalLoss only has the sigmoid form; set '
                                      'use_sigmoid=True')
        self.use_sigmoid = use_sigmoid
        self.beta = beta
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight
        self.activated = activated

    def forward(self, pred: Tensor, target: tuple[Tensor, Tensor] | Tensor,
                weight: Tensor | None = None, avg_factor: float | None = None,
                reduction_override: str | None = None) -> Tensor:
        """QFL of ``pred`` against ``target``.

        Args:
            pred: ``(N, C)`` logits (probabilities if ``activated``).
            target: ``(labels (N,), scores (N,))`` with background label ``C`` and IoU
                scores in [0, 1], or an ``(N, C)`` soft target.
            weight: ``(N,)`` per sample or ``(N, C)`` per element.
            avg_factor: divisor for ``'mean'`` instead of ``N``.
            reduction_override: replaces ``self.reduction`` for this call.

        Returns:
            A scalar, or ``(N,)`` for ``'none'``.
        """
        reduction = check_reduction(reduction_override or self.reduction)
        if isinstance(target, Tensor):
            soft_target = target
        else:
            if len(target) != 2:
                raise ValueError('QualityFocalLoss target must be (labels, scores) or an '
                                 f'(N, C) tensor, got a sequence of {len(target)}')
            soft_target = labels_scores_to_soft_target(*target, num_classes=pred.size(1))
        if soft_target.shape != pred.shape:
            raise ValueError(f'target of shape {tuple(soft_target.shape)} does not match '
                             f'predictions of shape {tuple(pred.shape)}')
        loss = quality_focal_loss(pred, soft_target, self.beta, self.activated)
        loss = (loss * expand_weight(weight, loss)) if weight is not None else loss
        loss = weight_reduce_loss(loss.sum(dim=1), None, reduction, avg_factor)
        return self.loss_weight * loss
