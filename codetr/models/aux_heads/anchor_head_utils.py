"""Pieces shared by the anchor-based one-stage aux heads (ATSS, RetinaNet, PAA, GFL).

Anchor order everywhere is MMDetection's: levels one after the other, inside a level
row-major over locations, and the ``A`` base anchors of a location next to each other. A
head's ``(B, A * K, H, W)`` output map flattened by :func:`flatten_levels` lines up with it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.structures import DetDataSample

from ..co_modules.positives import AuxPositives, select_positives
from ..layers.nms import batched_nms
from ..necks import ConvNormAct

# Prior probability of the foreground class at initialisation (RetinaNet, Lin et al. 2017;
# MMDetection's ``bias_prob=0.01``): keeps the focal loss of the many negatives small at start.
PRIOR_PROB = 0.01
# Std of the normal init of every head conv (MMDetection's ATSS / RetinaNet ``init_cfg``).
CONV_INIT_STD = 0.01


def build_tower(in_channels: int, feat_channels: int, stacked_convs: int,
                norm_cfg: dict | None) -> nn.ModuleList:
    """``stacked_convs`` 3x3 conv -> norm -> ReLU blocks (``i.conv``, ``i.gn`` as MMDetection)."""
    return nn.ModuleList(
        ConvNormAct(in_channels if i == 0 else feat_channels, feat_channels, 3,
                    norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'))
        for i in range(stacked_convs))


def init_dense_head(head: nn.Module, cls_layer: nn.Conv2d) -> None:
    """Normal(0, 0.01) convs with zero bias, unit norms; class bias at ``PRIOR_PROB``."""
    for module in head.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=CONV_INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.GroupNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.constant_(cls_layer.bias, -math.log((1 - PRIOR_PROB) / PRIOR_PROB))


def flatten_levels(maps: list[Tensor], channels: int) -> Tensor:
    """Per-level ``(B, A * channels, H, W)`` maps -> ``(B, sum_l H_l * W_l * A, channels)``."""
    flat = [m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, channels) for m in maps]
    return torch.cat(flat, dim=1)


def anchor_feats(pyramid: list[Tensor], num_base_priors: list[int]) -> Tensor:
    """The pyramid feature at each anchor's location: ``(B, N_anchors, C)``.

    The ``A`` anchors of one location share its feature (for ATSS, ``A = 1``, this is the
    official flattening of the pyramid).
    """
    per_level = []
    for feat, num in zip(pyramid, num_base_priors):
        b, c = feat.shape[:2]
        flat = feat.reshape(b, c, -1).transpose(1, 2)  # (B, H * W, C)
        per_level.append(flat.repeat_interleave(num, dim=1) if num > 1 else flat)
    return torch.cat(per_level, dim=1)


def check_levels(pyramid: list[Tensor], num_levels: int, head: str) -> None:
    """Raise when the pyramid has a different number of levels than the anchor strides."""
    if len(pyramid) != num_levels:
        raise ValueError(f'{head} got {len(pyramid)} pyramid levels but its anchor_generator '
                         f'has {num_levels} strides; give one stride per level (L encoder '
                         'levels + the extra one)')


def check_sampler(train_cfg: dict, head: str) -> None:
    """One-stage aux heads train on every anchor (MMDetection's PseudoSampler) only."""
    sampler = train_cfg.get('sampler')
    if sampler is not None and sampler.get('type') != 'PseudoSampler':
        raise ValueError(f"{head} trains on every anchor; train_cfg.sampler must be "
                         f"dict(type='PseudoSampler') or absent, got {sampler!r}")


def input_shape(sample: DetDataSample, key: str) -> tuple[int, int]:
    """``(h, w)`` of metainfo ``key`` (``img_shape`` / ``pad_shape``) with a clear error."""
    shape = sample.metainfo.get(key)
    if shape is None and key == 'pad_shape':
        shape = sample.metainfo.get('batch_input_shape')
    if shape is None:
        raise KeyError(f'aux head needs metainfo {key!r} (h, w); DetDataPreprocessor sets '
                       'pad_shape and the Resize / Pack transforms set img_shape')
    return int(shape[0]), int(shape[1])


def image_anchors(prior_generator: Any, featmap_sizes: list[tuple[int, int]],
                  data_samples: list[DetDataSample], allowed_border: float,
                  like: Tensor) -> tuple[list[Tensor], Tensor, list[Tensor]]:
    """Anchors of the batch and which of them each image may assign.

    Returns:
        per-level anchors ``(H_l * W_l * A_l, 4)`` xyxy pixels (the same for every image),
        all of them concatenated ``(N, 4)``, and per image the ``(N,)`` bool flags of the
        anchors that are valid (inside ``pad_shape``) and, when ``allowed_border >= 0``,
        inside ``img_shape`` grown by that border (MMDetection's ``anchor_inside_flags``).
    """
    level_anchors = prior_generator.grid_priors(featmap_sizes, dtype=like.dtype,
                                                device=like.device)
    anchors = torch.cat(level_anchors)
    inside = []
    for sample in data_samples:
        valid = prior_generator.valid_flags(featmap_sizes, input_shape(sample, 'pad_shape'),
                                            device=like.device)
        flags = torch.cat(valid)
        if allowed_border >= 0:
            h, w = input_shape(sample, 'img_shape')
            flags = flags & (anchors[:, 0] >= -allowed_border) & (
                anchors[:, 1] >= -allowed_border) & (anchors[:, 2] < w + allowed_border) & (
                anchors[:, 3] < h + allowed_border)
        inside.append(flags)
    return level_anchors, anchors, inside


@dataclass
class AnchorTargets:
    """One image's targets over all ``N`` anchors.

    Attributes:
        labels: ``(N,)`` long class; ``num_classes`` = background (also for anchors outside).
        label_weights: ``(N,)`` float; 0 for ignored and outside anchors.
        gt_boxes: ``(N, 4)`` xyxy pixels, the assigned GT box of positives (0 elsewhere).
        num_pos: number of positive anchors.
        gt_inds: ``(N,)`` long 0-based index of the assigned GT box of positives, -1 elsewhere
            (PAA groups its candidates per GT box by it).
    """

    labels: Tensor
    label_weights: Tensor
    gt_boxes: Tensor
    num_pos: int
    gt_inds: Tensor | None = None


def anchor_targets(anchors: Tensor, inside: Tensor, sample: DetDataSample, num_classes: int,
                   pos_weight: float, assign: Callable[..., Any]) -> AnchorTargets:
    """Assign the anchors of one image and turn the result into per-anchor targets.

    Args:
        anchors: ``(N, 4)`` xyxy pixels.
        inside: ``(N,)`` bool, the anchors that take part in the assignment.
        sample: the image's data sample (``gt_instances``, optional ``ignored_instances``).
        num_classes: the background label.
        pos_weight: classification weight of positives; ``<= 0`` means 1.
        assign: ``assign(pred_instances, gt_instances, ignored_instances_or_None)`` returning
            an ``AssignResult`` (1-based ``gt_inds``: 0 negative, -1 ignored).
    """
    gt = sample.gt_instances
    ignored = sample.ignored_instances if 'ignored_instances' in sample else None
    if ignored is not None and len(ignored) == 0:
        ignored = None
    result = assign(InstanceData(priors=anchors[inside]), gt, ignored)
    gt_inds = anchors.new_full((len(anchors),), -1, dtype=torch.long)
    gt_inds[inside] = result.gt_inds
    pos = gt_inds > 0
    labels = gt_inds.new_full((len(anchors),), num_classes)
    gt_boxes = torch.zeros_like(anchors)
    if pos.any():
        labels[pos] = gt.labels[gt_inds[pos] - 1].long()
        gt_boxes[pos] = gt.bboxes[gt_inds[pos] - 1].to(anchors)
    label_weights = (gt_inds == 0).to(anchors.dtype)
    label_weights[pos] = pos_weight if pos_weight > 0 else 1.0
    return AnchorTargets(labels, label_weights, gt_boxes, int(pos.sum()),
                         torch.where(pos, gt_inds - 1, torch.full_like(gt_inds, -1)))


def dense_positives(anchors: Tensor, targets: list[AnchorTargets], pyramid: list[Tensor],
                    num_base_priors: list[int], num_classes: int,
                    max_pos_coords: int) -> AuxPositives:
    """Every anchor with its label and GT box, plus its pyramid feature, through the
    official selection rule (:func:`select_positives`)."""
    feats = anchor_feats(pyramid, num_base_priors)
    return select_positives([anchors] * len(targets), [t.labels for t in targets],
                            [t.gt_boxes for t in targets], num_classes,
                            feats=list(feats.unbind(0)), max_pos_coords=max_pos_coords)


def top_scores(scores: Tensor, score_thr: float, nms_pre: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``nms_pre`` best (anchor, class) pairs scoring above ``score_thr``.

    Args:
        scores: ``(N, C)`` probabilities of one level.

    Returns:
        their scores ``(K,)``, anchor indices ``(K,)`` and labels ``(K,)``.
    """
    above = scores > score_thr
    candidates = scores[above]
    pairs = above.nonzero()  # (K, 2) [anchor, class]
    if nms_pre > 0:
        candidates, order = candidates.sort(descending=True)
        candidates, pairs = candidates[:nms_pre], pairs[order[:nms_pre]]
    return candidates, pairs[:, 0], pairs[:, 1]


def rescale_boxes(boxes: Tensor, img_meta: dict) -> Tensor:
    """``(K, 4)`` xyxy network-input pixels -> original image pixels (``/ scale_factor``)."""
    factor = img_meta.get('scale_factor')
    if factor is None:
        raise KeyError('predict(rescale=True) needs metainfo scale_factor (w, h), set by '
                       'the Resize transform; add it or call with rescale=False')
    sx, sy = (factor, factor) if isinstance(factor, (int, float)) else factor[:2]
    return boxes / boxes.new_tensor([sx, sy, sx, sy])


def postprocess_dense(boxes: Tensor, scores: Tensor, labels: Tensor, img_meta: dict,
                      test_cfg: dict, rescale: bool) -> InstanceData:
    """Rescale, size filter, per-class NMS and top ``max_per_img`` of one image.

    Args:
        boxes: ``(K, 4)`` xyxy network-input pixels.
        scores: ``(K,)`` final scores (already times any score factor).
        labels: ``(K,)`` long.
        img_meta: ``scale_factor (w, h)`` needed when ``rescale``.
        test_cfg: ``min_bbox_size``, ``nms`` (None: no NMS), ``max_per_img``.
        rescale: divide boxes by ``scale_factor`` (original image pixels).
    """
    if rescale:
        boxes = rescale_boxes(boxes, img_meta)
    min_size = test_cfg.get('min_bbox_size', -1)
    if min_size >= 0:
        keep = ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if test_cfg.get('nms') is not None and boxes.numel() > 0:
        dets, keep = batched_nms(boxes, scores, labels, test_cfg['nms'])
        boxes, scores, labels = dets[:, :4], dets[:, 4], labels[keep]
    else:
        scores, order = scores.sort(descending=True)
        boxes, labels = boxes[order], labels[order]
    max_per_img = test_cfg.get('max_per_img', 100)
    return InstanceData(bboxes=boxes[:max_per_img], scores=scores[:max_per_img],
                        labels=labels[:max_per_img])
