"""NumPy helpers for the ``gt_*`` arrays that travel through a pipeline.

Boxes are float32 ``(N, 4)`` xyxy in pixels of the current image; an image of shape
``(H, W)`` spans ``[0, W] x [0, H]``.
"""
from __future__ import annotations

import numpy as np

# Per-instance arrays (and the masks) that must stay aligned with ``gt_bboxes`` when boxes
# are dropped.
INSTANCE_KEYS = ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags', 'gt_masks')


def clip_boxes(boxes: np.ndarray, img_shape: tuple[int, int]) -> np.ndarray:
    """Clip ``(N, 4)`` xyxy boxes to an image of ``img_shape = (H, W)``; returns a copy."""
    h, w = img_shape
    out = boxes.copy()
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out


def flip_boxes(boxes: np.ndarray, img_shape: tuple[int, int], direction: str) -> np.ndarray:
    """Mirror ``(N, 4)`` xyxy boxes inside an image of ``(H, W)``.

    ``direction`` is ``'horizontal'`` (x -> W - x), ``'vertical'`` (y -> H - y) or
    ``'diagonal'`` (both). The coordinates swap so that x1 <= x2 and y1 <= y2 still hold.
    """
    h, w = img_shape
    out = boxes.copy()
    if direction in ('horizontal', 'diagonal'):
        out[:, 0], out[:, 2] = w - boxes[:, 2], w - boxes[:, 0]
    if direction in ('vertical', 'diagonal'):
        out[:, 1], out[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
    if direction not in ('horizontal', 'vertical', 'diagonal'):
        raise ValueError(f"flip direction must be 'horizontal', 'vertical' or 'diagonal', "
                         f'got {direction!r}')
    return out


def keep_instances(results: dict, keep: np.ndarray) -> None:
    """Index every per-instance array (and ``gt_masks``) of ``results`` with the bool mask
    ``keep`` (N,)."""
    for key in INSTANCE_KEYS:
        if results.get(key) is not None:
            results[key] = results[key][keep]
