"""L1 distance between normalised boxes."""
from __future__ import annotations

import torch
from torch import Tensor

from codetr.registry import TASK_UTILS
from codetr.structures import bbox_cxcywh_to_xyxy, bbox_xyxy_to_cxcywh

from .base_match_cost import BaseMatchCost
from .match_inputs import MatchInputs

BOX_FORMATS = ('xyxy', 'xywh')


@TASK_UTILS.register_module()
class BBoxL1Cost(BaseMatchCost):
    """L1 distance between predicted and GT boxes, both normalised by ``img_shape``.

    Predictions arrive as normalised cxcywh; GT as pixel xyxy, divided by ``(w, h, w, h)``.

    Args:
        box_format: compare in ``'xywh'`` (normalised cxcywh, what DETRs do) or ``'xyxy'``.
        weight: multiplies the cost (5.0 in Co-DINO's matcher).
    """

    def __init__(self, box_format: str = 'xyxy', weight: float = 1.0) -> None:
        super().__init__(weight)
        if box_format not in BOX_FORMATS:
            raise ValueError(f'BBoxL1Cost box_format must be one of {BOX_FORMATS}, '
                             f'got {box_format!r}')
        self.box_format = box_format

    def cost(self, inputs: MatchInputs) -> Tensor:
        name = type(self).__name__
        pred = inputs.require('pred_bboxes', name)  # (B, Q, 4) cxcywh in [0, 1]
        gt = inputs.require('gt_bboxes', name) / inputs.require('gt_factors', name)  # (G, 4)
        if self.box_format == 'xywh':
            gt = bbox_xyxy_to_cxcywh(gt)
        else:
            pred = bbox_cxcywh_to_xyxy(pred)
        # float32: half-precision cdist is missing on some devices and coarse for matching
        pred, gt = pred.float(), gt.float()
        return torch.cdist(pred, gt.expand(pred.size(0), -1, -1), p=1)  # (B, Q, G)
