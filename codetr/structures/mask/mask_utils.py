"""Conversions between COCO segmentations (polygons, RLE) and dense masks, via pycocotools.

Coordinates follow COCO: a polygon is a flat ``[x1, y1, x2, y2, ...]`` list in pixel-edge
coordinates (pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``); a dense mask is an
``(H, W)`` uint8 array with 1 inside the object.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_util

# pycocotools reads a list whose first entry has 4 numbers as boxes, not polygons, and a
# polygon needs three points: shorter ones describe no area and are dropped.
MIN_POLYGON_COORDS = 6


def valid_polygons(polygons: Sequence[Sequence[float]]) -> list[np.ndarray]:
    """The polygons of one instance with at least 3 points, as float64 arrays."""
    out = []
    for poly in polygons:
        arr = np.asarray(poly, dtype=np.float64).reshape(-1)
        if arr.size >= MIN_POLYGON_COORDS and arr.size % 2 == 0:
            out.append(arr)
    return out


def polygons_to_mask(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """``(H, W)`` uint8 union of an instance's polygons (pycocotools rasterisation)."""
    polys = valid_polygons(polygons)
    if not polys:
        return np.zeros((height, width), dtype=np.uint8)
    rles = mask_util.frPyObjects([p.tolist() for p in polys], height, width)
    return mask_util.decode(mask_util.merge(rles))


def rle_to_mask(rle: dict, height: int, width: int) -> np.ndarray:
    """``(H, W)`` uint8 mask of a COCO RLE, compressed (``counts`` str / bytes) or not
    (``counts`` a list, as COCO stores crowd regions)."""
    size = [int(v) for v in rle.get('size', (height, width))]
    if size != [height, width]:
        raise ValueError(f'RLE size {size} does not match the image (h, w) = '
                         f'({height}, {width}); the annotation belongs to another image size.')
    if isinstance(rle.get('counts'), list):
        rle = mask_util.frPyObjects(rle, height, width)
    return mask_util.decode(rle)


def segmentation_to_mask(segm: list | dict, height: int, width: int) -> np.ndarray:
    """``(H, W)`` uint8 mask of a COCO ``segmentation`` (polygon list or RLE dict)."""
    if isinstance(segm, dict):
        return rle_to_mask(segm, height, width)
    if isinstance(segm, list):
        return polygons_to_mask(segm, height, width)
    raise TypeError(f'a COCO segmentation is a list of polygons or an RLE dict; got '
                    f'{type(segm).__name__}.')


def mask_to_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of a ``(H, W)`` mask's regions as COCO polygons (holes are filled).

    COCO polygons of one instance are united when rasterised, so they cannot carry holes.
    The outlines pass a quarter pixel inside the region's pixel edges, so rasterising them
    gives back every pixel of the region (up to pixels joined only at a corner).
    """
    import cv2

    # Upsample x2: the centres of the big image's boundary pixels lie a quarter pixel inside
    # the original pixel edges. The 1-pixel border keeps regions at the image edge closed.
    big = np.pad(np.kron(np.asarray(mask, np.uint8), np.ones((2, 2), np.uint8)), 1)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for contour in contours:
        pts = (contour.reshape(-1, 2).astype(np.float64) - 1 + 0.5) / 2
        if len(pts) >= 3:
            polys.append(pts.reshape(-1))
    return polys


def encode_masks(masks: np.ndarray) -> list[dict]:
    """COCO RLEs (``counts`` as str, JSON-ready) of ``(N, H, W)`` bool / uint8 masks."""
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0)))
    for rle in rles:
        rle['counts'] = rle['counts'].decode('utf-8')
    return rles
