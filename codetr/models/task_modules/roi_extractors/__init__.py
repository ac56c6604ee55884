"""RoI feature extractors for two-stage (R-CNN) aux heads."""
from .single_level_roi_extractor import RoIAlign, SingleRoIExtractor

__all__ = ['RoIAlign', 'SingleRoIExtractor']
