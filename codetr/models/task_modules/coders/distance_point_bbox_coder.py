"""Box regression targets as distances from a point to the four box sides (FCOS)."""
from __future__ import annotations

import torch
from torch import Tensor

from codetr.registry import TASK_UTILS

from .delta_xywh_bbox_coder import MaxShape, clamp_to_shape


@TASK_UTILS.register_module()
class DistancePointBBoxCoder:
    """Encode xyxy boxes as ``(left, top, right, bottom)`` distances from points.

    Args:
        clip_border: clamp decoded boxes to ``max_shape`` when it is given.
    """

    encode_size = 4

    def __init__(self, clip_border: bool = True) -> None:
        self.clip_border = clip_border

    def encode(self, points: Tensor, gt_bboxes: Tensor, max_dis: float | None = None,
               eps: float = 0.1) -> Tensor:
        """Distances from ``points`` to the sides of ``gt_bboxes``.

        Args:
            points: ``(..., N, 2)`` pixel ``(x, y)``.
            gt_bboxes: ``(..., N, 4)`` xyxy pixels, one per point.
            max_dis: clamp the distances to ``[0, max_dis - eps]`` (for binned regression).
            eps: margin below ``max_dis``.

        Returns:
            ``(..., N, 4)`` pixel distances; negative where a point lies outside its box,
            unless ``max_dis`` is given.
        """
        if points.shape[:-1] != gt_bboxes.shape[:-1]:
            raise ValueError(f'need one GT per point, got {tuple(points.shape)} points and '
                             f'{tuple(gt_bboxes.shape)} GT boxes')
        distances = torch.cat([points[..., :2] - gt_bboxes[..., :2],
                               gt_bboxes[..., 2:4] - points[..., :2]], dim=-1)
        if max_dis is not None:
            distances = distances.clamp(min=0, max=max_dis - eps)
        return distances

    def decode(self, points: Tensor, pred_bboxes: Tensor, max_shape: MaxShape = None) -> Tensor:
        """Boxes ``(x - left, y - top, x + right, y + bottom)``.

        Args:
            points: ``(..., N, 2)`` pixel ``(x, y)`` (extra columns such as strides ignored).
            pred_bboxes: ``(..., N, 4)`` pixel distances.
            max_shape: ``(h, w)`` to clamp to, or one ``(h, w)`` per image of a batch.

        Returns:
            ``(..., N, 4)`` xyxy pixels.
        """
        xy = points[..., :2]
        boxes = torch.cat([xy - pred_bboxes[..., :2], xy + pred_bboxes[..., 2:4]], dim=-1)
        if self.clip_border and max_shape is not None:
            boxes = clamp_to_shape(boxes, max_shape)
        return boxes
