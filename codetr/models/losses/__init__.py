"""Losses, registered in ``MODELS``; every one takes ``weight``, ``avg_factor`` and
``reduction_override`` in ``forward`` and reduces through :func:`weight_reduce_loss`."""
from .cross_entropy_loss import (
                                 CrossEntropyLoss,
                                 binary_cross_entropy,
                                 cross_entropy,
                                 mask_cross_entropy,
)
from .distribution_focal_loss import DistributionFocalLoss, distribution_focal_loss
from .focal_loss import FocalLoss, sigmoid_focal_loss
from .iou_loss import GIoULoss, IoULoss, giou_loss, iou_loss
from .quality_focal_loss import QualityFocalLoss, quality_focal_loss
from .smooth_l1_loss import L1Loss, SmoothL1Loss, l1_loss, smooth_l1_loss
from .utils import reduce_loss, weight_reduce_loss

__all__ = [
    'CrossEntropyLoss', 'DistributionFocalLoss', 'FocalLoss', 'GIoULoss', 'IoULoss', 'L1Loss',
    'QualityFocalLoss', 'SmoothL1Loss', 'binary_cross_entropy', 'cross_entropy',
    'distribution_focal_loss', 'giou_loss', 'iou_loss', 'l1_loss', 'mask_cross_entropy',
    'quality_focal_loss', 'reduce_loss', 'sigmoid_focal_loss', 'smooth_l1_loss',
    'weight_reduce_loss'
]
