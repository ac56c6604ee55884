"""Box- and mask-aware cropping and filtering: ``RandomCrop`` and ``FilterAnnotations``.

Both may return None, which tells an mmengine ``BaseDataset`` in training mode to draw
another image (it retries a bounded number of times, then raises).
"""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness

from codetr.registry import TRANSFORMS

from .box_utils import clip_boxes, keep_instances

CROP_TYPES = ('absolute', 'absolute_range', 'relative', 'relative_range')


@TRANSFORMS.register_module()
class RandomCrop(BaseTransform):
    """Crop a random window; boxes are shifted, clipped, and dropped if nothing is left.

    The crop size, as ``(h, w)`` pixels, follows ``crop_type`` (image of ``(H, W)``):

    - ``'absolute'``: ``crop_size = (w, h)`` pixels, capped at the image size.
    - ``'absolute_range'``: ``crop_size = (lo, hi)``; h and w are drawn independently and
      uniformly from the integers ``[min(lo, H), min(hi, H)]`` (resp. W).
    - ``'relative'``: ``crop_size = (rw, rh)`` in ``(0, 1]``; the crop is
      ``(round(rh * H), round(rw * W))``.
    - ``'relative_range'``: ``crop_size = (rw, rh)``; the ratios are drawn uniformly
      from ``[rw, 1]`` and ``[rh, 1]``.

    A box is kept when part of it with positive area lies inside the crop; its labels,
    ignore flags and mask are dropped with it. ``gt_masks`` are cropped to the same window.
    Adds/updates ``img``, ``img_shape``.

    Args:
        crop_size: see above.
        crop_type: one of ``CROP_TYPES``.
        allow_negative_crop: keep a crop that contains no box. If False, such a crop
            (including any crop of an image without boxes) returns None.
        recompute_bbox: replace the kept boxes by the boxes of their cropped ``gt_masks``
            (the LSJ recipe); without masks there is nothing to recompute from.
        bbox_clip_border: store boxes clipped to the crop (else shifted only).
    """

    def __init__(self, crop_size: tuple[int, int] | tuple[float, float],
                 crop_type: str = 'absolute', allow_negative_crop: bool = False,
                 recompute_bbox: bool = False, bbox_clip_border: bool = True) -> None:
        if crop_type not in CROP_TYPES:
            raise ValueError(f'RandomCrop crop_type must be one of {CROP_TYPES}, '
                             f'got {crop_type!r}')
        lo, hi = crop_size
        if crop_type.startswith('absolute') and (lo <= 0 or hi <= 0):
            raise ValueError(f'RandomCrop absolute crop_size must be positive: {crop_size}')
        if crop_type == 'absolute_range' and lo > hi:
            raise ValueError(f'RandomCrop absolute_range needs crop_size=(min, max): {crop_size}')
        if crop_type.startswith('relative') and not (0 < lo <= 1 and 0 < hi <= 1):
            raise ValueError(f'RandomCrop relative crop_size must lie in (0, 1]: {crop_size}')
        self.crop_size = crop_size
        self.crop_type = crop_type
        self.allow_negative_crop = allow_negative_crop
        self.recompute_bbox = recompute_bbox
        self.bbox_clip_border = bbox_clip_border

    @cache_randomness
    def _crop_hw(self, img_h: int, img_w: int) -> tuple[int, int]:
        """The crop's ``(h, w)`` in pixels for an image of ``(img_h, img_w)``."""
        if self.crop_type == 'absolute':
            return min(self.crop_size[1], img_h), min(self.crop_size[0], img_w)
        if self.crop_type == 'absolute_range':
            lo, hi = self.crop_size
            crop_h = np.random.randint(min(img_h, lo), min(img_h, hi) + 1)
            crop_w = np.random.randint(min(img_w, lo), min(img_w, hi) + 1)
            return crop_h, crop_w
        rw, rh = self.crop_size
        if self.crop_type == 'relative_range':
            rw, rh = rw + np.random.rand() * (1 - rw), rh + np.random.rand() * (1 - rh)
        return max(1, int(img_h * rh + 0.5)), max(1, int(img_w * rw + 0.5))

    @cache_randomness
    def _offset(self, margin_h: int, margin_w: int) -> tuple[int, int]:
        return np.random.randint(0, margin_h + 1), np.random.randint(0, margin_w + 1)

    def transform(self, results: dict) -> dict | None:
        img = results['img']
        img_h, img_w = img.shape[:2]
        crop_h, crop_w = self._crop_hw(img_h, img_w)
        y0, x0 = self._offset(img_h - crop_h, img_w - crop_w)
        if results.get('gt_bboxes') is not None:
            shifted = results['gt_bboxes'] - np.array([x0, y0, x0, y0], dtype=np.float32)
            clipped = clip_boxes(shifted, (crop_h, crop_w))
            keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
            if not keep.any() and not self.allow_negative_crop:
                return None
            results['gt_bboxes'] = clipped if self.bbox_clip_border else shifted
            keep_instances(results, keep)
            if results.get('gt_masks') is not None:
                window = np.array([x0, y0, x0 + crop_w, y0 + crop_h], dtype=np.float32)
                results['gt_masks'] = results['gt_masks'].crop(window)
                if self.recompute_bbox:
                    results['gt_bboxes'] = results['gt_masks'].get_bboxes()
        results['img'] = img[y0:y0 + crop_h, x0:x0 + crop_w, ...]
        results['img_shape'] = (crop_h, crop_w)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(crop_size={self.crop_size}, '
                f'crop_type={self.crop_type!r}, '
                f'allow_negative_crop={self.allow_negative_crop}, '
                f'recompute_bbox={self.recompute_bbox}, '
                f'bbox_clip_border={self.bbox_clip_border})')


