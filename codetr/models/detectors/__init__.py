"""Detectors: compositions of backbone, neck and heads."""
from .co_detr import CoDETR

__all__ = ['CoDETR']
