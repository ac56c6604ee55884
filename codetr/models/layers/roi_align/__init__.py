"""RoIAlign over a feature pyramid (``multi_level_roi_align``), with fused CPU kernels."""
from .op import BACKENDS, multi_level_roi_align, resolve_backend

__all__ = ['BACKENDS', 'multi_level_roi_align', 'resolve_backend']
