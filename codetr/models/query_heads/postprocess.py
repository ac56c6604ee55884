"""Detections from a DETR head's last layer: top-k over (query x class), boxes to pixels, NMS."""
from __future__ import annotations

from typing import Any

from mmengine.structures import InstanceData
from torch import Tensor

from codetr.structures import bbox_cxcywh_to_xyxy

from ..utils import float32_inputs


def _scale_factor(img_meta: dict[str, Any]) -> tuple[float, float]:
    """``(w, h)`` resize factor of the network input relative to the original image."""
    if img_meta.get('scale_factor') is None:
        raise KeyError('predict(rescale=True) needs metainfo scale_factor (w, h), which the '
                       "Resize transform sets; add it to the test pipeline or call with "
                       'rescale=False')
    factor = img_meta['scale_factor']
    if isinstance(factor, (int, float)):
        return float(factor), float(factor)
    return float(factor[0]), float(factor[1])


@float32_inputs
def detr_postprocess(cls_scores: Tensor, bbox_preds: Tensor, img_meta: dict[str, Any],
                     max_per_img: int, score_thr: float = 0.0, nms: dict | None = None,
                     rescale: bool = True) -> InstanceData:
    """Detections of one image from sigmoid class logits and normalised boxes.

    Args:
        cls_scores: (Q, C) logits.
        bbox_preds: (Q, 4) normalised ``cxcywh`` of ``img_shape``.
        img_meta: ``img_shape (h, w)`` and, when ``rescale``, ``scale_factor (w, h)``.
        max_per_img: detections kept from the ``Q * C`` (query, class) pairs (a query may
            appear with several classes).
        score_thr: drop detections with score <= this (0 keeps all).
        nms: ``None``, or ``dict(type='nms' | 'soft_nms', iou_threshold=...)`` applied per
            class after the top-k (Co-DINO's official test uses soft-NMS at IoU 0.8).
        rescale: return boxes in original image pixels (divided by ``scale_factor``)
            instead of network input pixels.

    Returns:
        ``InstanceData`` with ``bboxes (K, 4)`` xyxy pixels, ``scores (K,)``, ``labels (K,)``,
        ``K <= max_per_img``, sorted by descending score; at least float32 (bfloat16 inputs
        are cast, autocast is off inside).
    """
    num_classes = cls_scores.size(-1)
    k = min(max_per_img, cls_scores.numel())
    scores, index = cls_scores.sigmoid().flatten().topk(k)
    labels = index % num_classes
    boxes = bbox_preds[index // num_classes]
    img_h, img_w = img_meta['img_shape'][:2]
    boxes = bbox_cxcywh_to_xyxy(boxes) * boxes.new_tensor([img_w, img_h, img_w, img_h])
    boxes = boxes.clamp(min=0).minimum(boxes.new_tensor([img_w, img_h, img_w, img_h]))
    return finish_detections(boxes, scores, labels, img_meta, max_per_img, score_thr, nms,
                             rescale)


def finish_detections(boxes: Tensor, scores: Tensor, labels: Tensor, img_meta: dict[str, Any],
                      max_per_img: int, score_thr: float = 0.0, nms: dict | None = None,
                      rescale: bool = True) -> InstanceData:
    """The end of :func:`detr_postprocess`, after its top-k: threshold, rescale, NMS, cap.

    Exported graphs stop at the top-k (their ``boxes``, ``scores``, ``labels`` are its
    output); their runtimes call this with the same settings, so both paths give the same
    detections.

    Args:
        boxes: (K, 4) xyxy pixels of ``img_shape``, clipped to it.
        scores: (K,) descending.
        labels: (K,).
        img_meta: ``scale_factor (w, h)`` when ``rescale``.
        max_per_img, score_thr, nms, rescale: as for :func:`detr_postprocess`.
    """
    if score_thr > 0:
        keep = scores > score_thr
        scores, labels, boxes = scores[keep], labels[keep], boxes[keep]
    if rescale:
        factor_w, factor_h = _scale_factor(img_meta)
        boxes = boxes / boxes.new_tensor([factor_w, factor_h, factor_w, factor_h])
    results = InstanceData(bboxes=boxes, scores=scores, labels=labels)
    if nms is not None and boxes.numel() > 0:
        from codetr.models.layers.nms import batched_nms  # lazy: only NMS configs need it
        dets, keep = batched_nms(boxes, scores, labels, nms)
        results = results[keep]
        results.scores = dets[:, -1]
    return results[:max_per_img]
