"""Assigners (queries / anchors / proposals -> GT boxes) and their match costs."""
from .assign_result import AssignResult
from .hungarian_assigner import HungarianAssigner
from .match_costs import (
                          BaseMatchCost,
                          BBoxL1Cost,
                          ClassificationCost,
                          FocalLossCost,
                          IoUCost,
                          MatchInputs,
)

__all__ = ['AssignResult', 'BaseMatchCost', 'BBoxL1Cost', 'ClassificationCost',
           'FocalLossCost', 'HungarianAssigner', 'IoUCost', 'MatchInputs']
