"""Region proposal network of the Faster R-CNN aux head (MMDetection's ``RPNHead`` behaviour).

One shared 3x3 conv + ReLU over every pyramid level, then 1x1 convs giving one objectness
logit and four ``DeltaXYWHBBoxCoder`` deltas per anchor. The RPN is class-agnostic: every
GT box is one "object" class (label 0) and background is label 1, whatever the GT classes.
"""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.models.layers.nms import batched_nms
from codetr.models.utils import at_least_float32, float32_inputs
from codetr.registry import MODELS, TASK_UTILS

# MMDetection's RPNHead initialisation: Normal(std=0.01) on every conv, zero bias.
RPN_INIT_STD = 0.01
# Label of every anchor matched to a GT box (class-agnostic RPN); background is 1.
OBJECT_LABEL = 0


class RPNHead(nn.Module):
    """Objectness and box deltas for every anchor of every pyramid level.

    Args:
        in_channels: channels of the pyramid levels.
        feat_channels: channels of the shared 3x3 conv.
        anchor_generator: ``TASK_UTILS`` config of the anchor generator; one stride per level.
        bbox_coder: ``TASK_UTILS`` config of the anchor -> box delta coder.
        loss_cls: ``MODELS`` config of the objectness loss; must be sigmoid-based.
        loss_bbox: ``MODELS`` config of the delta regression loss.
    """

    def __init__(self, in_channels: int, feat_channels: int, anchor_generator: dict,
                 bbox_coder: dict, loss_cls: dict, loss_bbox: dict) -> None:
        super().__init__()
        if not loss_cls.get('use_sigmoid', False):
            raise ValueError('rpn.loss_cls must be a sigmoid loss (e.g. CrossEntropyLoss with '
                             'use_sigmoid=True): the RPN predicts one objectness logit per anchor')
        self.prior_generator = TASK_UTILS.build(anchor_generator)
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        num_anchors = self.prior_generator.num_base_priors[0]
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=RPN_INIT_STD)
            nn.init.zeros_(conv.bias)

    @property
    def num_levels(self) -> int:
        return len(self.prior_generator.strides)

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``(B, A, H, W)`` objectness logits and ``(B, 4A, H, W)`` deltas."""
        if len(feats) != self.num_levels:
            raise ValueError(f'the RPN has {self.num_levels} anchor strides '
                             f'{self.prior_generator.strides} but got {len(feats)} pyramid '
                             'levels; give rpn.anchor_generator.strides one stride per level')
        cls_scores, bbox_preds = [], []
        for feat in feats:
            hidden = torch.relu(self.rpn_conv(feat))
            cls_scores.append(self.rpn_cls(hidden))
            bbox_preds.append(self.rpn_reg(hidden))
        return cls_scores, bbox_preds

    def anchors(self, feats: list[Tensor]) -> list[Tensor]:
        """Per level ``(H * W * A, 4)`` xyxy anchors in input pixels, location-major; float32
        at least, also when the features are autocast's bfloat16."""
        sizes = [tuple(f.shape[-2:]) for f in feats]
        return self.prior_generator.grid_priors(sizes, dtype=at_least_float32(feats[0].dtype),
                                                device=feats[0].device)

    def valid_flags(self, feats: list[Tensor], pad_shape: tuple[int, int] | None) -> Tensor | None:
        """``(total anchors,)`` bool: anchors whose grid cell starts inside ``pad_shape``
        (all of them when the pyramid was computed from that padded input); None when
        ``pad_shape`` is unknown."""
        if pad_shape is None:
            return None
        sizes = [tuple(f.shape[-2:]) for f in feats]
        return torch.cat(self.prior_generator.valid_flags(sizes, pad_shape, feats[0].device))

    @float32_inputs
    def loss(self, cls_scores: list[Tensor], bbox_preds: list[Tensor], anchors: list[Tensor],
             gt_bboxes: list[Tensor], assigner, sampler,
             gt_ignores: list[InstanceData | None] | None = None,
             valid_flags: list[Tensor | None] | None = None) -> dict[str, Tensor]:
        """``loss_rpn_cls`` (objectness) and ``loss_rpn_bbox`` (deltas) of a batch.

        Both are divided by the number of anchors sampled in the whole batch (positives and
        negatives, each at least 1 per image), as MMDetection's ``AnchorHead`` does with a
        random sampler.

        Args:
            cls_scores / bbox_preds: output of :meth:`forward`.
            anchors: output of :meth:`anchors`.
            gt_bboxes: per image ``(N_i, 4)`` xyxy GT boxes in input pixels.
            assigner / sampler: built ``train_cfg.rpn`` assigner and sampler.
            gt_ignores: per image ignored GT boxes (``bboxes``) or None, for the assigner's
                ``ignore_iof_thr``.
            valid_flags: per image output of :meth:`valid_flags` or None (all anchors); other
                anchors are neither assigned nor sampled (``allowed_border=-1``).
        """
        all_anchors = torch.cat(anchors)
        scores = _flatten(cls_scores, 1)  # (B, total anchors)
        deltas = _flatten(bbox_preds, 4)  # (B, total anchors, 4)
        labels, label_weights, targets, target_weights = [], [], [], []
        avg_factor = 0
        nones = [None] * len(gt_bboxes)
        for boxes, ignore, valid in zip(gt_bboxes, gt_ignores or nones, valid_flags or nones):
            inside = None if valid is None else valid.nonzero().squeeze(1)
            image_targets = self._targets(all_anchors, inside, boxes, assigner, sampler, ignore)
            for out, value in zip((labels, label_weights, targets, target_weights),
                                  image_targets[:4]):
                out.append(value)
            avg_factor += image_targets[4]
        loss_cls = self.loss_cls(scores.reshape(-1, 1), torch.cat(labels),
                                 torch.cat(label_weights), avg_factor=avg_factor)
        loss_bbox = self.loss_bbox(deltas.reshape(-1, 4), torch.cat(targets),
                                   torch.cat(target_weights), avg_factor=avg_factor)
        return dict(loss_rpn_cls=loss_cls, loss_rpn_bbox=loss_bbox)

    def _targets(self, anchors: Tensor, inside: Tensor | None, gt_bboxes: Tensor, assigner,
                 sampler, ignore: InstanceData | None
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
        """One image's labels (0 object / 1 background), weights, delta targets, normaliser;
        only the ``inside`` anchors (indices; None = all) are assigned and sampled."""
        priors = InstanceData(priors=anchors if inside is None else anchors[inside])
        gts = InstanceData(bboxes=gt_bboxes,
                           labels=gt_bboxes.new_full((len(gt_bboxes),), OBJECT_LABEL,
                                                     dtype=torch.long))
        sampling = sampler.sample(assigner.assign(priors, gts, ignore), priors, gts)
        num = len(anchors)
        labels = anchors.new_full((num,), OBJECT_LABEL + 1, dtype=torch.long)
        label_weights = anchors.new_zeros(num)
        targets = anchors.new_zeros(num, 4)
        target_weights = anchors.new_zeros(num, 4)
        pos, neg = sampling.pos_inds, sampling.neg_inds
        if inside is not None:
            pos, neg = inside[pos], inside[neg]
        labels[pos] = OBJECT_LABEL
        label_weights[pos] = 1.0
        label_weights[neg] = 1.0
        if len(pos):
            targets[pos] = self.bbox_coder.encode(sampling.pos_priors, sampling.pos_gt_bboxes)
            target_weights[pos] = 1.0
        # MMDetection's normaliser: num_pos + num_neg, each counted as at least 1
        return labels, label_weights, targets, target_weights, sampling.avg_factor

    @torch.no_grad()
    @float32_inputs
    def proposals(self, cls_scores: list[Tensor], bbox_preds: list[Tensor],
                  anchors: list[Tensor], img_shapes: list[tuple[int, int]],
                  cfg: dict) -> list[InstanceData]:
        """Detached proposals per image: ``bboxes (P, 4)`` xyxy input pixels, ``scores (P,)``.

        Per level the ``cfg['nms_pre']`` best anchors, decoded and clipped to ``img_shape``;
        boxes no larger than ``min_bbox_size`` dropped; NMS within each level (level ids as
        NMS groups, as MMDetection's RPN); the ``max_per_img`` best kept.
        """
        results = []
        for i, img_shape in enumerate(img_shapes):
            boxes, scores, level_ids = [], [], []
            for level, (cls, reg, priors) in enumerate(zip(cls_scores, bbox_preds, anchors)):
                score = cls[i].detach().permute(1, 2, 0).reshape(-1).sigmoid()
                delta = reg[i].detach().permute(1, 2, 0).reshape(-1, 4)
                nms_pre = cfg.get('nms_pre', -1)
                if 0 < nms_pre < len(score):
                    score, keep = score.topk(nms_pre)
                    delta, priors = delta[keep], priors[keep]
                boxes.append(self.bbox_coder.decode(priors, delta, max_shape=img_shape))
                scores.append(score)
                level_ids.append(torch.full_like(score, level, dtype=torch.long))
            results.append(filter_proposals(torch.cat(boxes), torch.cat(scores),
                                             torch.cat(level_ids), cfg))
        return results


def _flatten(maps: list[Tensor], channels: int) -> Tensor:
    """Per level ``(B, A * channels, H, W)`` -> ``(B, sum H * W * A, channels)``, anchor order
    of the generator (location-major, anchor-minor); ``channels == 1`` drops the last dim."""
    batch = maps[0].size(0)
    flat = torch.cat([m.permute(0, 2, 3, 1).reshape(batch, -1, channels) for m in maps], 1)
    return flat.squeeze(-1) if channels == 1 else flat


def filter_proposals(boxes: Tensor, scores: Tensor, level_ids: Tensor,
                      cfg: dict) -> InstanceData:
    """Size filter, per-level NMS and top ``max_per_img`` of one image's decoded anchors."""
    min_size = cfg.get('min_bbox_size', -1)
    if min_size >= 0:
        wh = boxes[:, 2:] - boxes[:, :2]
        valid = (wh > min_size).all(1)
        boxes, scores, level_ids = boxes[valid], scores[valid], level_ids[valid]
    if boxes.numel() == 0:
        return InstanceData(bboxes=boxes.new_zeros(0, 4), scores=scores.new_zeros(0))
    dets, keep = batched_nms(boxes, scores, level_ids, cfg['nms'])
    max_per_img = cfg.get('max_per_img', -1)
    if max_per_img > 0:
        dets = dets[:max_per_img]
    return InstanceData(bboxes=dets[:, :4], scores=dets[:, 4])
