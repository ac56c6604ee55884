"""Loading transforms: read the image from disk and the boxes from a dataset's ``data_info``.

The dataset hands every transform a ``results`` dict built from its ``data_info``::

    dict(img_path=str, img_id=int, height=int, width=int,
         instances=[dict(bbox=[x1, y1, x2, y2], bbox_label=int, ignore_flag=0 | 1,
                         mask=COCO segmentation (optional)), ...])

``height`` / ``width`` come from the annotation file. ``LoadImageFromFile`` compares them
with the decoded image: when they differ it logs a warning naming the image and both sizes
and replaces them with the real size; ``LoadAnnotations`` then clips the boxes (which keep
their pixel coordinates) to the real image and drops any that become empty, and it drops
boxes with a NaN or infinite coordinate, so neither reaches a loss.
"""
from __future__ import annotations

import logging

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.fileio import get
from mmengine.logging import print_log

from codetr.registry import TRANSFORMS
from codetr.structures.mask import (
    BitmapMasks,
    PolygonMasks,
    mask_to_polygons,
    rle_to_mask,
    segmentation_to_mask,
)

# Each worker process names this many size mismatches one by one, then says it stops.
MAX_SIZE_WARNINGS = 10
_size_warnings: set[str] = set()


def warn_size_mismatch(results: dict, real_hw: tuple[int, int]) -> None:
    """Log that the image's real size differs from its annotation's (first few per process)."""
    path = str(results.get('img_path'))
    if path in _size_warnings or len(_size_warnings) > MAX_SIZE_WARNINGS:
        return
    _size_warnings.add(path)
    (h, w), (json_h, json_w) = real_hw, (results['height'], results['width'])
    swapped = ' (width and height swapped: EXIF orientation?)' if (h, w) == (json_w,
                                                                               json_h) else ''
    msg = (f'image {path} (image id {results.get("img_id")}) is {w}x{h} pixels but its '
           f'annotation says width={json_w}, height={json_h}{swapped}; using the real size: '
           f'its boxes keep their pixel coordinates and are clipped to the real image. Fix '
           f'"width" / "height" in the annotation file (and rescale the boxes if the images '
           f'were resized after annotation).')
    if len(_size_warnings) > MAX_SIZE_WARNINGS:
        msg += ' Further size mismatches are not logged one by one.'
    print_log(msg, logger='current', level=logging.WARNING)


def valid_instances(results: dict) -> list[dict]:
    """``results['instances']`` without boxes that are non-finite or empty after clipping
    to ``(results['height'], results['width'])`` (when known); dropped ones are logged."""
    instances = results.get('instances', [])
    boxes = [inst['bbox'] for inst in instances]
    if any(len(box) != 4 for box in boxes):
        raise ValueError(f'Every instance bbox of {results.get("img_path")!r} must be '
                         f'[x1, y1, x2, y2]; got {boxes}.')
    if not boxes:
        return instances
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    finite = np.isfinite(arr).all(axis=1)
    clipped = arr.copy()
    if results.get('height') and results.get('width'):
        clipped[:, 0::2] = clipped[:, 0::2].clip(0, results['width'])
        clipped[:, 1::2] = clipped[:, 1::2].clip(0, results['height'])
    with np.errstate(invalid='ignore'):
        nonempty = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    keep = finite & nonempty
    if not keep.all():
        print_log(f'{results.get("img_path")} (image id {results.get("img_id")}): dropped '
                  f'{int((~finite).sum())} box(es) with a NaN or infinite coordinate and '
                  f'{int((finite & ~nonempty).sum())} empty after clipping to the image: '
                  f'{[boxes[i] for i in np.flatnonzero(~keep)[:5]]}', logger='current',
                  level=logging.WARNING)
    changed = (clipped != arr).any(axis=1)
    if keep.all() and not changed.any():
        return instances
    return [dict(inst, bbox=clipped[i].tolist()) if changed[i] else inst
            for i, inst in enumerate(instances) if keep[i]]


