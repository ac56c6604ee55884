"""``Pad``: pad the image (and masks) at the bottom and right, so coordinates stay valid."""
from __future__ import annotations

import math

import mmcv
from mmcv.transforms import BaseTransform

from codetr.registry import TRANSFORMS


@TRANSFORMS.register_module()
class Pad(BaseTransform):
    """Pad the image to a fixed size, to a multiple of a divisor, or to a square.

    Adds ``pad_shape`` (the padded ``img.shape``), ``pad_fixed_size``, ``pad_size_divisor``
    and, as mmcv and MMDetection do, sets ``img_shape`` to the padded ``(H, W)``: after a
    ``Pad`` the padding counts as image (this is what the LSJ configs rely on).

    Args:
        size: fixed ``(w, h)`` in pixels; the image must not be larger.
        size_divisor: pad H and W up to multiples of this (applied after ``pad_to_square``).
        pad_to_square: pad to a square of the long side.
        pad_val: ``dict(img=value, masks=value)`` (default ``dict(img=0)``; masks pad with
            0 unless given); the image value is one number or one per channel (BGR order for
            a BGR image). A bare number means ``dict(img=number)``.
        padding_mode: ``'constant'``, ``'edge'``, ``'reflect'`` or ``'symmetric'``.
    """

    def __init__(self, size: tuple[int, int] | None = None, size_divisor: int | None = None,
                 pad_to_square: bool = False, pad_val: dict | float | None = None,
                 padding_mode: str = 'constant') -> None:
        if pad_to_square and size is not None:
            raise ValueError('Pad: give either `size` or `pad_to_square=True`, not both.')
        if size is None and size_divisor is None and not pad_to_square:
            raise ValueError('Pad needs `size`, `size_divisor` or `pad_to_square=True`.')
        if size is not None and size_divisor is not None:
            raise ValueError('Pad: give either `size` or `size_divisor`, not both.')
        self.size = tuple(size) if size is not None else None
        self.size_divisor = size_divisor
        self.pad_to_square = pad_to_square
        if pad_val is None:
            pad_val = dict(img=0)
        self.pad_val = pad_val if isinstance(pad_val, dict) else dict(img=pad_val)
        self.padding_mode = padding_mode

    def _target_hw(self, img_h: int, img_w: int) -> tuple[int, int]:
        if self.size is not None:
            w, h = self.size
            if img_h > h or img_w > w:
                raise ValueError(f'Pad(size={self.size}) got a larger image of (w, h) = '
                                 f'({img_w}, {img_h}); resize or crop it first.')
            return h, w
        if self.pad_to_square:
            img_h = img_w = max(img_h, img_w)
        if self.size_divisor is not None:
            d = self.size_divisor
            img_h, img_w = math.ceil(img_h / d) * d, math.ceil(img_w / d) * d
        return img_h, img_w

    def transform(self, results: dict) -> dict:
        img = results['img']
        target = self._target_hw(*img.shape[:2])
        pad_val = self.pad_val.get('img', 0)
        if isinstance(pad_val, (int, float)) and img.ndim == 3:
            pad_val = (pad_val,) * img.shape[2]
        img = mmcv.impad(img, shape=target, pad_val=pad_val, padding_mode=self.padding_mode)
        results['img'] = img
        results['pad_shape'] = img.shape
        results['pad_fixed_size'] = self.size
        results['pad_size_divisor'] = self.size_divisor
        results['img_shape'] = img.shape[:2]
        if results.get('gt_masks') is not None:
            results['gt_masks'] = results['gt_masks'].pad(
                img.shape[:2], pad_val=self.pad_val.get('masks', 0))
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(size={self.size}, '
                f'size_divisor={self.size_divisor}, pad_to_square={self.pad_to_square}, '
                f'pad_val={self.pad_val}, padding_mode={self.padding_mode!r})')
