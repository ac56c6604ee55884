"""Batch-level augments run by ``DetDataPreprocessor`` in training."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from codetr.registry import MODELS
from codetr.structures import SampleList

from .data_preprocessor import pad_gt_masks


@MODELS.register_module()
class BatchFixedSizePad(nn.Module):
    """Pad a normalised batch at the bottom/right to exactly ``size = (h, w)`` (LSJ: 1024).

    A batch already at least that large in both dimensions is returned unchanged. When it
    pads, it sets every sample's ``batch_input_shape`` and ``pad_shape`` to the padded
    ``(H, W)`` (``size`` unless the batch was larger in one dimension).

    Args:
        size: target ``(h, w)`` in pixels.
        img_pad_value: value of the padded area, in normalised units (the batch has been
            normalised by the time this runs).
        pad_mask: also pad each sample's ``gt_instances.masks`` to the padded size.
        mask_pad_value: value of the padded mask area.
    """

    def __init__(self, size: tuple[int, int], img_pad_value: float = 0,
                 pad_mask: bool = False, mask_pad_value: int = 0) -> None:
        super().__init__()
        self.size = tuple(size)
        self.img_pad_value = img_pad_value
        self.pad_mask = pad_mask
        self.mask_pad_value = mask_pad_value

    def forward(self, inputs: torch.Tensor, data_samples: SampleList | None = None
                ) -> tuple[torch.Tensor, SampleList | None]:
        """``inputs (B, C, H, W)`` -> ``(B, C, max(H, h), max(W, w))`` and the samples."""
        src_h, src_w = inputs.shape[-2:]
        dst_h, dst_w = self.size
        if src_h >= dst_h and src_w >= dst_w:
            return inputs, data_samples
        inputs = F.pad(inputs, (0, max(0, dst_w - src_w), 0, max(0, dst_h - src_h)),
                       value=self.img_pad_value)
        out_shape = tuple(inputs.shape[-2:])
        for sample in data_samples or []:
            sample.set_metainfo({'batch_input_shape': out_shape, 'pad_shape': out_shape})
        if self.pad_mask and data_samples:
            pad_gt_masks(data_samples, out_shape, self.mask_pad_value)
        return inputs, data_samples

    def extra_repr(self) -> str:
        return f'size={self.size}, img_pad_value={self.img_pad_value}'
