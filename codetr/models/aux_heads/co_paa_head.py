"""CoPAAHead: Probabilistic Anchor Assignment (Kim & Lee, ECCV 2020) as a Co-DETR aux head.

PAA assigns in two rounds. A loose max-IoU rule (IoU >= 0.1; each GT box also takes its
best anchor) gives every GT box its candidate anchors. Each candidate is then scored by the
loss it has now, focal classification plus GIoU on its decoded box, i.e. by how well it
already predicts the box (the paper's cls x IoU score, as a negative log). Per GT box the
``topk`` best candidates of each level are pooled, a two-component 1-D Gaussian mixture is
fitted to their losses by EM, and the candidates of the low-loss component up to the
mixture's peak among them stay positive; the other candidates become background
(:mod:`.paa_utils`). The head predicts classes (focal loss), boxes (GIoU on decoded boxes,
weighted by the IoU of the prediction with its GT) and that IoU (BCE), with MMDetection's
normalisers. At test the score is ``sqrt(class probability * predicted IoU)``, and score
voting (``score_voting=True``, PAA's default) replaces each box kept by NMS with the
IoU- and score-weighted mean of the same-class boxes around it; it moves boxes, never scores.

Like the ATSS aux head, its ``loss`` hands every anchor with its PAA label and GT box to the
decoder (:class:`AuxPositives`). Layers: ``cls_convs``, ``reg_convs`` (one stacked conv, as
Co-DETR's aux heads), ``paa_cls``, ``paa_reg``, ``paa_iou``, ``scales`` (MMDetection's PAAHead,
an ATSSHead subclass, names the last three ``atss_cls``, ``atss_reg``, ``atss_centerness``).
"""
from __future__ import annotations

import copy

import torch
from mmcv.cnn import Scale
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.registry import MODELS, TASK_UTILS
from codetr.structures import DetDataSample, bbox_overlaps

from ..co_modules.positives import MAX_POS_COORDS, AuxPositives
from ..utils import float32_inputs, to_float32
from .anchor_head_utils import (
    AnchorTargets,
    anchor_targets,
    build_tower,
    check_levels,
    check_sampler,
    dense_positives,
    flatten_levels,
    image_anchors,
    init_dense_head,
    input_shape,
    postprocess_dense,
    rescale_boxes,
    top_scores,
)
from .paa_utils import paa_select, score_voting

# MMDetection's PAA settings (configs/paa/paa_r50_fpn_1x_coco.py) on the Co-DINO pyramid
# strides. Its loss weights (focal 1, GIoU 1.3, IoU BCE 0.5) are the ones below: CoDETR
# applies the lambda_2 x decoder-layer factor itself (docs/design_notes.md).
PAA_ANCHOR_GENERATOR = dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                            scales_per_octave=1, strides=[4, 8, 16, 32, 64, 128])
PAA_BBOX_CODER = dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                      target_stds=[0.1, 0.1, 0.2, 0.2])
PAA_TRAIN_CFG = dict(
    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.1, neg_iou_thr=0.1, min_pos_iou=0,
                  ignore_iof_thr=-1),
    allowed_border=-1, pos_weight=-1)
PAA_TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                    nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)
# Candidates per level and GT box that enter the mixture fit (PAA's topk).
PAA_TOPK = 9
# Floor of the IoU weights of the box loss (MMDetection's PAAHead EPS).
IOU_WEIGHT_EPS = 1e-12


