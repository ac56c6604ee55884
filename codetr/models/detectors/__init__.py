"""Detectors: compositions of backbone, neck and heads, and the test-time augmentation wrapper."""
from .co_detr import CoDETR
from .det_tta import DetTTAModel

__all__ = ['CoDETR', 'DetTTAModel']
