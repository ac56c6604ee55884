"""Negative IoU / GIoU cost in pixels."""
from __future__ import annotations

from torch import Tensor

from codetr.registry import TASK_UTILS
from codetr.structures import bbox_cxcywh_to_xyxy, bbox_overlaps

from .base_match_cost import BaseMatchCost
from .match_inputs import MatchInputs

IOU_MODES = ('iou', 'giou')


@TASK_UTILS.register_module()
class IoUCost(BaseMatchCost):
    """``-IoU`` (or ``-GIoU``) between predicted and GT boxes, in pixel xyxy.

    Predictions (normalised cxcywh) are converted to xyxy and scaled by their image's
    ``(w, h, w, h)``; the cost of image ``b``'s queries against another image's GT is
    computed too and thrown away by the assigner.

    Args:
        iou_mode: ``'iou'`` or ``'giou'``.
        weight: multiplies the cost (2.0 in Co-DINO's matcher).
    """

    def __init__(self, iou_mode: str = 'giou', weight: float = 1.0) -> None:
        super().__init__(weight)
        if iou_mode not in IOU_MODES:
            raise ValueError(f'IoUCost iou_mode must be one of {IOU_MODES}, got {iou_mode!r}')
        self.iou_mode = iou_mode

    def cost(self, inputs: MatchInputs) -> Tensor:
        name = type(self).__name__
        pred = inputs.require('pred_bboxes', name)  # (B, Q, 4) cxcywh in [0, 1]
        factors = inputs.require('img_factors', name)[:, None, :]  # (B, 1, 4)
        # float32: pixel areas overflow float16 (max 65504)
        pred = bbox_cxcywh_to_xyxy(pred.float()) * factors
        gt = inputs.require('gt_bboxes', name).float()  # (G, 4)
        return -bbox_overlaps(pred, gt, mode=self.iou_mode)  # (B, Q, G)