@TRANSFORMS.register_module()
class FilterAnnotations(BaseTransform):
    """Drop instances whose box is too small (and, ``by_mask``, whose mask is too small).

    Args:
        min_gt_bbox_wh: ``(w, h)``; with ``by_box`` a box is kept only if its width > w and
            height > h.
        min_gt_mask_area: with ``by_mask`` a mask is kept only if it has at least this
            many pixels.
        by_box, by_mask: which tests apply (both must pass).
        keep_empty: MMDetection's meaning of this flag: when True and every box is
            filtered out, return None so the dataset draws another image; when False,
            return the image with no boxes. An image that had no boxes to begin with is
            always returned unchanged.
    """

    def __init__(self, min_gt_bbox_wh: tuple[float, float] = (1, 1),
                 min_gt_mask_area: int = 1, by_box: bool = True, by_mask: bool = False,
                 keep_empty: bool = True) -> None:
        if not (by_box or by_mask):
            raise ValueError('FilterAnnotations needs by_box=True or by_mask=True.')
        self.min_gt_bbox_wh = tuple(min_gt_bbox_wh)
        self.min_gt_mask_area = min_gt_mask_area
        self.by_box = by_box
        self.by_mask = by_mask
        self.keep_empty = keep_empty

    def transform(self, results: dict) -> dict | None:
        if 'gt_bboxes' not in results:
            raise KeyError('FilterAnnotations needs `gt_bboxes`; put it after LoadAnnotations.')
        boxes = results['gt_bboxes']
        if len(boxes) == 0:
            return results
        keep = np.ones(len(boxes), dtype=bool)
        if self.by_box:
            min_w, min_h = self.min_gt_bbox_wh
            keep &= ((boxes[:, 2] - boxes[:, 0]) > min_w) & ((boxes[:, 3] - boxes[:, 1]) > min_h)
        if self.by_mask:
            if results.get('gt_masks') is None:
                raise KeyError('FilterAnnotations(by_mask=True) needs `gt_masks`; load them '
                               'with LoadAnnotations(with_mask=True).')
            keep &= np.asarray(results['gt_masks'].areas) >= self.min_gt_mask_area
        if not keep.any() and self.keep_empty:
            return None
        keep_instances(results, keep)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(min_gt_bbox_wh={self.min_gt_bbox_wh}, '
                f'min_gt_mask_area={self.min_gt_mask_area}, by_box={self.by_box}, '
                f'by_mask={self.by_mask}, keep_empty={self.keep_empty})')
