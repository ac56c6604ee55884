"""``BboxOverlaps2D``: the IoU calculator assigners build from ``iou_calculator`` configs."""
from __future__ import annotations

from torch import Tensor

from codetr.registry import TASK_UTILS
from codetr.structures import bbox_overlaps


@TASK_UTILS.register_module()
class BboxOverlaps2D:
    """Pairwise or aligned IoU / IoF / GIoU of xyxy boxes.

    Boxes may carry a fifth column (a score, as proposals do); it is ignored.

    Args:
        scale: multiply both box sets by this before computing overlaps (a no-op for IoU; kept
            for configs written for MMDetection).
    """

    def __init__(self, scale: float = 1.) -> None:
        self.scale = scale

    def __call__(self, bboxes1: Tensor, bboxes2: Tensor, mode: str = 'iou',
                 is_aligned: bool = False) -> Tensor:
        """``(..., N, 4 or 5)``, ``(..., M, 4 or 5)`` -> ``(..., N, M)`` or aligned ``(..., N)``."""
        for boxes in (bboxes1, bboxes2):
            if boxes.shape[-1] not in (4, 5):
                raise ValueError('boxes need 4 (xyxy) or 5 (xyxy, score) columns, got '
                                 f'{tuple(boxes.shape)}')
        bboxes1 = bboxes1[..., :4] * self.scale
        bboxes2 = bboxes2[..., :4] * self.scale
        return bbox_overlaps(bboxes1, bboxes2, mode=mode, is_aligned=is_aligned)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(scale={self.scale})'
