"""Targets and losses of the DETR one-to-one branch, shared by every query head.

A query head predicts, per decoder layer, class logits ``(B, Q, C)`` and boxes ``(B, Q, 4)``
(normalised ``cxcywh`` in [0, 1] of ``img_shape``). :class:`DetrCriterion` turns them into
losses in three steps, each usable on its own:

1. targets: :meth:`DetrCriterion.match` (Hungarian matching against the GT),
   :meth:`DetrCriterion.dn_targets` (denoising queries: targets fixed by construction), or
   a :class:`DetrTargets` built by the caller (positive queries of the aux heads);
2. :meth:`DetrCriterion.loss_single`: ``loss_cls``, ``loss_bbox``, ``loss_iou`` of one layer;
3. :meth:`DetrCriterion.loss_layers`: every layer of a decoder stack, named as MMDetection
   (``loss_cls`` for the last layer, ``d{i}.loss_cls`` for the earlier ones, with a prefix
   such as ``'enc_'`` or ``'dn_'`` and an optional suffix).

Normalisation follows MMDetection's ``DETRHead``: box losses divide by the number of
positives averaged over ranks (at least 1); the classification loss by the positives too
(``bg_cls_weight = 0`` for sigmoid losses), averaged over ranks when ``sync_cls_avg_factor``.
With ``QualityFocalLoss`` the class target of a positive is the IoU (detached) of its
predicted box with its GT box.

Every public method takes bfloat16 / float16 predictions too (autocast) and works in float32
with autocast disabled (:func:`~codetr.models.utils.float32_inputs`): matching costs, targets
and losses never run in half precision.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.registry import MODELS, TASK_UTILS
from codetr.structures import bbox_cxcywh_to_xyxy, bbox_overlaps, bbox_xyxy_to_cxcywh

from ..losses import QualityFocalLoss
from ..utils import float32_inputs

LOSS_NAMES = ('cls', 'bbox', 'iou')


@dataclass
class DetrTargets:
    """Per-query targets of one decoder layer (all images padded to the same ``Q``).

    Attributes:
        labels: (B, Q) long class; ``num_classes`` = background.
        label_weights: (B, Q) float weight of each query's classification loss.
        bbox_targets: (B, Q, 4) normalised ``cxcywh`` GT boxes (zeros where unused).
        bbox_weights: (B, Q, 4) float weight of each box loss (1 on positives).
        num_pos: number of positive queries on this rank (a host int, no device sync).
    """

    labels: Tensor
    label_weights: Tensor
    bbox_targets: Tensor
    bbox_weights: Tensor
    num_pos: int


def mean_over_ranks(value: float, like: Tensor) -> float:
    """``value`` averaged over the distributed ranks (itself when not distributed)."""
    if get_world_size() == 1:
        return float(value)
    tensor = like.new_tensor(float(value))
    all_reduce(tensor, op='mean')
    return float(tensor.item())


def image_size_factors(img_metas: Sequence[dict[str, Any]], like: Tensor) -> Tensor:
    """(B, 1, 4) ``(w, h, w, h)`` of each image's ``img_shape``, the box normaliser."""
    sizes = []
    for meta in img_metas:
        if 'img_shape' not in meta:
            raise KeyError('the DETR criterion needs metainfo img_shape (h, w) in every data '
                           'sample; PackDetInputs sets it')
        img_h, img_w = meta['img_shape'][:2]
        sizes.append([img_w, img_h, img_w, img_h])
    return like.new_tensor(sizes)[:, None]


