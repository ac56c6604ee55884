"""Assigners (queries / anchors / proposals -> GT boxes) and their match costs."""
from .assign_result import AssignResult
from .atss_assigner import ATSSAssigner
from .hungarian_assigner import HungarianAssigner
from .iou2d_calculator import BboxOverlaps2D
from .match_costs import (
                          BaseMatchCost,
                          BBoxL1Cost,
                          ClassificationCost,
                          FocalLossCost,
                          IoUCost,
                          MatchInputs,
)
from .max_iou_assigner import MaxIoUAssigner

__all__ = ['AssignResult', 'ATSSAssigner', 'BaseMatchCost', 'BboxOverlaps2D', 'BBoxL1Cost',
           'ClassificationCost', 'FocalLossCost', 'HungarianAssigner', 'IoUCost', 'MatchInputs',
           'MaxIoUAssigner']
