"""``PolygonMasks``: instance masks as COCO polygons (MMDetection's class).

Each instance is a list of flat ``[x1, y1, x2, y2, ...]`` float arrays in pixel-edge
coordinates; the instance is the union of its polygons. Geometry moves the vertices, so
the outlines stay exact under resizing; cropping clips each polygon to the window
(Sutherland-Hodgman), which is exact for the convex crop window.
"""
from __future__ import annotations

from collections.abc import Sequence

import mmcv
import numpy as np
import torch
from torch import Tensor

from .bitmap_masks import FLIP_DIRECTIONS, BitmapMasks, crop_window
from .mask_utils import polygons_to_mask, valid_polygons


def clip_polygon(poly: np.ndarray, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """A flat polygon clipped to the rectangle ``[x1, x2] x [y1, y2]`` (Sutherland-Hodgman);
    an empty array when nothing with area is left."""
    pts = poly.reshape(-1, 2)
    # each edge of the window: (axis, bound, keep points on the side where sign * v >= ...)
    for axis, bound, sign in ((0, x1, 1), (0, x2, -1), (1, y1, 1), (1, y2, -1)):
        if len(pts) == 0:
            break
        inside = sign * (pts[:, axis] - bound) >= 0
        nxt = np.roll(pts, -1, axis=0)
        nxt_inside = np.roll(inside, -1)
        out = []
        for p, q, p_in, q_in in zip(pts, nxt, inside, nxt_inside):
            if p_in:
                out.append(p)
            if p_in != q_in:  # the edge crosses the bound: add the crossing point
                t = (bound - p[axis]) / (q[axis] - p[axis])
                out.append(p + t * (q - p))
        pts = np.asarray(out, dtype=np.float64).reshape(-1, 2)
    return pts.reshape(-1) if len(pts) >= 3 else np.zeros(0)


def polygon_area(poly: np.ndarray) -> float:
    """Area (pixels^2) enclosed by a flat polygon (shoelace formula)."""
    x, y = poly[0::2], poly[1::2]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


class PolygonMasks:
    """Polygon instance masks.

    Args:
        masks: one list of polygons per instance; each polygon a flat sequence of
            ``2 * k`` coordinates (``k >= 3``). Shorter or odd-length polygons are dropped,
            so an instance may hold no polygon (an empty mask).
        height, width: image size in pixels.
    """

    def __init__(self, masks: Sequence[Sequence[Sequence[float]]], height: int,
                 width: int) -> None:
        if not isinstance(masks, (list, tuple)):
            raise TypeError('PolygonMasks needs a list (one per instance) of lists of '
                            f'polygons, got {type(masks).__name__}.')
        self.height = int(height)
        self.width = int(width)
        self.masks: list[list[np.ndarray]] = []
        for polys in masks:
            if not isinstance(polys, (list, tuple)):
                raise TypeError('each PolygonMasks instance is a list of flat polygons, got '
                                f'{type(polys).__name__}.')
            self.masks.append(valid_polygons(polys))

    # ----------------------------------------------------------------- container
    def __getitem__(self, index: int | slice | np.ndarray | list | Tensor) -> PolygonMasks:
        if isinstance(index, Tensor):
            index = index.cpu().numpy()
        if isinstance(index, np.ndarray):
            index = (np.flatnonzero(index) if index.dtype == bool else index.reshape(-1)).tolist()
        if isinstance(index, list):
            masks = [self.masks[i] for i in index]
        elif isinstance(index, slice):
            masks = self.masks[index]
        else:
            masks = [self.masks[int(index)]]
        return PolygonMasks(masks, self.height, self.width)

    def __iter__(self):
        return iter(self.masks)

    def __len__(self) -> int:
        return len(self.masks)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_masks={len(self)}, height={self.height}, ' \
               f'width={self.width})'

    @classmethod
    def cat(cls, masks: Sequence[PolygonMasks]) -> PolygonMasks:
        """Concatenate masks of the same image size."""
        if not masks:
            raise ValueError('PolygonMasks.cat needs at least one PolygonMasks.')
        if any(not isinstance(m, cls) for m in masks):
            raise TypeError('PolygonMasks.cat takes PolygonMasks only.')
        sizes = {(m.height, m.width) for m in masks}
        if len(sizes) != 1:
            raise ValueError(f'PolygonMasks.cat got different image sizes {sorted(sizes)}.')
        return cls([p for m in masks for p in m.masks], masks[0].height, masks[0].width)

    def _map(self, fn) -> list[list[np.ndarray]]:
        """Apply ``fn(flat polygon copy) -> flat polygon`` to every polygon."""
        return [[fn(p.copy()) for p in polys] for polys in self.masks]

    # ---------------------------------------------------------------- geometry
    def rescale(self, scale: float | tuple[int, int],
                interpolation: str | None = None) -> PolygonMasks:
        """Resize keeping the aspect ratio, to the size ``mmcv.imrescale`` would give."""
        new_w, new_h = mmcv.rescale_size((self.width, self.height), scale)
        return self.resize((new_h, new_w))

    def resize(self, out_shape: tuple[int, int], interpolation: str | None = None
               ) -> PolygonMasks:
        """Scale the vertices to an image of ``out_shape = (h, w)``."""
        h, w = (int(v) for v in out_shape)
        sx, sy = w / self.width, h / self.height

        def scale(p: np.ndarray) -> np.ndarray:
            p[0::2] *= sx
            p[1::2] *= sy
            return p
        return PolygonMasks(self._map(scale), h, w)

    def flip(self, flip_direction: str = 'horizontal') -> PolygonMasks:
        """Mirror the vertices inside the image (x -> W - x and / or y -> H - y)."""
        if flip_direction not in FLIP_DIRECTIONS:
            raise ValueError(f'flip direction must be one of {FLIP_DIRECTIONS}, got '
                             f'{flip_direction!r}')

        def flip(p: np.ndarray) -> np.ndarray:
            if flip_direction in ('horizontal', 'diagonal'):
                p[0::2] = self.width - p[0::2]
            if flip_direction in ('vertical', 'diagonal'):
                p[1::2] = self.height - p[1::2]
            return p
        return PolygonMasks(self._map(flip), self.height, self.width)

    def pad(self, out_shape: tuple[int, int], pad_val: int = 0) -> PolygonMasks:
        """Padding at the bottom / right only enlarges the canvas."""
        return PolygonMasks(self.masks, *out_shape)

    def crop(self, bbox: np.ndarray) -> PolygonMasks:
        """Clip every polygon to the integer window of xyxy ``bbox``, in window coordinates."""
        x1, y1, w, h = crop_window(bbox, self.height, self.width)

        def crop(p: np.ndarray) -> np.ndarray:
            p[0::2] -= x1
            p[1::2] -= y1
            return clip_polygon(p, 0, 0, w, h)
        return PolygonMasks(self._map(crop), h, w)

    def translate(self, out_shape: tuple[int, int], offset: float,
                  direction: str = 'horizontal', border_value: int = 0) -> PolygonMasks:
        """Shift by ``offset`` pixels along x or y, clipped to a canvas of ``out_shape``."""
        if direction not in ('horizontal', 'vertical'):
            raise ValueError(f"translate direction must be 'horizontal' or 'vertical', got "
                             f'{direction!r}')
        h, w = (int(v) for v in out_shape)
        axis = 0 if direction == 'horizontal' else 1

        def shift(p: np.ndarray) -> np.ndarray:
            p[axis::2] += offset
            return clip_polygon(p, 0, 0, w, h)
        return PolygonMasks(self._map(shift), h, w)

    def crop_and_resize(self, bboxes: np.ndarray | Tensor, out_shape: tuple[int, int],
                        inds: np.ndarray | Tensor, device: str | torch.device = 'cpu',
                        interpolation: str = 'bilinear', binarize: bool = True) -> BitmapMasks:
        """Mask ``inds[i]`` cut to ``bboxes[i]`` (xyxy) and rasterised at ``out_shape``."""
        out_h, out_w = (int(v) for v in out_shape)
        boxes = np.asarray(torch.as_tensor(bboxes).cpu(), dtype=np.float64).reshape(-1, 4)
        inds = np.asarray(torch.as_tensor(inds).cpu()).reshape(-1)
        out = np.zeros((len(boxes), out_h, out_w), np.uint8)
        for i, (box, idx) in enumerate(zip(boxes, inds)):
            bw, bh = max(box[2] - box[0], 1.0), max(box[3] - box[1], 1.0)
            polys = []
            for p in self.masks[int(idx)]:
                p = p.copy()
                p[0::2] = (p[0::2] - box[0]) * out_w / bw
                p[1::2] = (p[1::2] - box[1]) * out_h / bh
                polys.append(p)
            out[i] = polygons_to_mask(polys, out_h, out_w)
        return BitmapMasks(out, out_h, out_w)

    # ----------------------------------------------------------------- queries
    def to_bitmap(self) -> BitmapMasks:
        """The rasterised masks (pycocotools' polygon fill)."""
        return BitmapMasks(self.to_ndarray(), self.height, self.width)

    @property
    def areas(self) -> np.ndarray:
        """``(N,)`` summed polygon areas (overlaps between an instance's polygons count
        twice, as in MMDetection)."""
        return np.array([sum(polygon_area(p) for p in polys) for polys in self.masks],
                        dtype=np.float64)

    def to_ndarray(self) -> np.ndarray:
        """``(N, H, W)`` uint8 rasterised masks."""
        if len(self) == 0:
            return np.empty((0, self.height, self.width), dtype=np.uint8)
        return np.stack([polygons_to_mask(polys, self.height, self.width)
                         for polys in self.masks])

    def to_tensor(self, dtype: torch.dtype, device: str | torch.device = 'cpu') -> Tensor:
        """``(N, H, W)`` rasterised tensor of ``dtype`` on ``device``."""
        return torch.from_numpy(self.to_ndarray()).to(device=device, dtype=dtype)

    def get_bboxes(self) -> np.ndarray:
        """``(N, 4)`` float32 xyxy extent of each instance's vertices; zeros if it has none."""
        boxes = np.zeros((len(self), 4), dtype=np.float32)
        for i, polys in enumerate(self.masks):
            if polys:
                pts = np.concatenate(polys).reshape(-1, 2)
                boxes[i] = (*pts.min(0), *pts.max(0))
        return boxes
