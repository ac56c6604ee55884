"""Cross-entropy losses: softmax over ``C + 1`` classes, per-class sigmoid, and per-mask BCE.

MMDetection's ``CrossEntropyLoss`` is one class with three criteria; codetr keeps that so
configs port unchanged (RPN ``use_sigmoid=True``, RoI head softmax, ATSS centerness BCE).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codetr.registry import MODELS

from .utils import check_reduction, weight_reduce_loss

TORCH_IGNORE_INDEX = -100  # F.cross_entropy's default, used when ignore_index is None


def cross_entropy(pred: Tensor, label: Tensor, weight: Tensor | None = None,
                  reduction: str = 'mean', avg_factor: float | None = None,
                  class_weight: Tensor | None = None, ignore_index: int = TORCH_IGNORE_INDEX,
                  avg_non_ignore: bool = False) -> Tensor:
    """Softmax CE: ``pred (N, C + 1)`` logits, ``label (N,)`` in ``[0, C]``, ``weight (N,)``."""
    loss = F.cross_entropy(pred, label, weight=class_weight, reduction='none',
                           ignore_index=ignore_index)
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        avg_factor = (label != ignore_index).sum()
    weight = weight.float() if weight is not None else None
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def _expand_onehot_labels(labels: Tensor, weight: Tensor | None, num_channels: int,
                          ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(N,)`` labels -> ``(N, C)`` one-hot, ``(N, C)`` weights and ``(N, C)`` valid mask.

    Labels ``>= C`` (background) give an all-zero row; ignored labels get zero weight.
    """
    valid = (labels >= 0) & (labels != ignore_index)  # (N,)
    in_range = valid & (labels < num_channels)
    index = torch.where(in_range, labels, torch.zeros_like(labels))
    one_hot = F.one_hot(index.long(), num_channels) * in_range[:, None]
    valid_mask = valid[:, None].expand(-1, num_channels).float()
    if weight is None:
        return one_hot, valid_mask, valid_mask
    return one_hot, weight.view(-1, 1).float() * valid_mask, valid_mask


def binary_cross_entropy(pred: Tensor, label: Tensor, weight: Tensor | None = None,
                         reduction: str = 'mean', avg_factor: float | None = None,
                         class_weight: Tensor | None = None,
                         ignore_index: int = TORCH_IGNORE_INDEX,
                         avg_non_ignore: bool = False) -> Tensor:
    """Sigmoid BCE.

    ``pred (N, C)`` with ``label (N,)`` class indices (background ``C``) is expanded to one-hot;
    ``pred`` and ``label`` of the same shape (e.g. ``(N,)`` or ``(N, 1)`` centerness targets in
    [0, 1]) are used as they are. ``class_weight`` is BCE's ``pos_weight``.
    """
    if pred.dim() != label.dim():
        label, weight, valid_mask = _expand_onehot_labels(label, weight, pred.size(-1),
                                                          ignore_index)
    else:
        valid_mask = ((label >= 0) & (label != ignore_index)).float()
        weight = valid_mask if weight is None else weight * valid_mask
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        avg_factor = valid_mask.sum()
    loss = F.binary_cross_entropy_with_logits(pred, label.type_as(pred), pos_weight=class_weight,
                                              reduction='none')
    return weight_reduce_loss(loss, weight.float(), reduction, avg_factor)


def mask_cross_entropy(pred: Tensor, target: Tensor, label: Tensor,
                       class_weight: Tensor | None = None) -> Tensor:
    """Per-RoI mask BCE: ``pred (R, C, H, W)`` logits, ``target (R, H, W)``, ``label (R,)``.

    Only the mask channel of each RoI's class is scored; the result is a ``(1,)`` mean.
    """
    rois = torch.arange(pred.size(0), device=pred.device)
    pred_slice = pred[rois, label.long()]  # (R, H, W)
    return F.binary_cross_entropy_with_logits(pred_slice, target.type_as(pred),
                                              weight=class_weight, reduction='mean')[None]


@MODELS.register_module()
class CrossEntropyLoss(nn.Module):
    """Cross-entropy loss with MMDetection's options.

    Args:
        use_sigmoid: per-class sigmoid BCE instead of softmax CE.
        use_mask: per-RoI mask BCE (``forward(mask_pred, mask_target, roi_labels)``).
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        class_weight: per-class weights (softmax: ``C + 1`` entries; sigmoid: BCE
            ``pos_weight`` of ``C`` entries).
        ignore_index: label to ignore; ``None`` means torch's -100.
        loss_weight: multiplies the reduced loss.
        avg_non_ignore: ``'mean'`` divides by the number of non-ignored labels instead of all.
    """

    def __init__(self, use_sigmoid: bool = False, use_mask: bool = False,
                 reduction: str = 'mean', class_weight: list[float] | None = None,
                 ignore_index: int | None = None, loss_weight: float = 1.0,
                 avg_non_ignore: bool = False) -> None:
        super().__init__()
        if use_sigmoid and use_mask:
            raise ValueError('CrossEntropyLoss: use_sigmoid and use_mask are exclusive; set one')
        self.use_sigmoid = use_sigmoid
        self.use_mask = use_mask
        self.reduction = check_reduction(reduction)
        self.loss_weight = loss_weight
        self.class_weight = class_weight
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore

    def forward(self, cls_score: Tensor, label: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None,
                ignore_index: int | None = None) -> Tensor:
        """Cross-entropy of ``cls_score`` against ``label``.

        Args:
            cls_score: softmax ``(N, C + 1)`` logits; sigmoid ``(N, C)`` or ``(N,)`` logits;
                mask ``(R, C, H, W)`` logits.
            label: ``(N,)`` class indices (background ``C``); for sigmoid, alternatively
                targets of ``cls_score``'s shape; for masks, ``(R, H, W)`` binary targets.
            weight: ``(N,)`` per-sample weights; for masks, the ``(R,)`` RoI labels.
            avg_factor: divisor for ``'mean'`` instead of the element count.
            reduction_override: replaces ``self.reduction`` for this call.
            ignore_index: replaces ``self.ignore_index`` for this call.

        Returns:
            A scalar, or the element-wise loss for ``'none'``.
        """
        reduction = check_reduction(reduction_override or self.reduction)
        ignore = ignore_index if ignore_index is not None else self.ignore_index
        ignore = TORCH_IGNORE_INDEX if ignore is None else ignore
        class_weight = (cls_score.new_tensor(self.class_weight)
                        if self.class_weight is not None else None)
        if self.use_mask:
            if weight is None:
                raise ValueError('mask CrossEntropyLoss needs the RoI labels as third argument')
            loss = mask_cross_entropy(cls_score, label, weight, class_weight)
        else:
            criterion = binary_cross_entropy if self.use_sigmoid else cross_entropy
            loss = criterion(cls_score, label, weight, reduction, avg_factor, class_weight,
                             ignore, self.avg_non_ignore)
        return self.loss_weight * loss