class DetrCriterion(nn.Module):
    """Hungarian matching and the one-to-one losses of a DETR head.

    Holds no parameters: it is a module only so that its losses show in the head's repr.

    Args:
        num_classes: number of object classes (background label = ``num_classes``).
        loss_cls: classification loss config (``QualityFocalLoss``, ``FocalLoss``...) with
            ``use_sigmoid=True``.
        loss_bbox: L1 loss config, on normalised ``cxcywh``.
        loss_iou: IoU-type loss config, on pixel ``xyxy`` boxes of ``img_shape``.
        assigner: ``HungarianAssigner`` config (or a built assigner); needed for :meth:`match`.
        sync_cls_avg_factor: average the classification normaliser over ranks (DINO and
            Co-DETR configs: True).
    """

    def __init__(self, num_classes: int, loss_cls: dict, loss_bbox: dict, loss_iou: dict,
                 assigner: dict | Any | None = None, sync_cls_avg_factor: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.loss_iou = MODELS.build(loss_iou)
        if not getattr(self.loss_cls, 'use_sigmoid', False):
            raise ValueError('DetrCriterion supports sigmoid classification losses only '
                             "(QualityFocalLoss, FocalLoss): set loss_cls.use_sigmoid=True")
        self.assigner = TASK_UTILS.build(assigner) if isinstance(assigner, dict) else assigner
        self.sync_cls_avg_factor = sync_cls_avg_factor

    # ------------------------------------------------------------------ targets
    @float32_inputs
    def match(self, cls_scores: Tensor, bbox_preds: Tensor,
              gt_instances_list: Sequence[InstanceData],
              img_metas: Sequence[dict[str, Any]]) -> DetrTargets:
        """Targets by Hungarian matching of one layer's predictions to the GT.

        Args:
            cls_scores: (B, Q, C) logits.
            bbox_preds: (B, Q, 4) normalised ``cxcywh``.
            gt_instances_list: B ``InstanceData`` with ``bboxes (G, 4)`` pixel xyxy of
                ``img_shape`` and ``labels (G,)``.
            img_metas: B metainfo dicts with ``img_shape``.
        """
        if self.assigner is None:
            raise ValueError('DetrCriterion.match needs an assigner; give the head '
                             "train_cfg=dict(assigner=dict(type='HungarianAssigner'))")
        preds = [InstanceData(scores=s, bboxes=b) for s, b in zip(cls_scores, bbox_preds)]
        results = self.assigner.assign_batch(preds, list(gt_instances_list), list(img_metas))
        gt_inds = torch.stack([r.gt_inds for r in results]).to(cls_scores.device)  # [B, Q]
        # Hungarian matching assigns min(Q, G) queries: known on the host without a sync.
        num_pos = sum(min(cls_scores.size(1), len(g)) for g in gt_instances_list)
        return self._targets_from_indices(gt_inds - 1, gt_inds > 0, gt_instances_list,
                                          img_metas, bbox_preds, num_pos)

    @float32_inputs
    def dn_targets(self, gt_instances_list: Sequence[InstanceData],
                   img_metas: Sequence[dict[str, Any]], dn_meta: dict[str, Any],
                   like: Tensor) -> DetrTargets:
        """Targets of the denoising queries of :class:`CdnQueryGenerator`.

        Positive queries reconstruct their GT (label and box); negative and padding queries
        are background with classification weight 1, as MMDetection's DINO head.

        Args:
            gt_instances_list, img_metas: as :meth:`match`.
            dn_meta: the generator's ``gt_indices (B, num_dn)`` (-1 = padding) and
                ``positive_mask (B, num_dn)``.
            like: any tensor of the predictions (dtype and device of the targets).
        """
        gt_indices = dn_meta['gt_indices'].to(like.device)
        positive = dn_meta['positive_mask'].to(like.device) & (gt_indices >= 0)
        num_pos = dn_meta['num_denoising_groups'] * sum(len(g) for g in gt_instances_list)
        return self._targets_from_indices(gt_indices, positive, gt_instances_list, img_metas,
                                          like, num_pos)

    def _targets_from_indices(self, gt_indices: Tensor, positive: Tensor,
                              gt_instances_list: Sequence[InstanceData],
                              img_metas: Sequence[dict[str, Any]], like: Tensor,
                              num_pos: int) -> DetrTargets:
        """Targets from ``gt_indices (B, Q)`` (0-based per image) where ``positive (B, Q)``."""
        batch, num_queries = gt_indices.shape
        labels = gt_indices.new_full((batch, num_queries), self.num_classes)
        bbox_targets = like.new_zeros(batch, num_queries, 4)
        factors = image_size_factors(img_metas, like)  # [B, 1, 4]
        for b, gt in enumerate(gt_instances_list):
            rows = positive[b]
            idx = gt_indices[b][rows]
            labels[b][rows] = gt.labels.to(labels.device).long()[idx]
            gt_boxes = gt.bboxes.to(like).reshape(-1, 4)[idx] / factors[b]
            bbox_targets[b][rows] = bbox_xyxy_to_cxcywh(gt_boxes)
        bbox_weights = positive[..., None].to(like.dtype).expand(-1, -1, 4).contiguous()
        return DetrTargets(labels, like.new_ones(batch, num_queries), bbox_targets,
                           bbox_weights, int(num_pos))

    # ------------------------------------------------------------------- losses
    @float32_inputs
    def loss_single(self, cls_scores: Tensor, bbox_preds: Tensor, targets: DetrTargets,
                    img_metas: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        """Losses of one layer against given targets.

        Args:
            cls_scores: (B, Q, C) logits.
            bbox_preds: (B, Q, 4) normalised ``cxcywh``.
            targets: :class:`DetrTargets` of the same ``(B, Q)``.
            img_metas: B metainfo dicts with ``img_shape``.

        Returns:
            ``dict(cls=..., bbox=..., iou=...)`` scalars (zero but attached to the graph when
            there are no queries).
        """
        if cls_scores.numel() == 0:  # e.g. no denoising queries in a batch without GT
            zero = cls_scores.sum() * 0 + bbox_preds.sum() * 0
            return dict(cls=zero, bbox=zero, iou=zero)
        num_classes = cls_scores.size(-1)
        flat_cls = cls_scores.reshape(-1, num_classes)
        labels = targets.labels.reshape(-1)
        label_weights = targets.label_weights.reshape(-1)
        flat_boxes = bbox_preds.reshape(-1, 4)
        flat_targets = targets.bbox_targets.reshape(-1, 4)
        flat_weights = targets.bbox_weights.reshape(-1, 4)

        cls_avg_factor = float(targets.num_pos)
        if self.sync_cls_avg_factor:
            cls_avg_factor = mean_over_ranks(cls_avg_factor, cls_scores)
        cls_avg_factor = max(cls_avg_factor, 1.0)
        if isinstance(self.loss_cls, QualityFocalLoss):
            quality = self._iou_quality(flat_boxes, flat_targets, labels, num_classes)
            loss_cls = self.loss_cls(flat_cls, (labels, quality), label_weights,
                                     avg_factor=cls_avg_factor)
        else:
            loss_cls = self.loss_cls(flat_cls, labels, label_weights, avg_factor=cls_avg_factor)

        num_pos = max(mean_over_ranks(targets.num_pos, cls_scores), 1.0)
        factors = image_size_factors(img_metas, bbox_preds).expand_as(bbox_preds).reshape(-1, 4)
        loss_iou = self.loss_iou(bbox_cxcywh_to_xyxy(flat_boxes) * factors,
                                 bbox_cxcywh_to_xyxy(flat_targets) * factors, flat_weights,
                                 avg_factor=num_pos)
        loss_bbox = self.loss_bbox(flat_boxes, flat_targets, flat_weights, avg_factor=num_pos)
        return dict(cls=loss_cls, bbox=loss_bbox, iou=loss_iou)

    @staticmethod
    def _iou_quality(boxes: Tensor, targets: Tensor, labels: Tensor,
                     num_classes: int) -> Tensor:
        """(N,) IoU of each positive's detached box with its target, 0 for background."""
        iou = bbox_overlaps(bbox_cxcywh_to_xyxy(boxes.detach()), bbox_cxcywh_to_xyxy(targets),
                            is_aligned=True)
        positive = (labels >= 0) & (labels < num_classes)
        return torch.where(positive, iou, torch.zeros_like(iou))

    @float32_inputs
    def loss_layers(self, all_cls_scores: Tensor, all_bbox_preds: Tensor,
                    img_metas: Sequence[dict[str, Any]],
                    gt_instances_list: Sequence[InstanceData] | None = None,
                    targets: DetrTargets | None = None, prefix: str = '',
                    suffix: str = '') -> dict[str, Tensor]:
        """Losses of a stack of layers, matched per layer or against fixed targets.

        Args:
            all_cls_scores: (N, B, Q, C) logits of N layers.
            all_bbox_preds: (N, B, Q, 4) normalised ``cxcywh``.
            img_metas: B metainfo dicts with ``img_shape``.
            gt_instances_list: GT per image; each layer is matched on its own (one-to-one).
            targets: fixed targets for every layer instead (denoising / positive queries).
            prefix, suffix: around the loss name: ``f'{prefix}loss_cls{suffix}'`` for the last
                layer and ``f'd{i}.{prefix}loss_cls{suffix}'`` for layer ``i < N - 1``.

        Returns:
            ``3 * N`` scalar losses.
        """
        if (targets is None) == (gt_instances_list is None):
            raise ValueError('loss_layers needs exactly one of gt_instances_list (matching) '
                             'and targets (fixed)')
        num_layers = all_cls_scores.size(0)
        losses = {}
        for layer in range(num_layers):
            cls_scores, bbox_preds = all_cls_scores[layer], all_bbox_preds[layer]
            layer_targets = targets if targets is not None else self.match(
                cls_scores, bbox_preds, gt_instances_list, img_metas)
            layer_losses = self.loss_single(cls_scores, bbox_preds, layer_targets, img_metas)
            layer_key = '' if layer == num_layers - 1 else f'd{layer}.'
            for name in LOSS_NAMES:
                losses[f'{layer_key}{prefix}loss_{name}{suffix}'] = layer_losses[name]
        return losses
