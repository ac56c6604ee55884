"""Box regression targets as normalised centre shifts and log size ratios (R-CNN deltas)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from codetr.registry import TASK_UTILS

# MMDetection's default wh_ratio_clip: a predicted box is at most 1000 / 16 = 62.5 times
# larger or smaller than its prior in each side.
DEFAULT_WH_RATIO_CLIP = 16 / 1000

MaxShape = Sequence[int] | Sequence[Sequence[int]] | None


@TASK_UTILS.register_module()
class DeltaXYWHBBoxCoder:
    """Encode xyxy boxes as ``(dx, dy, dw, dh)`` deltas from priors, and decode them back.

    ``dx = (gx - px) / pw``, ``dw = log(gw / pw)`` (same for y, h), then
    ``(delta - target_means) / target_stds``.

    Args:
        target_means: subtracted from the deltas when encoding.
        target_stds: the deltas are divided by these when encoding.
        clip_border: clamp decoded boxes to ``max_shape`` when it is given.
        add_ctr_clamp: clamp the decoded centre shift to ``+-ctr_clamp`` pixels and only bound
            ``dw, dh`` from above (used by YOLOF-style heads).
        ctr_clamp: the centre shift bound in pixels.
    """

    encode_size = 4

    def __init__(self, target_means: Sequence[float] = (0., 0., 0., 0.),
                 target_stds: Sequence[float] = (1., 1., 1., 1.), clip_border: bool = True,
                 add_ctr_clamp: bool = False, ctr_clamp: int = 32) -> None:
        if len(target_means) != 4 or len(target_stds) != 4:
            raise ValueError('target_means and target_stds need 4 values each (x, y, w, h), '
                             f'got {list(target_means)} and {list(target_stds)}')
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.clip_border = clip_border
        self.add_ctr_clamp = add_ctr_clamp
        self.ctr_clamp = ctr_clamp

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Deltas that move ``bboxes`` onto ``gt_bboxes``.

        Args:
            bboxes: ``(..., 4)`` xyxy priors (pixels), non-degenerate.
            gt_bboxes: ``(..., 4)`` xyxy targets of the same shape.

        Returns:
            ``(..., 4)`` normalised deltas.
        """
        if bboxes.shape[:-1] != gt_bboxes.shape[:-1]:
            raise ValueError(f'need one GT per prior, got {tuple(bboxes.shape)} priors and '
                             f'{tuple(gt_bboxes.shape)} GT boxes')
        bboxes, gt_bboxes = bboxes[..., :4].float(), gt_bboxes[..., :4].float()
        pxy, pwh = _centre_size(bboxes)
        gxy, gwh = _centre_size(gt_bboxes)
        deltas = torch.cat([(gxy - pxy) / pwh, torch.log(gwh / pwh)], dim=-1)
        return (deltas - deltas.new_tensor(self.means)) / deltas.new_tensor(self.stds)

    def decode(self, bboxes: Tensor, pred_bboxes: Tensor, max_shape: MaxShape = None,
               wh_ratio_clip: float = DEFAULT_WH_RATIO_CLIP) -> Tensor:
        """Apply deltas to priors.

        Args:
            bboxes: ``(..., N, 4)`` xyxy priors in pixels.
            pred_bboxes: ``(..., N, 4 * k)`` deltas (``k`` boxes per prior, e.g. per class).
            max_shape: ``(h, w)`` to clamp to, or one ``(h, w)`` per image when the leading
                dimension is the batch.
            wh_ratio_clip: ``|dw|, |dh|`` are clamped to ``|log(wh_ratio_clip)|``.

        Returns:
            ``(..., N, 4 * k)`` xyxy boxes in pixels.
        """
        if pred_bboxes.shape[-1] % 4 != 0:
            raise ValueError(f'deltas must have 4 * k values each, got {pred_bboxes.shape[-1]}')
        shape = pred_bboxes.shape
        deltas = pred_bboxes.reshape(*shape[:-1], shape[-1] // 4, 4)  # (..., N, k, 4)
        deltas = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        pxy, pwh = _centre_size(bboxes[..., None, :4].to(deltas.dtype))  # (..., N, 1, 2)
        shift = pwh * deltas[..., :2]
        dwh = deltas[..., 2:]
        max_ratio = abs(math.log(wh_ratio_clip))
        if self.add_ctr_clamp:
            shift = shift.clamp(min=-self.ctr_clamp, max=self.ctr_clamp)
            dwh = dwh.clamp(max=max_ratio)
        else:
            dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
        gxy = pxy + shift
        half = 0.5 * pwh * dwh.exp()
        boxes = torch.cat([gxy - half, gxy + half], dim=-1)
        if self.clip_border and max_shape is not None:
            boxes = clamp_to_shape(boxes, max_shape)
        return boxes.reshape(shape)


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """``(..., 4)`` xyxy -> centres ``(..., 2)`` and sizes ``(..., 2)``."""
    return (boxes[..., :2] + boxes[..., 2:]) * 0.5, boxes[..., 2:] - boxes[..., :2]


def clamp_to_shape(boxes: Tensor, max_shape: MaxShape) -> Tensor:
    """Clamp ``(..., 4)`` xyxy boxes to ``[0, w] x [0, h]``.

    ``max_shape`` is one ``(h, w)``, or one per entry of the leading (batch) dimension; an
    ``(h, w, c)`` image shape is accepted too.
    """
    limits = boxes.new_tensor(max_shape)[..., :2]  # (2,) or (B, 2); a channel entry dropped
    if limits.dim() == 2:
        limits = limits.reshape(len(limits), *([1] * (boxes.dim() - 2)), 2)
    whwh = torch.cat([limits.flip(-1), limits.flip(-1)], dim=-1)  # (w, h, w, h)
    return torch.minimum(boxes.clamp(min=0), whwh)
