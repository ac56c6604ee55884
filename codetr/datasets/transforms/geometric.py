"""Geometric transforms whose boxes and masks follow the image: ``Resize`` and ``RandomFlip``.

``RandomResize`` and ``RandomChoiceResize`` come from mmcv; they build their inner
``Resize`` from the registry, which under the ``codetr`` default scope resolves to the
``Resize`` below (a test checks it), so boxes follow those too.
"""
from __future__ import annotations

from collections.abc import Sequence

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness

from codetr.registry import TRANSFORMS

from .box_utils import clip_boxes, flip_boxes

FLIP_DIRECTIONS = ('horizontal', 'vertical', 'diagonal')


@TRANSFORMS.register_module()
class Resize(BaseTransform):
    """Resize the image to ``scale`` (or by ``scale_factor``); boxes and masks follow.

    Adds or updates ``img``, ``img_shape`` (H, W), ``scale`` (w, h), ``scale_factor``
    ``(w_scale, h_scale)`` = new size / old size of *this* resize, and ``keep_ratio``.
    As in MMDetection, ``scale_factor`` is overwritten, not accumulated, by a second resize.
    ``gt_masks`` are resized to the new ``img_shape`` (nearest neighbour for bitmaps, scaled
    vertices for polygons).

    Args:
        scale: target ``(w, h)`` or an int for a square. With ``keep_ratio`` the image is
            scaled as large as possible so that its long side <= max(scale) and its short
            side <= min(scale) (``mmcv.imrescale``).
        scale_factor: float or ``(w, h)`` ratio, used when ``scale`` is None.
        keep_ratio: keep the aspect ratio (MMDetection's default is False).
        clip_object_border: clip boxes to the resized image.
        backend, interpolation: passed to mmcv's image resize.
    """

    def __init__(self, scale: int | tuple[int, int] | None = None,
                 scale_factor: float | tuple[float, float] | None = None,
                 keep_ratio: bool = False, clip_object_border: bool = True,
                 backend: str = 'cv2', interpolation: str = 'bilinear') -> None:
        if scale is None and scale_factor is None:
            raise ValueError('Resize needs `scale` (w, h) or `scale_factor`; both are None.')
        self.scale = (scale, scale) if isinstance(scale, int) else scale
        if isinstance(scale_factor, (int, float)):
            scale_factor = (float(scale_factor), float(scale_factor))
        self.scale_factor = scale_factor
        self.keep_ratio = keep_ratio
        self.clip_object_border = clip_object_border
        self.backend = backend
        self.interpolation = interpolation

    def _target_scale(self, img: np.ndarray) -> tuple[int, int]:
        if self.scale:
            return tuple(self.scale)
        h, w = img.shape[:2]
        return int(w * self.scale_factor[0] + 0.5), int(h * self.scale_factor[1] + 0.5)

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        results['scale'] = self._target_scale(img)
        if self.keep_ratio:
            img = mmcv.imrescale(img, results['scale'], interpolation=self.interpolation,
                                 backend=self.backend)
        else:
            img = mmcv.imresize(img, results['scale'], interpolation=self.interpolation,
                                backend=self.backend)
        new_h, new_w = img.shape[:2]
        # Ratios of the rounded sizes, so that boxes land on the pixels actually produced.
        w_scale, h_scale = new_w / w, new_h / h
        results['img'] = img
        results['img_shape'] = (new_h, new_w)
        results['scale_factor'] = (w_scale, h_scale)
        results['keep_ratio'] = self.keep_ratio
        if results.get('gt_bboxes') is not None:
            boxes = results['gt_bboxes'] * np.array([w_scale, h_scale] * 2, dtype=np.float32)
            if self.clip_object_border:
                boxes = clip_boxes(boxes, (new_h, new_w))
            results['gt_bboxes'] = boxes.astype(np.float32)
        if results.get('gt_masks') is not None:
            results['gt_masks'] = results['gt_masks'].resize((new_h, new_w))
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, '
                f'scale_factor={self.scale_factor}, keep_ratio={self.keep_ratio}, '
                f'clip_object_border={self.clip_object_border}, backend={self.backend!r}, '
                f'interpolation={self.interpolation!r})')


@TRANSFORMS.register_module()
class RandomFlip(BaseTransform):
    """Flip the image, its boxes and masks at random; adds ``flip`` (bool) and
    ``flip_direction``.

    Args:
        prob: probability of flipping. A float with one direction: flip with that
            probability; a float with a list of directions: that probability is shared
            equally among them; a list (one per direction): each direction's probability.
        direction: ``'horizontal'``, ``'vertical'``, ``'diagonal'`` or a list of them.
    """

    def __init__(self, prob: float | Sequence[float],
                 direction: str | Sequence[str] = 'horizontal') -> None:
        directions = [direction] if isinstance(direction, str) else list(direction)
        bad = [d for d in directions if d not in FLIP_DIRECTIONS]
        if bad:
            raise ValueError(f'RandomFlip direction must be one of {FLIP_DIRECTIONS}, got {bad}')
        if isinstance(prob, (int, float)):
            probs = [float(prob) / len(directions)] * len(directions)
        else:
            probs = [float(p) for p in prob]
            if len(probs) != len(directions):
                raise ValueError(f'RandomFlip got {len(probs)} probabilities for '
                                 f'{len(directions)} directions; give one per direction.')
        if any(p < 0 for p in probs) or sum(probs) > 1 + 1e-6:
            raise ValueError(f'RandomFlip probabilities must be >= 0 and sum to <= 1: {probs}')
        self.prob = prob
        self.direction = direction
        self._choices = directions + [None]  # None: no flip
        self._probs = probs + [max(0.0, 1.0 - sum(probs))]

    @cache_randomness
    def _choose_direction(self) -> str | None:
        idx = np.random.choice(len(self._choices), p=np.array(self._probs) / sum(self._probs))
        return self._choices[idx]

    def transform(self, results: dict) -> dict:
        direction = self._choose_direction()
        results['flip'] = direction is not None
        results['flip_direction'] = direction
        if direction is None:
            return results
        img_shape = results['img'].shape[:2]
        results['img'] = mmcv.imflip(results['img'], direction=direction)
        if results.get('gt_bboxes') is not None:
            results['gt_bboxes'] = flip_boxes(results['gt_bboxes'], img_shape, direction)
        if results.get('gt_masks') is not None:
            results['gt_masks'] = results['gt_masks'].flip(direction)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(prob={self.prob}, direction={self.direction!r})'
