"""Match costs for one-to-one assignment, registered in ``TASK_UTILS``."""
from .base_match_cost import BaseMatchCost
from .bbox_l1_cost import BBoxL1Cost
from .classification_cost import ClassificationCost
from .focal_loss_cost import FocalLossCost
from .iou_cost import IoUCost
from .match_inputs import MatchInputs

__all__ = ['BaseMatchCost', 'BBoxL1Cost', 'ClassificationCost', 'FocalLossCost', 'IoUCost',
           'MatchInputs']
