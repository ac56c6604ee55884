"""Non-maximum suppression: hard NMS, soft-NMS, per-class batching and multi-class NMS.

The semantics follow mmcv's ``nms`` / ``soft_nms`` / ``batched_nms`` and MMDetection's
``multiclass_nms`` so configs written for them (``nms=dict(type='soft_nms',
iou_threshold=0.8)``) give the same detections here. Hard NMS runs on
``torchvision.ops.nms``; soft-NMS is a PyTorch re-implementation of mmcv's CPU kernel,
vectorised over the remaining boxes at each pick.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms as tv_nms

# mmcv's integer codes for the soft-NMS score decay (kept for readable error messages).
SOFT_NMS_METHODS = ('naive', 'linear', 'gaussian')


def _check_boxes(boxes: Tensor, scores: Tensor, offset: int) -> None:
    if boxes.dim() != 2 or boxes.size(1) != 4:
        raise ValueError(f'boxes must have shape (N, 4), got {tuple(boxes.shape)}')
    if scores.shape != (boxes.size(0),):
        raise ValueError(f'scores must have shape ({boxes.size(0)},), got {tuple(scores.shape)}')
    if offset not in (0, 1):
        raise ValueError(f'offset must be 0 or 1 (box width = x2 - x1 + offset), got {offset}')


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, offset: int = 0,
        score_threshold: float = 0.0, max_num: int = -1) -> tuple[Tensor, Tensor]:
    """Hard NMS: drop every box whose IoU with a higher-scoring kept box is > threshold.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        iou_threshold: IoU above which the lower-scoring box is suppressed.
        offset: 1 measures widths as ``x2 - x1 + 1`` (legacy pixel convention).
        score_threshold: boxes with score <= this are removed first (0 disables).
        max_num: keep at most this many (<= 0: all).

    Returns:
        dets (K, 5) ``[x1, y1, x2, y2, score]`` sorted by descending score and
        keep (K,) long indices into the input.
    """
    _check_boxes(boxes, scores, offset)
    valid = None
    boxes_in, scores_in = boxes, scores
    if score_threshold > 0:
        valid = torch.nonzero(scores > score_threshold).squeeze(1)
        boxes_in, scores_in = boxes[valid], scores[valid]
    # An offset of 1 is the same as widening every box by one pixel on the far side.
    boxes_tv = boxes_in if offset == 0 else torch.cat([boxes_in[:, :2], boxes_in[:, 2:] + 1], 1)
    keep = tv_nms(boxes_tv.float(), scores_in.float(), float(iou_threshold))
    if max_num > 0:
        keep = keep[:max_num]
    if valid is not None:
        keep = valid[keep]
    return torch.cat([boxes[keep], scores[keep, None]], 1), keep


def _soft_decay(ious: Tensor, method: str, iou_threshold: float, sigma: float) -> Tensor:
    """Score multipliers of mmcv's soft-NMS kernel for IoUs with the picked box."""
    if method == 'naive':
        return (ious < iou_threshold).to(ious)
    if method == 'linear':
        return torch.where(ious >= iou_threshold, 1 - ious, torch.ones_like(ious))
    return torch.exp(-(ious * ious) / sigma)


def _compact_positions(drop: Tensor, start: int, end: int) -> tuple[list[int], list[int], int]:
    """Replay mmcv's in-place removal: a dropped slot is refilled from the current tail.

    Args:
        drop: (end - start,) bool, which of the slots ``start..end-1`` fall below min_score.

    Returns:
        (dst, src, new_end): row moves ``src -> dst`` to apply at once, and the new length.
        Sources are always past every later destination, so the moves commute.
    """
    dropped = (torch.nonzero(drop).squeeze(1) + start).tolist()
    flags = drop.tolist()
    dst: list[int] = []
    src: list[int] = []
    for pos in dropped:
        if pos >= end:
            break  # this slot was already consumed as a tail element
        end -= 1
        while end > pos and flags[end - start]:
            end -= 1  # a dropped tail element moved into pos is dropped again at once
        if end > pos:
            dst.append(pos)
            src.append(end)
    return dst, src, end


