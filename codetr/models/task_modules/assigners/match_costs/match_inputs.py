"""The inputs of match costs for a whole batch, laid out for batched tensor ops.

Predictions of the B images are stacked, ``(B, Q, ...)``; the GT boxes of all images are
concatenated, ``(G, ...)`` with ``G = sum(num_gts)``. A cost computed on this layout is a
``(B, Q, G)`` tensor; image ``b`` needs only its own column block ``gt_slices[b]``. Computing
the off-diagonal blocks too costs little next to one kernel launch per image.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from mmengine.structures import InstanceData
from torch import Tensor


@dataclass
class MatchInputs:
    """Predictions of B images and their GT, ready for a ``(B, Q, G)`` cost.

    Attributes:
        pred_scores: ``(B, Q, C)`` class logits, or ``None``.
        pred_bboxes: ``(B, Q, 4)`` cxcywh boxes normalised by ``img_shape``, or ``None``.
        pred_masks: ``(B, Q, H * W)`` mask logits, or ``None``.
        gt_labels: ``(G,)`` long class indices.
        gt_bboxes: ``(G, 4)`` xyxy boxes in pixels of the network input, or ``None``.
        gt_masks: ``(G, H * W)`` binary masks, or ``None`` (also when the GT masks are not
            tensors but the pipeline's ``BitmapMasks`` / ``PolygonMasks``).
        img_factors: ``(B, 4)`` ``(w, h, w, h)`` of each image's ``img_shape``, or ``None``.
        gt_factors: ``(G, 4)`` the factor of each GT box's image, or ``None``.
        num_gts: GT count of each image.
    """

    pred_scores: Tensor | None
    pred_bboxes: Tensor | None
    pred_masks: Tensor | None
    gt_labels: Tensor
    gt_bboxes: Tensor | None
    gt_masks: Tensor | None
    img_factors: Tensor | None
    gt_factors: Tensor | None
    num_gts: list[int]

    @classmethod
    def from_lists(cls, pred_instances_list: Sequence[InstanceData],
                   gt_instances_list: Sequence[InstanceData],
                   img_metas: Sequence[dict[str, Any] | None]) -> MatchInputs:
        """Stack per-image predictions and concatenate per-image GT.

        Every image must have the same number of predictions ``Q``. Fields missing from any
        image are ``None`` (a cost that needs them raises).
        """
        if not len(pred_instances_list) == len(gt_instances_list) == len(img_metas):
            raise ValueError(f'got {len(pred_instances_list)} prediction sets, '
                             f'{len(gt_instances_list)} GT sets and {len(img_metas)} img_metas; '
                             'give one of each per image')
        num_preds = {len(p) for p in pred_instances_list}
        if len(num_preds) > 1:
            raise ValueError(f'batched matching needs the same number of predictions per image, '
                             f'got {sorted(num_preds)}')
        num_gts = [len(g) for g in gt_instances_list]
        img_factors = _img_factors(img_metas, gt_instances_list[0].labels)
        gt_factors = None
        if img_factors is not None:
            counts = torch.tensor(num_gts, device=img_factors.device)
            gt_factors = img_factors.repeat_interleave(counts, dim=0)
        return cls(
            pred_scores=_stack(pred_instances_list, 'scores'),
            pred_bboxes=_stack(pred_instances_list, 'bboxes'),
            pred_masks=_stack(pred_instances_list, 'masks', flatten=True),
            gt_labels=torch.cat([g.labels for g in gt_instances_list]),
            gt_bboxes=_cat(gt_instances_list, 'bboxes'),
            gt_masks=_cat(gt_instances_list, 'masks', flatten=True),
            img_factors=img_factors, gt_factors=gt_factors, num_gts=num_gts)

    def require(self, name: str, cost: str) -> Tensor:
        """The field ``name``, or an error telling which cost needed it."""
        value = getattr(self, name)
        if value is None:
            hint = ("img_meta['img_shape']" if 'factors' in name
                    else f"the instances' `{name.split('_', 1)[1]}`")
            raise ValueError(f'{cost} needs {hint}, which was not given')
        return value


def _stack(instances: Sequence[InstanceData], key: str, flatten: bool = False) -> Tensor | None:
    if not all(key in inst for inst in instances):
        return None
    stacked = torch.stack([getattr(inst, key) for inst in instances])
    return stacked.flatten(2) if flatten else stacked


def _cat(instances: Sequence[InstanceData], key: str, flatten: bool = False) -> Tensor | None:
    if not all(key in inst for inst in instances):
        return None
    tensors = [getattr(inst, key) for inst in instances]
    if not all(isinstance(t, Tensor) for t in tensors):
        # GT masks of an instance-segmentation pipeline (BitmapMasks / PolygonMasks) serve the
        # mask head; flattening them for every matching would cost time and memory for nothing.
        return None
    if flatten:
        tensors = [t.flatten(1) for t in tensors]
    return torch.cat(tensors)


def _img_factors(img_metas: Sequence[dict[str, Any] | None], like: Tensor) -> Tensor | None:
    """``(B, 4)`` float ``(w, h, w, h)`` of each ``img_shape = (h, w)``, or ``None``."""
    if any(meta is None or 'img_shape' not in meta for meta in img_metas):
        return None
    sizes = [(meta['img_shape'][1], meta['img_shape'][0]) * 2 for meta in img_metas]
    return torch.tensor(sizes, dtype=torch.float32, device=like.device)
