"""Class-name tuples and display colours for the datasets.

Only lists known exactly are written here. LVIS v1 (1203 classes) and Objects365 v1/v2
(365 classes) take their names from the annotation file's ``categories`` in id order;
see ``LVISV1Dataset`` and ``Objects365V1Dataset``.
"""
from __future__ import annotations

import colorsys

# The 80 COCO detection classes in the order of their category ids (1..90 with gaps).
COCO_CLASSES: tuple[str, ...] = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
    'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
    'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
    'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse',
    'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier',
    'toothbrush')

# Numbers of classes the published annotation files carry; used to warn on a wrong file.
LVIS_V1_NUM_CLASSES = 1203
OBJECTS365_NUM_CLASSES = 365

# Hue step of the golden ratio: consecutive classes get far-apart hues for any class count.
_GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def make_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Distinct, deterministic RGB colours (0..255) for ``num_classes`` classes.

    Hues walk the circle by the golden ratio; saturation and value cycle over three
    levels so that neighbouring hues of large class lists still differ in brightness.
    """
    palette = []
    for i in range(num_classes):
        hue = (i * _GOLDEN_RATIO_CONJUGATE) % 1.0
        sat = (0.95, 0.75, 0.55)[i % 3]
        val = (0.95, 0.80, 0.65)[(i // 3) % 3]
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        palette.append((round(r * 255), round(g * 255), round(b * 255)))
    return palette
