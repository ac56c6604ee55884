"""``CopyPaste``: paste the objects of another image onto this one (Ghiasi et al., 2021).

The official Co-DETR LSJ recipe for instance segmentation (``co_dino_5scale_lsj_*``):
``MultiImageMixDataset`` loads, LSJ-resizes, crops and pads two images to the same size,
then ``CopyPaste(max_num_pasted=100)`` pastes a random subset of the second image's objects
onto the first. Objects of the first image that the pasted ones cover lose those pixels;
their boxes are recomputed from what is left, and fully (or almost fully) covered ones are
dropped. Behaviour and defaults are MMDetection's ``CopyPaste``.
"""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness

from codetr.registry import TRANSFORMS
from codetr.structures.mask import BitmapMasks, PolygonMasks


def _as_bitmap(masks: BitmapMasks | PolygonMasks) -> BitmapMasks:
    return masks.to_bitmap() if isinstance(masks, PolygonMasks) else masks


def _box_masks(boxes: np.ndarray, height: int, width: int) -> BitmapMasks:
    """Filled-box masks ``(N, H, W)`` of xyxy ``boxes`` (``paste_by_box``)."""
    masks = np.zeros((len(boxes), height, width), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(int)):
        masks[i, max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 1
    return BitmapMasks(masks, height, width)


@TRANSFORMS.register_module()
class CopyPaste(BaseTransform):
    """Paste objects of ``results['mix_results'][0]`` onto ``results['img']``.

    Both images must have the same size (the LSJ pipeline pads both to it). Needs
    ``gt_bboxes``, ``gt_bboxes_labels``, ``gt_ignore_flags`` and ``gt_masks`` in both (or
    ``paste_by_box``, which makes box-shaped masks). The result holds the kept objects of
    the destination image first, then the pasted ones; ``gt_masks`` becomes
    :class:`BitmapMasks`.

    Args:
        max_num_pasted: the number of pasted objects is drawn uniformly from
            ``[0, min(num_objects + 1, max_num_pasted))`` (MMDetection's rule).
        bbox_occluded_thr: a destination object is kept if every coordinate of its box moved
            by at most this many pixels after the occlusion ...
        mask_occluded_thr: ... or if more than this many of its mask pixels stay visible.
        selected: paste a random subset (True) or every object of the source image.
        paste_by_box: use box-shaped masks, for data without masks.
    """

    def __init__(self, max_num_pasted: int = 100, bbox_occluded_thr: int = 10,
                 mask_occluded_thr: int = 300, selected: bool = True,
                 paste_by_box: bool = False) -> None:
        if max_num_pasted < 0:
            raise ValueError(f'max_num_pasted={max_num_pasted} must be >= 0.')
        self.max_num_pasted = max_num_pasted
        self.bbox_occluded_thr = bbox_occluded_thr
        self.mask_occluded_thr = mask_occluded_thr
        self.selected = selected
        self.paste_by_box = paste_by_box

    @cache_randomness
    def get_indexes(self, dataset) -> int:
        """Index of the image to paste from (``MultiImageMixDataset`` loads it)."""
        return int(np.random.randint(0, len(dataset)))

    def _masks(self, results: dict) -> BitmapMasks:
        if self.paste_by_box:
            h, w = results['img'].shape[:2]
            return _box_masks(results['gt_bboxes'], h, w)
        if results.get('gt_masks') is None:
            raise KeyError('CopyPaste needs gt_masks: LoadAnnotations(with_mask=True) in the '
                           'loading pipeline, or CopyPaste(paste_by_box=True) for box-only data.')
        return _as_bitmap(results['gt_masks'])

    @cache_randomness
    def _select(self, num: int) -> np.ndarray:
        """Indices of the source objects to paste."""
        if not self.selected:
            return np.arange(num)
        count = np.random.randint(0, min(num + 1, self.max_num_pasted))
        return np.sort(np.random.choice(num, size=count, replace=False))

    def transform(self, results: dict) -> dict:
        mix = results.get('mix_results')
        if not mix or len(mix) != 1:
            raise ValueError('CopyPaste needs results["mix_results"] with one image; wrap the '
                             'dataset in MultiImageMixDataset and put CopyPaste in its pipeline.')
        src = mix[0]
        if src['img'].shape != results['img'].shape:
            raise ValueError(f'CopyPaste needs two images of the same size, got '
                             f'{results["img"].shape} and {src["img"].shape}; pad both to a '
                             f'fixed size first (Pad(size=...)).')
        chosen = self._select(len(src['gt_bboxes']))
        if len(chosen) == 0:
            return results
        return self._paste(results, src, chosen)

    def _paste(self, dst: dict, src: dict, chosen: np.ndarray) -> dict:
        """``dst`` with ``src``'s objects ``chosen`` pasted on top."""
        dst_masks, src_masks = self._masks(dst), self._masks(src)[chosen]
        covered = src_masks.masks.any(axis=0)  # [H, W] pixels the pasted objects take
        visible = BitmapMasks(dst_masks.masks * ~covered[None], dst_masks.height,
                              dst_masks.width)
        new_boxes = visible.get_bboxes()
        moved = np.abs(new_boxes - dst['gt_bboxes']).max(axis=1) if len(new_boxes) else \
            np.zeros(0)
        keep = (moved <= self.bbox_occluded_thr) | (visible.areas > self.mask_occluded_thr)
        dst_img = dst['img']
        dst['img'] = np.where(covered[..., None], src['img'], dst_img).astype(dst_img.dtype)
        dst['gt_bboxes'] = np.concatenate(
            [new_boxes[keep], src['gt_bboxes'][chosen]]).astype(np.float32)
        dst['gt_bboxes_labels'] = np.concatenate(
            [dst['gt_bboxes_labels'][keep], src['gt_bboxes_labels'][chosen]])
        dst['gt_ignore_flags'] = np.concatenate(
            [dst['gt_ignore_flags'][keep], src['gt_ignore_flags'][chosen]])
        dst['gt_masks'] = BitmapMasks.cat([visible[keep], src_masks])
        return dst

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(max_num_pasted={self.max_num_pasted}, '
                f'bbox_occluded_thr={self.bbox_occluded_thr}, '
                f'mask_occluded_thr={self.mask_occluded_thr}, selected={self.selected}, '
                f'paste_by_box={self.paste_by_box})')
