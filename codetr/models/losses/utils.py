"""Reduction helpers shared by every loss: element-wise weights, then mean / sum / none.

The semantics are MMDetection's: ``weight`` multiplies the element-wise loss before the
reduction, and ``avg_factor`` replaces the element count of ``'mean'`` (DETR heads divide by
the number of GT boxes over the batch, not by the number of queries).
"""
from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ('none', 'mean', 'sum')


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of :data:`REDUCTIONS`, else raise naming the options."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}; "
                         'fix `reduction` in the loss config or the `reduction_override` argument')
    return reduction


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """Reduce an element-wise loss of any shape.

    ``'mean'`` of an empty tensor is 0 (``loss.sum()``), not NaN as ``Tensor.mean`` gives: an
    image without targets must not poison the batch, and the zero keeps a gradient path.
    """
    check_reduction(reduction)
    if reduction == 'none':
        return loss
    if reduction == 'sum' or loss.numel() == 0:
        return loss.sum()
    return loss.mean()


def weight_reduce_loss(loss: Tensor, weight: Tensor | None = None, reduction: str = 'mean',
                       avg_factor: float | Tensor | None = None) -> Tensor:
    """Apply element-wise weights, then reduce.

    Args:
        loss: element-wise loss, any shape.
        weight: broadcastable to ``loss``; ``None`` means all ones.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        avg_factor: with ``'mean'``, the loss is ``sum / (avg_factor + eps)`` instead of
            ``sum / numel``. Not allowed with ``'sum'``; ignored with ``'none'``.

    Returns:
        A scalar, or ``loss``'s shape for ``'none'``.
    """
    check_reduction(reduction)
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return reduce_loss(loss, reduction)
    if reduction == 'mean':
        # float32 eps, as MMDetection, so that avg_factor == 0 gives 0 instead of NaN
        return loss.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    if reduction == 'sum':
        raise ValueError("avg_factor can not be used with reduction='sum'; use 'mean' or drop "
                         'avg_factor')
    return loss


def expand_weight(weight: Tensor | None, loss: Tensor) -> Tensor | None:
    """Shape a per-sample ``(N,)`` or flat ``(N * C,)`` weight for an ``(N, C)`` loss."""
    if weight is None or weight.shape == loss.shape:
        return weight
    if weight.numel() == loss.size(0):
        return weight.view(-1, 1)
    if weight.numel() != loss.numel():
        raise ValueError(f'weight of shape {tuple(weight.shape)} does not fit a loss of shape '
                         f'{tuple(loss.shape)}; give (N,) or (N, C) weights')
    return weight.view(loss.size(0), -1)


def labels_to_one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """``(N,)`` labels in ``[0, num_classes]`` -> ``(N, num_classes)`` one-hot.

    ``num_classes`` is the background label: its rows are all zero.
    """
    if labels.numel() and (labels.min() < 0 or labels.max() > num_classes):
        raise ValueError(f'labels must lie in [0, {num_classes}] (background = {num_classes}), '
                         f'got [{int(labels.min())}, {int(labels.max())}]; check num_classes '
                         'against the dataset classes')
    return torch.nn.functional.one_hot(labels.long(), num_classes + 1)[:, :num_classes]
