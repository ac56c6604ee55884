"""``DetDataPreprocessor``: the model-owned step from packed uint8 images to a float batch."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from mmengine.model import ImgDataPreprocessor
from torch import nn

from codetr.registry import MODELS
from codetr.structures import SampleList


def pad_gt_masks(data_samples: SampleList, shape: tuple[int, int], pad_value: int = 0) -> None:
    """Pad every sample's ``gt_instances.masks`` (if any) at the bottom / right to ``shape``
    ``(h, w)``, in place."""
    for sample in data_samples:
        gt = sample.get('gt_instances', None)
        if gt is not None and 'masks' in gt:
            gt.masks = gt.masks.pad(shape, pad_val=pad_value)


@MODELS.register_module()
class DetDataPreprocessor(ImgDataPreprocessor):
    """BGR->RGB, normalise, pad and stack a batch; then optional batch augments (training).

    Order, as in MMDetection: channel swap, ``(x - mean) / std``, then padding at the bottom
    and right up to a multiple of ``pad_size_divisor`` with ``pad_value`` (and, with
    ``pad_mask``, the instance masks to the same batch shape). The padding is
    done *after* normalisation, so ``pad_value=0`` is the mean colour. Boxes are untouched:
    they are pixel coordinates of the unpadded image, which padding at the bottom/right
    keeps valid.

    Each data sample's metainfo gets ``batch_input_shape`` (H, W of the stacked batch) and
    ``pad_shape`` (that image's own H, W rounded up to the divisor).

    LSJ: the official LSJ config pads every image to 1024x1024 in the *pipeline*
    (``Pad(size=(1024, 1024), pad_val=dict(img=(114, 114, 114)))``, raw BGR pixel value 114,
    so the padding is ``(114 - mean) / std`` after normalisation) and lists
    ``BatchFixedSizePad(size=(1024, 1024))`` as a batch augment, which then finds every
    image already at full size and changes nothing. ``pad_value`` here only matters for
    images smaller than the batch, which LSJ never produces. codetr keeps this behaviour.

    Args:
        mean, std: per-channel statistics in the output channel order (RGB when
            ``bgr_to_rgb``), pixel units 0..255.
        pad_size_divisor: pad H and W to multiples of this (32 for Swin / ResNet strides).
        pad_value: value of the padded area, in normalised units.
        bgr_to_rgb, rgb_to_bgr: swap channels before normalising.
        pad_mask: in training, pad each sample's ``gt_instances.masks`` to
            ``batch_input_shape`` (with ``mask_pad_value``), as the images are;
            instance-segmentation configs set it. (Test pipelines load the GT masks at the
            original image size, after ``Resize``; those are left alone.)
        mask_pad_value: value of the padded mask area.
        non_blocking: non-blocking host-to-device copies.
        batch_augments: configs of ``MODELS`` modules called as
            ``inputs, data_samples = aug(inputs, data_samples)`` in training only.
    """

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 pad_size_divisor: int = 1, pad_value: float = 0, bgr_to_rgb: bool = False,
                 rgb_to_bgr: bool = False, pad_mask: bool = False, mask_pad_value: int = 0,
                 non_blocking: bool = False, batch_augments: list[dict] | None = None) -> None:
        super().__init__(mean=mean, std=std, pad_size_divisor=pad_size_divisor,
                         pad_value=pad_value, bgr_to_rgb=bgr_to_rgb, rgb_to_bgr=rgb_to_bgr,
                         non_blocking=non_blocking)
        self.pad_mask = pad_mask
        self.mask_pad_value = mask_pad_value
        self.batch_augments = (nn.ModuleList([MODELS.build(cfg) for cfg in batch_augments])
                               if batch_augments else None)

    def forward(self, data: dict, training: bool = False) -> dict:
        """``data = dict(inputs=list of (3, H_i, W_i) uint8, data_samples=list)`` ->
        ``dict(inputs=(B, 3, H, W) float, data_samples=list)``."""
        pad_shapes = self._pad_shapes(data['inputs'])
        data = super().forward(data=data, training=training)
        inputs, data_samples = data['inputs'], data['data_samples']
        if data_samples is not None:
            batch_input_shape = tuple(inputs.shape[-2:])
            for sample, pad_shape in zip(data_samples, pad_shapes):
                sample.set_metainfo({'batch_input_shape': batch_input_shape,
                                     'pad_shape': pad_shape})
            if self.pad_mask and training:  # test-time GT masks stay in original pixels
                pad_gt_masks(data_samples, batch_input_shape, self.mask_pad_value)
        if training and self.batch_augments is not None:
            for augment in self.batch_augments:
                inputs, data_samples = augment(inputs, data_samples)
        return {'inputs': inputs, 'data_samples': data_samples}

    def _pad_shapes(self, inputs: torch.Tensor | Sequence[torch.Tensor]) -> list[tuple[int, int]]:
        """Each image's ``(H, W)`` rounded up to ``pad_size_divisor``."""
        shapes = [img.shape[-2:] for img in inputs]  # a (B, C, H, W) tensor iterates per image
        d = self.pad_size_divisor
        return [(math.ceil(h / d) * d, math.ceil(w / d) * d) for h, w in shapes]
