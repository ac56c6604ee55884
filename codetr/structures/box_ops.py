"""Box operations on plain tensors.

Conventions: ``xyxy`` boxes are ``(x1, y1, x2, y2)`` with ``x2 >= x1``; ``cxcywh`` boxes are
``(cx, cy, w, h)``. Every function works on any leading batch shape ``(..., 4)`` unless its
docstring says otherwise, and never moves data between devices.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def bbox_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` cxcywh -> ``(..., 4)`` xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def bbox_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 4)`` cxcywh."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1], dim=-1)


def bbox_area(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(...)`` area; degenerate boxes have area 0, never negative."""
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=0)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    return w * h


def bbox_overlaps(boxes1: Tensor, boxes2: Tensor, mode: str = 'iou', is_aligned: bool = False,
                  eps: float = 1e-6) -> Tensor:
    """IoU, IoF (intersection over the first box) or GIoU between xyxy boxes.

    Args:
        boxes1: ``(..., N, 4)``.
        boxes2: ``(..., M, 4)``; with ``is_aligned`` it must have ``M == N``.
        mode: ``'iou'``, ``'iof'`` or ``'giou'``.
        is_aligned: compare ``boxes1[i]`` with ``boxes2[i]`` only.
        eps: added to unions so that empty boxes give 0, not NaN.

    Returns:
        ``(..., N, M)`` pairwise, or ``(..., N)`` aligned.
    """
    if mode not in ('iou', 'iof', 'giou'):
        raise ValueError(f"mode must be 'iou', 'iof' or 'giou', got {mode!r}")
    if boxes1.shape[-1] != 4 or boxes2.shape[-1] != 4:
        raise ValueError(f'boxes must end in 4 coordinates, got {tuple(boxes1.shape)} and '
                         f'{tuple(boxes2.shape)}')
    if is_aligned and boxes1.shape[:-1] != boxes2.shape[:-1]:
        raise ValueError('aligned overlaps need boxes of the same shape, got '
                         f'{tuple(boxes1.shape)} and {tuple(boxes2.shape)}')
    area1 = bbox_area(boxes1)
    area2 = bbox_area(boxes2)
    if is_aligned:
        lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])  # (..., N, 2)
        rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]  # (..., N)
        union = area1 + area2 - overlap if mode != 'iof' else area1
    else:
        lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # (..., N, M, 2)
        rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]  # (..., N, M)
        if mode == 'iof':
            union = area1[..., None]
        else:
            union = area1[..., None] + area2[..., None, :] - overlap
    union = union.clamp(min=eps)
    ious = overlap / union
    if mode != 'giou':
        return ious
    if is_aligned:
        enclose_lt = torch.minimum(boxes1[..., :2], boxes2[..., :2])
        enclose_rb = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    else:
        enclose_lt = torch.minimum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
        enclose_rb = torch.maximum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    enclose_wh = (enclose_rb - enclose_lt).clamp(min=0)
    enclose_area = (enclose_wh[..., 0] * enclose_wh[..., 1]).clamp(min=eps)
    return ious - (enclose_area - union) / enclose_area


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU of xyxy boxes: ``(N, 4)``, ``(M, 4)`` -> ``(N, M)`` in ``[-1, 1]``."""
    return bbox_overlaps(boxes1, boxes2, mode='giou')


def bbox_flip(boxes: Tensor, img_shape: Sequence[int], direction: str = 'horizontal') -> Tensor:
    """Mirror xyxy boxes inside an image of ``img_shape = (h, w)``."""
    h, w = img_shape[:2]
    flipped = boxes.clone()
    if direction in ('horizontal', 'diagonal'):
        flipped[..., 0] = w - boxes[..., 2]
        flipped[..., 2] = w - boxes[..., 0]
    if direction in ('vertical', 'diagonal'):
        flipped[..., 1] = h - boxes[..., 3]
        flipped[..., 3] = h - boxes[..., 1]
    if direction not in ('horizontal', 'vertical', 'diagonal'):
        raise ValueError(f"direction must be 'horizontal', 'vertical' or 'diagonal', "
                         f'got {direction!r}')
    return flipped


def clip_bboxes(boxes: Tensor, img_shape: Sequence[int]) -> Tensor:
    """Clamp xyxy boxes to an image of ``img_shape = (h, w)``."""
    h, w = img_shape[:2]
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def scale_boxes(boxes: Tensor, scale_factor: Sequence[float]) -> Tensor:
    """Multiply xyxy boxes by ``scale_factor = (sx, sy)``.

    To map boxes from the network input back to the original image, pass the reciprocal of
    the ``scale_factor`` stored in the metainfo.
    """
    sx, sy = scale_factor[:2]
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def bbox_rescale(boxes: Tensor, ratio: float) -> Tensor:
    """Scale xyxy boxes about their centres by ``ratio`` (``(..., 4)`` -> ``(..., 4)``)."""
    cxcywh = bbox_xyxy_to_cxcywh(boxes)
    cxcywh = torch.cat([cxcywh[..., :2], cxcywh[..., 2:] * ratio], dim=-1)
    return bbox_cxcywh_to_xyxy(cxcywh)
