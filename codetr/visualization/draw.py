"""Plain box and mask drawing with OpenCV, shared by the visualizer, the browse tool and the
demo."""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

import cv2
import numpy as np

from codetr.evaluation.coco_format import to_numpy

GOLDEN_RATIO_CONJUGATE = 0.618033988749895  # spreads successive hues evenly around the wheel


def class_color(label: int) -> tuple[int, int, int]:
    """The BGR colour (0-255) every drawing uses for class ``label``; stable across runs."""
    hue = (label * GOLDEN_RATIO_CONJUGATE) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(round(b * 255)), int(round(g * 255)), int(round(r * 255))


def draw_boxes(img_bgr: np.ndarray, bboxes, labels, class_names: Sequence[str],
               scores=None, thickness: int = 2, font_scale: float = 0.4) -> np.ndarray:
    """Draw labelled boxes on a copy of an image.

    Args:
        img_bgr: ``(H, W, 3)`` uint8 BGR image (left unchanged).
        bboxes: ``(N, 4)`` xyxy in the image's pixels (tensor or array).
        labels: ``(N,)`` indices into ``class_names``.
        class_names: the dataset's class names.
        scores: optional ``(N,)`` scores, printed after the class name.
        thickness: box line width in pixels.
        font_scale: OpenCV font scale of the caption.
    Returns:
        The ``(H, W, 3)`` uint8 BGR image with boxes of colour ``class_color(label)`` and a
        caption ``"name 0.87"`` on a filled strip above each box.
    """
    img = np.ascontiguousarray(img_bgr, dtype=np.uint8).copy()
    boxes = to_numpy(bboxes).reshape(-1, 4)
    labels = to_numpy(labels).reshape(-1).astype(np.int64)
    scores = None if scores is None else to_numpy(scores).reshape(-1)
    bad = labels[(labels < 0) | (labels >= len(class_names))]
    if bad.size:
        raise ValueError(f'Labels {sorted(set(bad.tolist()))} have no name among the '
                         f'{len(class_names)} class names; check the dataset classes.')
    for i, (box, label) in enumerate(zip(boxes, labels)):
        color = class_color(int(label))
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, thickness)
        caption = class_names[label] + ('' if scores is None else f' {float(scores[i]):.2f}')
        _draw_caption(img, caption, (x1, y1), color, font_scale)
    return img


MASK_ALPHA = 0.5  # opacity of a drawn mask over the image


def draw_masks(img_bgr: np.ndarray, masks, labels, alpha: float = MASK_ALPHA) -> np.ndarray:
    """Blend instance masks over a copy of an image, each in its class colour, outlined.

    Args:
        img_bgr: ``(H, W, 3)`` uint8 BGR image (left unchanged).
        masks: ``(N, H, W)`` bool / 0-1 masks (tensor or array), or ``BitmapMasks`` /
            ``PolygonMasks`` of the image's size.
        labels: ``(N,)`` class indices (they pick the colours, as for boxes).
        alpha: opacity of the fill.
    Returns:
        The ``(H, W, 3)`` uint8 BGR image with the masks filled and their outlines drawn.
    """
    img = np.ascontiguousarray(img_bgr, dtype=np.uint8).copy()
    if hasattr(masks, 'to_ndarray'):
        masks = masks.to_ndarray()
    masks = to_numpy(masks).astype(bool)
    if masks.ndim != 3 or masks.shape[1:] != img.shape[:2]:
        raise ValueError(f'masks of shape {masks.shape} do not fit the {img.shape[:2]} image; '
                         f'give (N, H, W) masks in the pixels of the image they are drawn on.')
    labels = to_numpy(labels).reshape(-1).astype(np.int64)
    if len(masks) != len(labels):
        raise ValueError(f'{len(masks)} masks but {len(labels)} labels; give one label per mask.')
    for mask, label in zip(masks, labels):
        color = np.array(class_color(int(label)), dtype=np.float32)
        img[mask] = (img[mask] * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, tuple(int(c) for c in color), 1)
    return img


def draw_instances(img_bgr: np.ndarray, instances, class_names: Sequence[str],
                   scores=None, thickness: int = 2) -> np.ndarray:
    """Masks (if the instances have ``masks``) then labelled boxes of ``instances``."""
    if 'masks' in instances and len(instances) > 0:
        img_bgr = draw_masks(img_bgr, instances.masks, instances.labels)
    return draw_boxes(img_bgr, instances.bboxes, instances.labels, class_names, scores=scores,
                      thickness=thickness)


def _draw_caption(img: np.ndarray, text: str, corner: tuple[int, int],
                  color: tuple[int, int, int], font_scale: float) -> None:
    """Text on a filled strip just above ``corner`` (inside the image if the box is at the top)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), baseline = cv2.getTextSize(text, font, font_scale, 1)
    x, y = corner
    top = y - h - baseline if y - h - baseline >= 0 else y
    cv2.rectangle(img, (x, top), (x + w, top + h + baseline), color, -1)
    # Dark text on light colours, white on dark ones, so the caption stays readable.
    text_color = (0, 0, 0) if sum(color) > 382 else (255, 255, 255)
    cv2.putText(img, text, (x, top + h), font, font_scale, text_color, 1, cv2.LINE_AA)
