"""Painted-box fixtures: each box is a solid block of its own grey level on a black image.

After a geometric transform, the bounding box of the pixels still holding box k's grey
level is where the image says box k went; the transform's ``gt_bboxes`` must agree.
"""
from __future__ import annotations

import numpy as np

# Grey level of box k is (k + 1) * LEVEL_STEP; far apart so no two boxes can be confused.
LEVEL_STEP = 40


def painted_results(img_hw: tuple[int, int], boxes: list[list[float]],
                    labels: list[int] | None = None,
                    ignore: list[bool] | None = None) -> dict:
    """A results dict (as after the loading transforms) with non-overlapping boxes.

    Integer boxes are painted exactly; fractional ones cover the pixels they touch.
    """
    h, w = img_hw
    img = np.zeros((h, w, 3), dtype=np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        img[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = (k + 1) * LEVEL_STEP
    n = len(boxes)
    return dict(img=img, img_shape=(h, w), ori_shape=(h, w),
                gt_bboxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                gt_bboxes_labels=np.asarray(labels if labels is not None else range(n),
                                            dtype=np.int64),
                gt_ignore_flags=np.asarray(ignore if ignore is not None else [False] * n,
                                           dtype=bool))


def painted_box(img: np.ndarray, k: int) -> np.ndarray | None:
    """The xyxy pixel-edge bounding box of the pixels painted for box k, None if none left."""
    ys, xs = np.nonzero(img[..., 0] == (k + 1) * LEVEL_STEP)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def assert_boxes_follow_paint(results: dict, atol: float = 1.0, min_side: float = 0) -> None:
    """Every box in ``results`` matches its painted region (label k = paint k) within atol.

    Boxes with a side below ``min_side`` pixels are skipped: a nearest-neighbour resize may
    sample no pixel of such a sliver.
    """
    img = results['img']
    for box, label in zip(results['gt_bboxes'], results['gt_bboxes_labels']):
        if min(box[2] - box[0], box[3] - box[1]) < min_side:
            continue
        seen = painted_box(img, int(label))
        assert seen is not None, f'box of label {label} is kept but its paint is gone'
        np.testing.assert_allclose(box, seen, atol=atol)
