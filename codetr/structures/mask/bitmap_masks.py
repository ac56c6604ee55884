"""``BitmapMasks``: instance masks as an ``(N, H, W)`` uint8 array (MMDetection's class).

The geometric methods mirror the box operations of the transforms, so that a mask and its
box move together: ``resize`` / ``rescale``, ``flip``, ``crop``, ``pad``, ``translate``;
``crop_and_resize`` cuts the mask targets of RoIs.
"""
from __future__ import annotations

from collections.abc import Sequence

import mmcv
import numpy as np
import torch
from torch import Tensor
from torchvision.ops import roi_align

FLIP_DIRECTIONS = ('horizontal', 'vertical', 'diagonal')


def flip_array(masks: np.ndarray, direction: str) -> np.ndarray:
    """Mirror ``(N, H, W)`` masks: horizontal (x), vertical (y) or diagonal (both)."""
    if direction not in FLIP_DIRECTIONS:
        raise ValueError(f'flip direction must be one of {FLIP_DIRECTIONS}, got {direction!r}')
    if direction in ('horizontal', 'diagonal'):
        masks = masks[:, :, ::-1]
    if direction in ('vertical', 'diagonal'):
        masks = masks[:, ::-1, :]
    return np.ascontiguousarray(masks)


def crop_window(bbox: np.ndarray, height: int, width: int) -> tuple[int, int, int, int]:
    """``(x1, y1, w, h)`` integer window of an xyxy ``bbox`` clipped to ``(height, width)``;
    at least one pixel wide and tall (MMDetection's rule)."""
    bbox = np.asarray(bbox, dtype=np.float64).reshape(4).copy()
    bbox[0::2] = np.clip(bbox[0::2], 0, width)
    bbox[1::2] = np.clip(bbox[1::2], 0, height)
    x1, y1, x2, y2 = (int(v) for v in bbox)
    return x1, y1, max(x2 - x1, 1), max(y2 - y1, 1)