@MODELS.register_module()
class CoPAAHead(BaseModule):
    """PAA aux head with one stacked conv per branch, GIoU on decoded boxes, IoU prediction.

    Args:
        num_classes: foreground classes (the background label is ``num_classes``).
        in_channels: pyramid width.
        feat_channels: width of the conv towers.
        stacked_convs: conv -> GN -> ReLU blocks per branch (Co-DETR: 1; PAA paper: 4).
        norm_cfg: norm of the towers (mmcv config; ``num_groups`` must divide the width).
        anchor_generator, bbox_coder: ``TASK_UTILS`` configs; one stride per pyramid level.
        loss_cls, loss_bbox, loss_iou: ``MODELS`` loss configs (focal, GIoU, sigmoid BCE).
        topk: candidates per level and GT box that enter the mixture fit.
        score_voting: refine the boxes kept by NMS by score voting at test time.
        train_cfg: ``assigner`` (the initial MaxIoUAssigner), ``allowed_border``,
            ``pos_weight``.
        test_cfg: ``nms_pre``, ``min_bbox_size``, ``score_thr``, ``nms``, ``max_per_img``.
        max_pos_coords: most positive queries handed on per image.
    """

    # CoDETR evaluates through this head when test_cfg.eval_module == 'one-stage'.
    eval_kind = 'one-stage'

    def __init__(self, num_classes: int, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 1, norm_cfg: dict | None = None,
                 anchor_generator: dict | None = None, bbox_coder: dict | None = None,
                 loss_cls: dict | None = None, loss_bbox: dict | None = None,
                 loss_iou: dict | None = None, topk: int = PAA_TOPK, score_voting: bool = True,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 max_pos_coords: int = MAX_POS_COORDS, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if topk < 1:
            raise ValueError(f'CoPAAHead topk must be >= 1 (PAA uses 9), got {topk}')
        self.num_classes = num_classes
        self.topk = topk
        self.score_voting = score_voting
        self.max_pos_coords = max_pos_coords
        self.train_cfg = {**PAA_TRAIN_CFG, **(train_cfg or {})}
        self.test_cfg = {**PAA_TEST_CFG, **(test_cfg or {})}
        check_sampler(self.train_cfg, 'CoPAAHead')
        self.prior_generator = TASK_UTILS.build(copy.deepcopy(
            anchor_generator or PAA_ANCHOR_GENERATOR))
        if any(n != 1 for n in self.prior_generator.num_base_priors):
            raise ValueError('CoPAAHead predicts one box per location; give its '
                             'anchor_generator one ratio and one scale per octave')
        self.bbox_coder = TASK_UTILS.build(copy.deepcopy(bbox_coder or PAA_BBOX_CODER))
        self.assigner = TASK_UTILS.build(copy.deepcopy(self.train_cfg['assigner']))
        self.loss_cls = MODELS.build(loss_cls or dict(
            type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))
        self.loss_bbox = MODELS.build(loss_bbox or dict(type='GIoULoss', loss_weight=1.3))
        self.loss_iou = MODELS.build(loss_iou or dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=0.5))

        norm_cfg = dict(type='GN', num_groups=32) if norm_cfg is None else norm_cfg
        self.cls_convs = build_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.reg_convs = build_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.paa_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.paa_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.paa_iou = nn.Conv2d(feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.prior_generator.strides)
        self._reset_parameters()

    def init_weights(self) -> None:
        """The default scheme again, unless ``init_cfg`` (e.g. a checkpoint) says otherwise."""
        super().init_weights()
        if self.init_cfg is None:
            self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Normal(0, 0.01) convs, class bias at prior 0.01, unit scales (MMDetection's PAA)."""
        init_dense_head(self, self.paa_cls)
        for scale in self.scales:
            nn.init.ones_(scale.scale)

    def forward(self, pyramid: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level ``(B, C, H, W)`` -> class logits ``(B, num_classes, H, W)``, box deltas
        ``(B, 4, H, W)`` and IoU logits ``(B, 1, H, W)`` (from the regression branch)."""
        check_levels(pyramid, self.prior_generator.num_levels, 'CoPAAHead')
        cls_scores, bbox_preds, iou_preds = [], [], []
        for feat, scale in zip(pyramid, self.scales):
            cls_feat, reg_feat = feat, feat
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            cls_scores.append(self.paa_cls(cls_feat))
            bbox_preds.append(scale(self.paa_reg(reg_feat)).float())
            iou_preds.append(self.paa_iou(reg_feat))
        return cls_scores, bbox_preds, iou_preds

    # ------------------------------------------------------------------ training
    def loss(self, pyramid: list[Tensor], data_samples: list[DetDataSample]
             ) -> tuple[dict[str, Tensor], AuxPositives]:
        """PAA losses and the positives handed to the decoder.

        Returns:
            ``loss_cls``, ``loss_bbox``, ``loss_iou`` (this head's own weights) and the
            :class:`AuxPositives` made from all anchors with their PAA labels.
        """
        # float32 from here on: anchors, targets and losses never run in autocast's bf16
        cls_scores, bbox_preds, iou_preds = to_float32(self(pyramid))
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        _, anchors, inside = image_anchors(self.prior_generator, sizes, data_samples,
                                           self.train_cfg['allowed_border'], cls_scores[0])
        cls_flat = flatten_levels(cls_scores, self.num_classes)
        reg_flat = flatten_levels(bbox_preds, 4)
        targets = self.get_targets(anchors, inside, sizes, data_samples, cls_flat, reg_flat)
        losses = self._losses(anchors, cls_flat, reg_flat, flatten_levels(iou_preds, 1)[..., 0],
                              targets)
        positives = dense_positives(anchors, targets, pyramid,
                                    self.prior_generator.num_base_priors, self.num_classes,
                                    self.max_pos_coords)
        return losses, positives

    @torch.no_grad()
    @float32_inputs
    def get_targets(self, anchors: Tensor, inside: list[Tensor],
                    featmap_sizes: list[tuple[int, int]], data_samples: list[DetDataSample],
                    cls_scores: Tensor, bbox_preds: Tensor) -> list[AnchorTargets]:
        """PAA targets per image over all ``(N, 4)`` anchors.

        Args:
            inside: per image ``(N,)`` bool, the anchors that take part in the assignment.
            featmap_sizes: ``(H_l, W_l)`` per level (one anchor per location).
            cls_scores: ``(B, N, num_classes)`` logits; ``bbox_preds``: ``(B, N, 4)`` deltas;
                the candidates are scored with them (no gradient flows through the choice).
        """
        counts = torch.tensor([h * w for h, w in featmap_sizes], device=anchors.device)
        level_of = torch.repeat_interleave(torch.arange(len(counts), device=anchors.device),
                                           counts)
        targets = []
        for i, (flags, sample) in enumerate(zip(inside, data_samples)):
            initial = anchor_targets(anchors, flags, sample, self.num_classes,
                                     self.train_cfg['pos_weight'], self.assigner.assign)
            targets.append(self._reassign(anchors, level_of, cls_scores[i], bbox_preds[i],
                                          initial, len(sample.gt_instances)))
        return targets

    def _reassign(self, anchors: Tensor, level_of: Tensor, cls_scores: Tensor,
                  bbox_preds: Tensor, initial: AnchorTargets, num_gts: int) -> AnchorTargets:
        """Keep the initial positives PAA's mixture picks; the others become background.

        Args:
            anchors: ``(N, 4)``; ``level_of``: ``(N,)`` level index of each anchor.
            cls_scores: ``(N, num_classes)`` logits; ``bbox_preds``: ``(N, 4)`` deltas.
            initial: the max-IoU targets of the image; ``num_gts``: its GT boxes.
        """
        pos = (initial.labels < self.num_classes).nonzero().squeeze(1)
        if len(pos) == 0:
            return initial
        losses = self.candidate_losses(anchors[pos], cls_scores[pos], bbox_preds[pos],
                                       initial.labels[pos], initial.label_weights[pos],
                                       initial.gt_boxes[pos])
        keep = paa_select(losses, initial.gt_inds[pos], level_of[pos], num_gts,
                          self.prior_generator.num_levels, self.topk)
        dropped = pos[~keep]
        labels, gt_boxes = initial.labels.clone(), initial.gt_boxes.clone()
        gt_inds = initial.gt_inds.clone()
        labels[dropped] = self.num_classes
        gt_boxes[dropped] = 0
        gt_inds[dropped] = -1
        return AnchorTargets(labels, initial.label_weights, gt_boxes, int(keep.sum()), gt_inds)

    def candidate_losses(self, anchors: Tensor, cls_scores: Tensor, bbox_preds: Tensor,
                         labels: Tensor, label_weights: Tensor, gt_boxes: Tensor) -> Tensor:
        """PAA's score of ``P`` candidates, as a loss (lower is better): the weighted focal
        loss summed over classes plus the weighted GIoU loss of the decoded box, ``(P,)``."""
        loss_cls = self.loss_cls(cls_scores, labels, label_weights, reduction_override='none')
        boxes = self.bbox_coder.decode(anchors, bbox_preds)
        return loss_cls.sum(1) + self.loss_bbox(boxes, gt_boxes, reduction_override='none')

    @float32_inputs
    def _losses(self, anchors: Tensor, cls_scores: Tensor, bbox_preds: Tensor,
                iou_preds: Tensor, targets: list[AnchorTargets]) -> dict[str, Tensor]:
        """MMDetection's PAA normalisers on the batch (``(B, N, K)`` predictions).

        The focal loss is divided by the positives of the batch (at least one per image), the
        IoU BCE by the positives, and the GIoU loss, weighted by each positive's IoU with its
        GT box, by the sum of those IoUs.
        """
        labels = torch.stack([t.labels for t in targets]).flatten()
        label_weights = torch.stack([t.label_weights for t in targets]).flatten()
        gt_boxes = torch.cat([t.gt_boxes for t in targets])
        num_pos = sum(t.num_pos for t in targets)
        loss_cls = self.loss_cls(cls_scores.flatten(0, 1), labels, label_weights,
                                 avg_factor=float(max(num_pos, len(targets))))
        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero().squeeze(1)
        bbox_preds, iou_preds = bbox_preds.flatten(0, 1), iou_preds.flatten()
        if len(pos) == 0:
            # zero losses that still reach every parameter (DDP needs all gradients)
            return dict(loss_cls=loss_cls, loss_bbox=bbox_preds.sum() * 0,
                        loss_iou=iou_preds.sum() * 0)
        boxes = self.bbox_coder.decode(anchors.repeat(len(targets), 1)[pos], bbox_preds[pos])
        pos_gt = gt_boxes[pos]
        iou_target = bbox_overlaps(boxes.detach(), pos_gt, is_aligned=True)
        loss_iou = self.loss_iou(iou_preds[pos], iou_target, avg_factor=float(num_pos))
        loss_bbox = self.loss_bbox(boxes, pos_gt, weight=iou_target.clamp(min=IOU_WEIGHT_EPS),
                                   avg_factor=iou_target.sum())
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_iou=loss_iou)

    # ------------------------------------------------------------------ inference
    def predict(self, pyramid: list[Tensor], data_samples: list[DetDataSample],
                rescale: bool = True) -> list[InstanceData]:
        """Detections per image: ``bboxes (K, 4)`` xyxy (original image pixels when
        ``rescale``), ``scores (K,)`` = sqrt(class probability * predicted IoU), ``labels``."""
        cls_scores, bbox_preds, iou_preds = to_float32(self(pyramid))
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        level_anchors = self.prior_generator.grid_priors(
            sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)
        results = []
        for i, sample in enumerate(data_samples):
            levels = [(anchors, cls[i], reg[i], iou[i]) for anchors, cls, reg, iou
                      in zip(level_anchors, cls_scores, bbox_preds, iou_preds)]
            results.append(self._predict_single(levels, sample, rescale))
        return results

    @float32_inputs
    def _predict_single(self, levels: list[tuple[Tensor, ...]], sample: DetDataSample,
                        rescale: bool) -> InstanceData:
        """One image from per-level (anchors, cls (C, H, W), deltas (4, H, W), iou (1, H, W))."""
        cfg, img_shape = self.test_cfg, input_shape(sample, 'img_shape')
        boxes, scores, labels = [], [], []
        for anchors, cls, reg, iou in levels:
            probs = (cls.permute(1, 2, 0).reshape(-1, self.num_classes).sigmoid()
                     * iou.permute(1, 2, 0).reshape(-1, 1).sigmoid()).sqrt()
            score, idx, label = top_scores(probs, cfg['score_thr'], cfg['nms_pre'])
            deltas = reg.permute(1, 2, 0).reshape(-1, 4)[idx]
            boxes.append(self.bbox_coder.decode(anchors[idx], deltas, max_shape=img_shape))
            scores.append(score)
            labels.append(label)
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        if rescale:
            boxes = rescale_boxes(boxes, sample.metainfo)
        dets = postprocess_dense(boxes, scores, labels, sample.metainfo, cfg, rescale=False)
        if self.score_voting and len(dets) > 0:
            dets.bboxes = score_voting(dets.bboxes, dets.labels, boxes, scores, labels)
        return dets
