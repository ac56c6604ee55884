"""Instance masks with MMDetection's names: ``BitmapMasks`` and ``PolygonMasks``."""
from .bitmap_masks import BitmapMasks
from .mask_utils import (
    encode_masks,
    mask_to_polygons,
    polygons_to_mask,
    rle_to_mask,
    segmentation_to_mask,
)
from .polygon_masks import PolygonMasks

__all__ = ['BitmapMasks', 'PolygonMasks', 'encode_masks', 'mask_to_polygons',
           'polygons_to_mask', 'rle_to_mask', 'segmentation_to_mask']