@TRANSFORMS.register_module()
class LoadImageFromFile(BaseTransform):
    """Read ``results['img_path']`` into ``img``: uint8 BGR ``(H, W, 3)`` (or float32).

    Adds ``img``, ``img_shape`` and ``ori_shape`` (both ``(H, W)`` in pixels).

    Args:
        to_float32: convert the image to float32 (the model's preprocessor does that anyway).
        color_type: ``'color'`` (3-channel BGR), ``'grayscale'`` or ``'unchanged'``.
        imdecode_backend: image decoding backend of ``mmcv.imfrombytes``.
        backend_args: file backend arguments of ``mmengine.fileio.get`` (local disk if None).
        ignore_empty: return None (the dataset re-samples) instead of raising for a
            missing file.
    """

    def __init__(self, to_float32: bool = False, color_type: str = 'color',
                 imdecode_backend: str = 'cv2', backend_args: dict | None = None,
                 ignore_empty: bool = False) -> None:
        self.to_float32 = to_float32
        self.color_type = color_type
        self.imdecode_backend = imdecode_backend
        self.backend_args = backend_args
        self.ignore_empty = ignore_empty

    def transform(self, results: dict) -> dict | None:
        path = results['img_path']
        try:
            img_bytes = get(path, backend_args=self.backend_args)
        except FileNotFoundError as err:
            if self.ignore_empty:
                return None
            raise FileNotFoundError(
                f'Image file {path!r} does not exist; check `data_root` and `data_prefix` '
                f'in the dataset config.') from err
        img = mmcv.imfrombytes(img_bytes, flag=self.color_type, backend=self.imdecode_backend)
        if img is None:
            raise ValueError(f'Image file {path!r} could not be decoded; is it an image?')
        if self.to_float32:
            img = img.astype(np.float32)
        real_hw = img.shape[:2]
        if results.get('height') is not None and results.get('width') is not None and (
                tuple(real_hw) != (int(results['height']), int(results['width']))):
            warn_size_mismatch(results, real_hw)
            results['height'], results['width'] = real_hw
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(to_float32={self.to_float32}, '
                f'color_type={self.color_type!r}, imdecode_backend={self.imdecode_backend!r}, '
                f'backend_args={self.backend_args}, ignore_empty={self.ignore_empty})')


@TRANSFORMS.register_module()
class LoadAnnotations(BaseTransform):
    """Turn ``results['instances']`` into arrays (and masks).

    Adds ``gt_bboxes`` float32 ``(N, 4)`` xyxy pixels, ``gt_ignore_flags`` bool ``(N,)``
    (with boxes), ``gt_bboxes_labels`` int64 ``(N,)`` (with labels) and ``gt_masks`` (with
    masks): :class:`BitmapMasks` of the image's original size when ``poly2mask``, else
    :class:`PolygonMasks`. An image without instances gets arrays of length 0, so later
    transforms need no special case.

    Masks come from each instance's ``mask``: COCO polygons (a list of flat
    ``[x, y, ...]`` lists) or RLE (a dict, compressed or not, as COCO stores ``iscrowd``
    regions), decoded with pycocotools. With ``poly2mask=False`` an RLE becomes the
    polygons of its outer outlines (COCO polygons cannot carry holes).

    Args:
        with_bbox: load boxes and ignore flags.
        with_label: load class indices.
        with_mask: load instance masks; every instance must have a ``mask``.
        poly2mask: rasterise polygons into bitmaps (MMDetection's default, True).
    """

    def __init__(self, with_bbox: bool = True, with_label: bool = True,
                 with_mask: bool = False, poly2mask: bool = True) -> None:
        self.with_bbox = with_bbox
        self.with_label = with_label
        self.with_mask = with_mask
        self.poly2mask = poly2mask

    def transform(self, results: dict) -> dict:
        instances = results.get('instances', [])
        if self.with_bbox:  # drop non-finite boxes (and re-clip) before any array is built
            instances = results['instances'] = valid_instances(results)
            boxes = [inst['bbox'] for inst in instances]
            results['gt_bboxes'] = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            results['gt_ignore_flags'] = np.asarray(
                [bool(inst.get('ignore_flag', 0)) for inst in instances], dtype=bool)
        if self.with_label:
            results['gt_bboxes_labels'] = np.asarray(
                [inst['bbox_label'] for inst in instances], dtype=np.int64)
        if self.with_mask:
            results['gt_masks'] = self._load_masks(results, instances)
        return results

    def _image_hw(self, results: dict) -> tuple[int, int]:
        """The original image size the segmentations are drawn in."""
        if 'ori_shape' in results:
            return tuple(int(v) for v in results['ori_shape'][:2])
        if 'height' in results and 'width' in results:
            return int(results['height']), int(results['width'])
        raise KeyError('LoadAnnotations(with_mask=True) needs the image size: put it after '
                       'LoadImageFromFile (ori_shape) or give height / width in the data info.')

    def _load_masks(self, results: dict, instances: list[dict]) -> BitmapMasks | PolygonMasks:
        height, width = self._image_hw(results)
        missing = [i for i, inst in enumerate(instances) if not inst.get('mask')]
        if missing:
            raise ValueError(
                f'LoadAnnotations(with_mask=True): instances {missing[:10]} of '
                f'{results.get("img_path")!r} have no segmentation. Instance segmentation '
                f'needs a "segmentation" for every annotation; for box-only data drop '
                f'with_mask (and the mask head).')
        segms = [inst['mask'] for inst in instances]
        if self.poly2mask:
            return BitmapMasks([segmentation_to_mask(s, height, width) for s in segms],
                               height, width)
        polys = [s if isinstance(s, list) else mask_to_polygons(rle_to_mask(s, height, width))
                 for s in segms]
        return PolygonMasks(polys, height, width)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(with_bbox={self.with_bbox}, '
                f'with_label={self.with_label}, with_mask={self.with_mask}, '
                f'poly2mask={self.poly2mask})')
