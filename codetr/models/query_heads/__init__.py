"""Query heads of the one-to-one (DETR) branch; importing this package registers them."""
from .detr_criterion import DetrCriterion, DetrTargets, image_size_factors, mean_over_ranks

__all__ = ['DetrCriterion', 'DetrTargets', 'image_size_factors', 'mean_over_ranks']