class BitmapMasks:
    """Dense instance masks.

    Args:
        masks: ``(N, H, W)`` array (any integer / bool dtype, stored as uint8) or a list of
            ``(H, W)`` arrays; an empty list gives ``(0, H, W)``.
        height, width: image size in pixels.
    """

    def __init__(self, masks: np.ndarray | Sequence[np.ndarray], height: int,
                 width: int) -> None:
        self.height = int(height)
        self.width = int(width)
        if len(masks) == 0:
            self.masks = np.empty((0, self.height, self.width), dtype=np.uint8)
        else:
            arr = np.asarray(masks if isinstance(masks, np.ndarray) else np.stack(masks))
            if arr.ndim != 3 or arr.shape[1:] != (self.height, self.width):
                raise ValueError(f'BitmapMasks needs (N, {self.height}, {self.width}) masks, '
                                 f'got {arr.shape}.')
            self.masks = arr.astype(np.uint8, copy=False)

    # ----------------------------------------------------------------- container
    def __getitem__(self, index: int | slice | np.ndarray | list | Tensor) -> BitmapMasks:
        if isinstance(index, Tensor):
            index = index.cpu().numpy()
        masks = self.masks[index].reshape(-1, self.height, self.width)
        return BitmapMasks(masks, self.height, self.width)

    def __iter__(self):
        return iter(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_masks={len(self)}, height={self.height}, ' \
               f'width={self.width})'

    @classmethod
    def cat(cls, masks: Sequence[BitmapMasks]) -> BitmapMasks:
        """Concatenate masks of the same image size."""
        if not masks:
            raise ValueError('BitmapMasks.cat needs at least one BitmapMasks.')
        if any(not isinstance(m, cls) for m in masks):
            raise TypeError('BitmapMasks.cat takes BitmapMasks only.')
        sizes = {(m.height, m.width) for m in masks}
        if len(sizes) != 1:
            raise ValueError(f'BitmapMasks.cat got different image sizes {sorted(sizes)}.')
        return cls(np.concatenate([m.masks for m in masks]), masks[0].height, masks[0].width)

    # ---------------------------------------------------------------- geometry
    def rescale(self, scale: float | tuple[int, int],
                interpolation: str = 'nearest') -> BitmapMasks:
        """Resize keeping the aspect ratio, as ``mmcv.imrescale(img, scale)`` does."""
        new_w, new_h = mmcv.rescale_size((self.width, self.height), scale)
        return self.resize((new_h, new_w), interpolation)

    def resize(self, out_shape: tuple[int, int], interpolation: str = 'nearest') -> BitmapMasks:
        """Resize to ``out_shape = (h, w)`` pixels."""
        h, w = (int(v) for v in out_shape)
        if len(self) == 0:
            return BitmapMasks([], h, w)
        resized = np.stack([mmcv.imresize(m, (w, h), interpolation=interpolation)
                            for m in self.masks])
        return BitmapMasks(resized, h, w)

    def flip(self, flip_direction: str = 'horizontal') -> BitmapMasks:
        """Mirror inside the image: ``'horizontal'``, ``'vertical'`` or ``'diagonal'``."""
        return BitmapMasks(flip_array(self.masks, flip_direction), self.height, self.width)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> BitmapMasks:
        """Pad at the bottom and right to ``out_shape = (h, w)`` (not smaller than now)."""
        h, w = (int(v) for v in out_shape)
        if h < self.height or w < self.width:
            raise ValueError(f'cannot pad masks of (h, w) = ({self.height}, {self.width}) to '
                             f'the smaller {(h, w)}.')
        padded = np.full((len(self), h, w), pad_val, dtype=np.uint8)
        padded[:, :self.height, :self.width] = self.masks
        return BitmapMasks(padded, h, w)

    def crop(self, bbox: np.ndarray) -> BitmapMasks:
        """The part inside the xyxy window ``bbox`` (clipped to the image, integer pixels)."""
        x1, y1, w, h = crop_window(bbox, self.height, self.width)
        cropped = self.masks[:, y1:y1 + h, x1:x1 + w]
        out = np.zeros((len(self), h, w), dtype=np.uint8)  # a 1-pixel window may overhang
        out[:, :cropped.shape[1], :cropped.shape[2]] = cropped
        return BitmapMasks(out, h, w)

    def translate(self, out_shape: tuple[int, int], offset: float,
                  direction: str = 'horizontal', border_value: int = 0) -> BitmapMasks:
        """Shift by ``offset`` pixels (rounded) along x (``'horizontal'``) or y
        (``'vertical'``) onto a canvas of ``out_shape = (h, w)``; uncovered pixels get
        ``border_value``."""
        if direction not in ('horizontal', 'vertical'):
            raise ValueError(f"translate direction must be 'horizontal' or 'vertical', got "
                             f'{direction!r}')
        h, w = (int(v) for v in out_shape)
        out = np.full((len(self), h, w), border_value, dtype=np.uint8)
        dx, dy = (int(round(offset)), 0) if direction == 'horizontal' else (0, int(round(offset)))
        src_y = slice(max(0, -dy), min(self.height, h - dy))
        src_x = slice(max(0, -dx), min(self.width, w - dx))
        if src_y.start < src_y.stop and src_x.start < src_x.stop:
            out[:, src_y.start + dy:src_y.stop + dy, src_x.start + dx:src_x.stop + dx] = \
                self.masks[:, src_y, src_x]
        return BitmapMasks(out, h, w)

    def crop_and_resize(self, bboxes: np.ndarray | Tensor, out_shape: tuple[int, int],
                        inds: np.ndarray | Tensor, device: str | torch.device = 'cpu',
                        interpolation: str = 'bilinear', binarize: bool = True) -> BitmapMasks:
        """Mask ``inds[i]`` cut to ``bboxes[i]`` (xyxy pixels) and resized to ``out_shape``.

        RoIAlign (aligned, adaptive sampling) averages the 0/1 mask inside each output
        cell; ``binarize`` thresholds at 0.5, as MMDetection's mask targets do. Only the
        masks that ``inds`` names are converted to float.
        """
        if interpolation != 'bilinear':
            raise ValueError('BitmapMasks.crop_and_resize supports bilinear RoIAlign only.')
        out_h, out_w = (int(v) for v in out_shape)
        boxes = torch.as_tensor(bboxes, dtype=torch.float32, device=device).reshape(-1, 4)
        inds = torch.as_tensor(inds, dtype=torch.long, device=device).reshape(-1)
        if len(self) == 0 or len(boxes) == 0:
            return BitmapMasks(np.zeros((len(boxes), out_h, out_w), np.uint8), out_h, out_w)
        used, batch_idx = torch.unique(inds, return_inverse=True)
        masks = torch.from_numpy(self.masks).to(device)[used].float()[:, None]  # [U, 1, H, W]
        rois = torch.cat([batch_idx[:, None].float(), boxes], dim=1)
        targets = roi_align(masks, rois, (out_h, out_w), 1.0, 0, True).squeeze(1)
        targets = (targets >= 0.5) if binarize else targets
        return BitmapMasks(targets.cpu().numpy(), out_h, out_w)

    # ----------------------------------------------------------------- queries
    @property
    def areas(self) -> np.ndarray:
        """``(N,)`` pixel counts."""
        return self.masks.sum((1, 2))

    def to_ndarray(self) -> np.ndarray:
        """``(N, H, W)`` uint8."""
        return self.masks

    def to_tensor(self, dtype: torch.dtype, device: str | torch.device = 'cpu') -> Tensor:
        """``(N, H, W)`` tensor of ``dtype`` on ``device``."""
        return torch.from_numpy(self.masks).to(device=device, dtype=dtype)

    def get_bboxes(self) -> np.ndarray:
        """``(N, 4)`` float32 xyxy pixel-edge boxes of the masks; zeros for empty masks."""
        boxes = np.zeros((len(self), 4), dtype=np.float32)
        cols = self.masks.any(axis=1)  # [N, W]
        rows = self.masks.any(axis=2)  # [N, H]
        for i in range(len(self)):
            xs, ys = np.flatnonzero(cols[i]), np.flatnonzero(rows[i])
            if len(xs) and len(ys):
                boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        return boxes
