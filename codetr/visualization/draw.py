"""Plain box drawing with OpenCV, shared by the visualizer, the browse tool and the demo."""
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
