"""``PackDetInputs``: the last pipeline step, from a results dict to model inputs."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine.structures import InstanceData

from codetr.registry import TRANSFORMS
from codetr.structures import DetDataSample

DEFAULT_META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                     'flip_direction')


@TRANSFORMS.register_module()
class PackDetInputs(BaseTransform):
    """Pack the image and boxes into ``dict(inputs=..., data_samples=DetDataSample)``.

    - ``inputs``: uint8 ``(C, H, W)`` tensor, channels as loaded (BGR); the model's
      ``DetDataPreprocessor`` converts and normalises.
    - ``data_samples.gt_instances``: ``bboxes`` float32 ``(N, 4)`` xyxy and ``labels`` int64
      ``(N,)`` of the boxes whose ``gt_ignore_flags`` is False, and ``masks`` (the
      ``BitmapMasks`` / ``PolygonMasks`` of those instances) when the results have
      ``gt_masks``;
      ``data_samples.ignored_instances``: the same fields for the ignored ones.
    - metainfo: every key of ``meta_keys`` present in the results (missing ones, e.g.
      ``flip`` in a pipeline without ``RandomFlip``, are skipped).
    """

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        self.meta_keys = tuple(meta_keys)

    @staticmethod
    def _image_tensor(img: np.ndarray) -> torch.Tensor:
        if img.ndim == 2:
            img = img[..., None]
        # transpose + ascontiguousarray also resolves the negative strides a flip leaves.
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))

    @staticmethod
    def _instances(results: dict, rows: np.ndarray) -> InstanceData:
        instances = InstanceData()
        if 'gt_bboxes' in results:
            instances.bboxes = torch.from_numpy(
                np.asarray(results['gt_bboxes'], dtype=np.float32)[rows].reshape(-1, 4))
        if 'gt_bboxes_labels' in results:
            instances.labels = torch.from_numpy(
                np.asarray(results['gt_bboxes_labels'], dtype=np.int64)[rows])
        if 'gt_masks' in results:
            instances.masks = results['gt_masks'][rows]
        return instances

    def transform(self, results: dict) -> dict:
        packed = {}
        if 'img' in results:
            packed['inputs'] = self._image_tensor(results['img'])
        sample = DetDataSample()
        num = len(results.get('gt_bboxes', results.get('gt_bboxes_labels', [])))
        ignore = np.asarray(results.get('gt_ignore_flags', np.zeros(num, bool)), dtype=bool)
        sample.gt_instances = self._instances(results, ~ignore)
        sample.ignored_instances = self._instances(results, ignore)
        sample.set_metainfo({key: results[key] for key in self.meta_keys if key in results})
        packed['data_samples'] = sample
        return packed

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(meta_keys={self.meta_keys})'