def soft_nms(boxes: Tensor, scores: Tensor, iou_threshold: float = 0.3, sigma: float = 0.5,
             min_score: float = 1e-3, method: str = 'linear',
             offset: int = 0) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al. 2017) with the semantics of mmcv's CPU kernel.

    Repeatedly take the highest (decayed) score, then multiply every remaining score by
    ``naive``: 0 if IoU >= iou_threshold; ``linear``: 1 - IoU if IoU >= iou_threshold;
    ``gaussian``: exp(-IoU^2 / sigma); boxes whose score falls below ``min_score`` are
    dropped. Ties are broken as the kernel does (its in-place swaps are replayed), so the
    output matches it element for element. Computed in float32 like the kernel.

    Returns:
        dets (K, 5) ``[x1, y1, x2, y2, decayed score]`` in pick order (descending score)
        and inds (K,) long indices into the input.
    """
    _check_boxes(boxes, scores, offset)
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f'soft_nms method must be one of {SOFT_NMS_METHODS}, got {method!r}')
    n = boxes.size(0)
    b = boxes.detach().float()
    areas = (b[:, 2] - b[:, 0] + offset) * (b[:, 3] - b[:, 1] + offset)
    rows = torch.cat([b, scores.detach().float()[:, None], areas[:, None]], 1)  # (N, 6)
    inds = torch.arange(n, device=boxes.device)
    i = 0
    while i < n:
        best = i + int(torch.argmax(rows[i:n, 4]))  # first maximum, as the kernel
        swap = torch.tensor([best, i], device=boxes.device)
        rows[[i, best]] = rows[swap]
        inds[[i, best]] = inds[swap]
        rest = rows[i + 1:n]
        lt = torch.maximum(rest[:, :2], rows[i, :2])
        rb = torch.minimum(rest[:, 2:4], rows[i, 2:4])
        wh = (rb - lt + offset).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        ious = inter / (rows[i, 5] + rest[:, 5] - inter)
        rest[:, 4] *= _soft_decay(ious, method, iou_threshold, sigma)
        dst, src, n = _compact_positions(rest[:, 4] < min_score, i + 1, n)
        if dst:
            rows[dst] = rows[src]
            inds[dst] = inds[src]
        i += 1
    dets = rows[:n, :5].to(boxes.dtype)
    return dets, inds[:n]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, nms_cfg: dict | None,
                class_agnostic: bool = False) -> tuple[Tensor, Tensor]:
    """NMS applied independently per group (class), mmcv's ``batched_nms``.

    Groups are separated by shifting every box by ``idx * (max coordinate + 1)`` so boxes
    of different groups never overlap; above ``split_thr`` boxes the groups run one by one
    instead to bound memory.

    Args:
        boxes: (N, 4) xyxy.
        scores: (N,).
        idxs: (N,) group index of each box.
        nms_cfg: ``dict(type='nms' | 'soft_nms', iou_threshold=..., [sigma, min_score,
            method, offset, score_threshold, max_num, split_thr=10000, class_agnostic])``;
            None skips NMS and only sorts.
        class_agnostic: ignore ``idxs`` (overridden by ``nms_cfg['class_agnostic']``).

    Returns:
        dets (K, 5) ``[x1, y1, x2, y2, score]`` sorted by descending score (for soft-NMS,
        the decayed score) and keep (K,) long indices into the input.
    """
    if nms_cfg is None:
        sorted_scores, order = scores.sort(descending=True)
        return torch.cat([boxes[order], sorted_scores[:, None]], -1), order
    cfg = dict(nms_cfg)
    class_agnostic = cfg.pop('class_agnostic', class_agnostic)
    nms_type = cfg.pop('type', 'nms')
    ops = {'nms': nms, 'soft_nms': soft_nms}
    if nms_type not in ops:
        raise ValueError(f"nms_cfg type must be 'nms' or 'soft_nms', got {nms_type!r}")
    nms_op = ops[nms_type]
    split_thr = cfg.pop('split_thr', 10000)
    if class_agnostic or boxes.numel() == 0:
        boxes_for_nms = boxes
    else:
        offsets = idxs.to(boxes) * (boxes.max() + 1)
        boxes_for_nms = boxes + offsets[:, None]

    if boxes_for_nms.size(0) < split_thr:
        dets, keep = nms_op(boxes_for_nms, scores, **cfg)
        return torch.cat([boxes[keep], dets[:, -1:]], -1), keep

    max_num = cfg.pop('max_num', -1)
    kept = scores.new_zeros(scores.shape, dtype=torch.bool)
    # soft-NMS changes scores, so remember each group's output score
    scores_after = scores.new_zeros(scores.shape)
    for group in torch.unique(idxs):
        members = torch.nonzero(idxs == group).squeeze(1)
        dets, keep = nms_op(boxes_for_nms[members], scores[members], **cfg)
        kept[members[keep]] = True
        scores_after[members[keep]] = dets[:, -1].to(scores_after)
    keep = torch.nonzero(kept).squeeze(1)
    sorted_scores, order = scores_after[keep].sort(descending=True)
    keep = keep[order]
    if max_num > 0:
        keep, sorted_scores = keep[:max_num], sorted_scores[:max_num]
    return torch.cat([boxes[keep], sorted_scores[:, None]], -1), keep


def multiclass_nms(multi_bboxes: Tensor, multi_scores: Tensor, score_thr: float,
                   nms_cfg: dict | None, max_num: int = -1,
                   score_factors: Tensor | None = None,
                   return_inds: bool = False) -> tuple[Tensor, ...]:
    """Per-class NMS over dense predictions, MMDetection's ``multiclass_nms``.

    Args:
        multi_bboxes: (n, 4) class-agnostic or (n, C * 4) per-class xyxy boxes.
        multi_scores: (n, C + 1) scores whose LAST column is background (ignored).
        score_thr: (box, class) pairs with score <= this are dropped before NMS.
        nms_cfg: as for :func:`batched_nms`.
        max_num: keep at most this many detections (<= 0: all).
        score_factors: (n,) multiplied into the scores after thresholding
            (e.g. centerness), as MMDetection does.
        return_inds: also return the indices into the flattened (n * C) candidates.

    Returns:
        dets (K, 5) ``[x1, y1, x2, y2, score]``, labels (K,) long, [inds (K,)].
    """
    num_classes = multi_scores.size(1) - 1
    n = multi_scores.size(0)
    if multi_bboxes.size(1) > 4:
        bboxes = multi_bboxes.view(n, -1, 4)
    else:
        bboxes = multi_bboxes[:, None].expand(n, num_classes, 4)
    scores = multi_scores[:, :-1]
    labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)
    bboxes, scores, labels = bboxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    valid = scores > score_thr
    if score_factors is not None:
        scores = scores * score_factors.view(-1, 1).expand(n, num_classes).reshape(-1)
    inds = torch.nonzero(valid).squeeze(1)
    bboxes, scores, labels = bboxes[inds], scores[inds], labels[inds]
    if bboxes.numel() == 0:
        dets = torch.cat([bboxes, scores[:, None]], -1)
        return (dets, labels, inds) if return_inds else (dets, labels)
    dets, keep = batched_nms(bboxes, scores, labels, nms_cfg)
    if max_num > 0:
        dets, keep = dets[:max_num], keep[:max_num]
    return (dets, labels[keep], inds[keep]) if return_inds else (dets, labels[keep])
