"""IoU-based box regression losses on aligned xyxy box pairs."""
from __future__ import annotations

from torch import Tensor, nn

from codetr.registry import MODELS
from codetr.structures import bbox_overlaps

from .utils import check_reduction, weight_reduce_loss

IOU_LOSS_MODES = ('linear', 'square', 'log')


def giou_loss(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """``(N, 4)`` xyxy pairs -> ``(N,)`` ``1 - GIoU``, in [0, 2]."""
    return 1 - bbox_overlaps(pred, target, mode='giou', is_aligned=True, eps=eps)


def iou_loss(pred: Tensor, target: Tensor, mode: str = 'log', eps: float = 1e-6) -> Tensor:
    """``(N, 4)`` xyxy pairs -> ``(N,)`` ``1 - IoU``, ``1 - IoU^2`` or ``-log IoU``.

    The IoU is clamped at ``eps`` so that ``-log`` stays finite for disjoint boxes.
    """
    ious = bbox_overlaps(pred, target, is_aligned=True).clamp(min=eps)
    if mode == 'linear':
        return 1 - ious
    if mode == 'square':
        return 1 - ious ** 2
    return -ious.log()


class _BoxPairLoss(nn.Module):
    """Shared forward: a per-box loss, with ``(N, 4)`` weights averaged to ``(N,)``."""

    def __init__(self, eps: float = 1e-6, reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.eps = eps
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight

    def per_box(self, pred: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None,
                reduction_override: str | None = None) -> Tensor:
        """Loss between aligned box pairs.

        Args:
            pred: ``(N, 4)`` xyxy boxes (pixels or normalised, as long as both match).
            target: ``(N, 4)`` xyxy boxes.
            weight: ``(N,)``, or ``(N, 4)`` whose mean over the last dim is used (the box
                weights of a regression target, as MMDetection does).
            avg_factor: divisor for ``'mean'`` instead of ``N``.
            reduction_override: replaces ``self.reduction`` for this call.

        Returns:
            A scalar, or ``(N,)`` for ``'none'``.
        """
        reduction = check_reduction(reduction_override or self.reduction)
        if pred.shape != target.shape or pred.shape[-1:] != (4,):
            raise ValueError(f'pred {tuple(pred.shape)} and target {tuple(target.shape)} must '
                             'both be (N, 4) xyxy boxes')
        if weight is not None and weight.dim() > 1:
            if weight.shape != pred.shape:
                raise ValueError(f'weight {tuple(weight.shape)} must be (N,) or match pred '
                                 f'{tuple(pred.shape)}')
            weight = weight.mean(-1)
        loss = weight_reduce_loss(self.per_box(pred, target), weight, reduction, avg_factor)
        return self.loss_weight * loss


@MODELS.register_module()
class GIoULoss(_BoxPairLoss):
    """Generalised IoU loss (Rezatofighi et al., 2019): ``1 - GIoU``.

    Args:
        eps: guards unions and enclosing areas against division by zero.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the reduced loss.
    """

    def per_box(self, pred: Tensor, target: Tensor) -> Tensor:
        return giou_loss(pred, target, self.eps)


@MODELS.register_module()
class IoULoss(_BoxPairLoss):
    """IoU loss.

    Args:
        linear: legacy switch of MMDetection; True means ``mode='linear'``.
        eps: lower clamp of the IoU.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the reduced loss.
        mode: ``'linear'`` (1 - IoU), ``'square'`` (1 - IoU^2) or ``'log'`` (-log IoU).
    """

    def __init__(self, linear: bool = False, eps: float = 1e-6, reduction: str = 'mean',
                 loss_weight: float = 1.0, mode: str = 'log') -> None:
        super().__init__(eps, reduction, loss_weight)
        if mode not in IOU_LOSS_MODES:
            raise ValueError(f'IoULoss mode must be one of {IOU_LOSS_MODES}, got {mode!r}')
        self.mode = 'linear' if linear else mode

    def per_box(self, pred: Tensor, target: Tensor) -> Tensor:
        return iou_loss(pred, target, self.mode, self.eps)
