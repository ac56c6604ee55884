"""CoGFLHead: Generalized Focal Loss (Li et al., NeurIPS 2020) as a Co-DETR aux head.

GFL keeps ATSS's assignment (one square anchor per location, per-GT IoU threshold = mean +
std of the top-k nearest anchors) and changes what is predicted:

- the class branch predicts a joint class-and-quality score, trained by the quality focal
  loss towards the IoU of the predicted box with its GT box (0 for negatives);
- the box branch predicts, for each of the four distances from the anchor centre to the box
  sides, a discrete distribution over ``0..reg_max`` strides; the distance is its expected
  value (:class:`Integral`). The distribution focal loss pulls the mass onto the two bins
  around the target distance, and GIoU is taken on the decoded boxes. Both box losses are
  weighted by the positive's highest predicted class score and divided by the sum of those
  weights, as GFL does.

As every Co-DETR aux head, it runs one stacked conv per branch on the adapter's pyramid, and
its ``loss`` also hands every anchor with its label and GT box to the decoder
(:class:`~codetr.models.co_modules.AuxPositives`), as the ATSS aux head does. Layer names
follow MMDetection's ``GFLHead`` (``cls_convs``, ``reg_convs``, ``gfl_cls``, ``gfl_reg``,
``scales``, ``integral.project``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from mmcv.cnn import Scale
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.models.aux_heads.anchor_head_utils import (
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
    top_scores,
)
from codetr.models.co_modules import AuxPositives
from codetr.models.co_modules.positives import MAX_POS_COORDS
from codetr.models.query_heads.detr_criterion import mean_over_ranks
from codetr.models.utils import float32_inputs, to_float32
from codetr.registry import MODELS, TASK_UTILS
from codetr.structures import DetDataSample, bbox_overlaps

# MMDetection's GFL settings (configs/gfl/gfl_r50_fpn_1x_coco.py) on the Co-DINO pyramid
# strides. The loss weights (QFL 1, DFL 0.25, GIoU 2) are GFL's own: CoDETR multiplies aux
# losses by lambda_2 x the decoder layers, the factor 12 the official Co-DETR configs write
# into their aux weights (codetr's docs/design_notes.md, "Loss weights").
GFL_ANCHOR_GENERATOR = dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                            scales_per_octave=1, strides=[4, 8, 16, 32, 64, 128])
GFL_TRAIN_CFG = dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                     pos_weight=-1)
GFL_TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                    nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)
GFL_LOSS_CLS = dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0)
GFL_LOSS_DFL = dict(type='DistributionFocalLoss', loss_weight=0.25)
GFL_LOSS_BBOX = dict(type='GIoULoss', loss_weight=2.0)
# Largest distance of the box distribution, in strides (GFL: 16, bins 0..16).
GFL_REG_MAX = 16
# DFL targets are clamped to reg_max - this, so that the right bin of the pair exists
# (MMDetection's bbox2distance default).
DFL_TARGET_MARGIN = 0.1


class Integral(nn.Module):
    """Expected value of the four side distributions.

    ``(..., 4 * (reg_max + 1))`` logits -> ``(..., 4)`` distances in bins (strides): softmax
    over each side's ``reg_max + 1`` bins, then ``sum_i p_i * i``.
    """

    def __init__(self, reg_max: int = GFL_REG_MAX) -> None:
        super().__init__()
        self.reg_max = reg_max
        self.register_buffer('project', torch.arange(reg_max + 1, dtype=torch.float32))

    def forward(self, logits: Tensor) -> Tensor:
        probs = F.softmax(logits.reshape(*logits.shape[:-1], 4, self.reg_max + 1), dim=-1)
        return probs @ self.project.to(probs.dtype)


@MODELS.register_module()
class CoGFLHead(BaseModule):
    """GFL aux head with one stacked conv per branch.

    Args:
        num_classes: foreground classes (the background label is ``num_classes``).
        in_channels: pyramid width.
        feat_channels: width of the conv towers.
        stacked_convs: conv -> GN -> ReLU blocks per branch (Co-DETR: 1; GFL paper: 4).
        norm_cfg: norm of the towers (mmcv config; ``num_groups`` must divide the width).
        reg_max: the box distributions cover ``0..reg_max`` strides.
        anchor_generator: ``TASK_UTILS`` config, one ratio and scale, one stride per level.
        loss_cls, loss_dfl, loss_bbox: ``MODELS`` loss configs (QFL, DFL, GIoU).
        train_cfg: ``assigner`` (ATSSAssigner), ``allowed_border``, ``pos_weight``.
        test_cfg: ``nms_pre``, ``min_bbox_size``, ``score_thr``, ``nms``, ``max_per_img``.
        max_pos_coords: most positive queries handed on per image.
    """

    # CoDETR evaluates through this head when test_cfg.eval_module == 'one-stage'.
    eval_kind = 'one-stage'

    def __init__(self, num_classes: int, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 1, norm_cfg: dict | None = None,
                 reg_max: int = GFL_REG_MAX, anchor_generator: dict | None = None,
                 loss_cls: dict | None = None, loss_dfl: dict | None = None,
                 loss_bbox: dict | None = None, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, max_pos_coords: int = MAX_POS_COORDS,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.max_pos_coords = max_pos_coords
        self.train_cfg = {**GFL_TRAIN_CFG, **(train_cfg or {})}
        self.test_cfg = {**GFL_TEST_CFG, **(test_cfg or {})}
        check_sampler(self.train_cfg, 'CoGFLHead')
        self.prior_generator = TASK_UTILS.build(copy.deepcopy(
            anchor_generator or GFL_ANCHOR_GENERATOR))
        if any(n != 1 for n in self.prior_generator.num_base_priors):
            raise ValueError('CoGFLHead regresses from one anchor centre per location; give '
                             'its anchor_generator one ratio and one scale per octave')
        self.bbox_coder = TASK_UTILS.build(dict(type='DistancePointBBoxCoder'))
        self.assigner = TASK_UTILS.build(copy.deepcopy(self.train_cfg['assigner']))
        self.loss_cls = MODELS.build(loss_cls or GFL_LOSS_CLS)
        self.loss_dfl = MODELS.build(loss_dfl or GFL_LOSS_DFL)
        self.loss_bbox = MODELS.build(loss_bbox or GFL_LOSS_BBOX)

        norm_cfg = dict(type='GN', num_groups=32) if norm_cfg is None else norm_cfg
        self.cls_convs = build_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.reg_convs = build_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.gfl_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat_channels, 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.prior_generator.strides)
        self.integral = Integral(reg_max)
        self._reset_parameters()

    def init_weights(self) -> None:
        """The default scheme again, unless ``init_cfg`` (e.g. a checkpoint) says otherwise."""
        super().init_weights()
        if self.init_cfg is None:
            self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Normal(0, 0.01) convs, class bias at prior 0.01, unit scales (MMDetection's GFL)."""
        init_dense_head(self, self.gfl_cls)
        for scale in self.scales:
            nn.init.ones_(scale.scale)

    def forward(self, pyramid: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``(B, C, H, W)`` -> joint class-quality logits ``(B, num_classes, H, W)``
        and side-distribution logits ``(B, 4 * (reg_max + 1), H, W)``."""
        check_levels(pyramid, self.prior_generator.num_levels, 'CoGFLHead')
        cls_scores, bbox_preds = [], []
        for feat, scale in zip(pyramid, self.scales):
            cls_feat, reg_feat = feat, feat
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            cls_scores.append(self.gfl_cls(cls_feat))
            bbox_preds.append(scale(self.gfl_reg(reg_feat)).float())
        return cls_scores, bbox_preds

    def decode(self, anchors: Tensor, strides: Tensor, bbox_preds: Tensor,
               max_shape: tuple[int, int] | None = None) -> Tensor:
        """``(P, 4)`` anchors, ``(P,)`` strides and ``(P, 4 * (reg_max + 1))`` logits ->
        ``(P, 4)`` xyxy boxes in pixels (the integral distances times the stride)."""
        centres = (anchors[:, :2] + anchors[:, 2:]) / 2
        distances = self.integral(bbox_preds) * strides[:, None]
        return self.bbox_coder.decode(centres, distances, max_shape=max_shape)

    # ------------------------------------------------------------------ training
    def loss(self, pyramid: list[Tensor], data_samples: list[DetDataSample]
             ) -> tuple[dict[str, Tensor], AuxPositives]:
        """GFL losses and the positives handed to the decoder.

        Returns:
            ``loss_cls`` (QFL), ``loss_bbox`` (GIoU), ``loss_dfl`` (this head's own weights)
            and the :class:`AuxPositives` made from all anchors with their ATSS labels.
        """
        # float32 from here on: anchors, targets and losses never run in autocast's bf16
        cls_scores, bbox_preds = to_float32(self(pyramid))
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        _, anchors, inside = image_anchors(self.prior_generator, sizes, data_samples,
                                           self.train_cfg['allowed_border'], cls_scores[0])
        targets = self.get_targets(anchors, inside, sizes, data_samples)
        losses = self._losses(anchors, self._anchor_strides(sizes, anchors),
                              flatten_levels(cls_scores, self.num_classes),
                              flatten_levels(bbox_preds, 4 * (self.reg_max + 1)), targets)
        positives = dense_positives(anchors, targets, pyramid,
                                    self.prior_generator.num_base_priors, self.num_classes,
                                    self.max_pos_coords)
        return losses, positives

    def _anchor_strides(self, featmap_sizes: list[tuple[int, int]], like: Tensor) -> Tensor:
        """``(N,)`` stride of each anchor, levels concatenated (square strides)."""
        return torch.cat([like.new_full((h * w,), float(stride[0])) for (h, w), stride
                          in zip(featmap_sizes, self.prior_generator.strides)])

    @float32_inputs
    def get_targets(self, anchors: Tensor, inside: list[Tensor],
                    featmap_sizes: list[tuple[int, int]],
                    data_samples: list[DetDataSample]) -> list[AnchorTargets]:
        """ATSS targets per image over all ``(N, 4)`` anchors; ``inside`` per image ``(N,)``."""
        num_level = [h * w for h, w in featmap_sizes]
        targets = []
        for flags, sample in zip(inside, data_samples):
            # the assigner picks its top-k candidates per level, among the anchors it sees
            levels_inside = [int(f.sum()) for f in flags.split(num_level)]

            def assign(pred: InstanceData, gt: InstanceData, ignored: InstanceData | None,
                       levels: list[int] = levels_inside):
                return self.assigner.assign(pred, levels, gt, ignored)

            targets.append(anchor_targets(anchors, flags, sample, self.num_classes,
                                          self.train_cfg['pos_weight'], assign))
        return targets

    @float32_inputs
    def _losses(self, anchors: Tensor, strides: Tensor, cls_scores: Tensor, bbox_preds: Tensor,
                targets: list[AnchorTargets]) -> dict[str, Tensor]:
        """GFL's losses and normalisers on the batch.

        Args:
            anchors: ``(N, 4)``; ``strides``: ``(N,)``.
            cls_scores: ``(B, N, num_classes)`` logits; ``bbox_preds``: ``(B, N, 4 * (n + 1))``.

        QFL is divided by the positives of the batch (averaged over ranks, at least 1); GIoU
        and DFL are weighted by each positive's highest class score (no gradient) and divided
        by the sum of those weights (averaged over ranks, at least 1); DFL also by 4 sides.
        """
        batch = len(targets)
        labels = torch.stack([t.labels for t in targets]).flatten()
        label_weights = torch.stack([t.label_weights for t in targets]).flatten()
        gt_boxes = torch.cat([t.gt_boxes for t in targets])
        cls_scores, bbox_preds = cls_scores.flatten(0, 1), bbox_preds.flatten(0, 1)
        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero().squeeze(1)
        quality = cls_scores.new_zeros(len(labels))
        if len(pos) == 0:
            # zero losses that still reach every parameter (DDP needs all gradients)
            loss_bbox = loss_dfl = bbox_preds.sum() * 0
            weight_sum = 0.0
        else:
            pos_anchors, pos_strides = anchors.repeat(batch, 1)[pos], strides.repeat(batch)[pos]
            pos_preds, pos_gt = bbox_preds[pos], gt_boxes[pos]
            boxes = self.decode(pos_anchors, pos_strides, pos_preds)
            quality[pos] = bbox_overlaps(boxes.detach(), pos_gt, is_aligned=True)
            weight = cls_scores.detach().sigmoid().max(dim=1).values[pos]
            loss_bbox = self.loss_bbox(boxes, pos_gt, weight=weight, avg_factor=1.0)
            # distances in strides, clamped so the right bin of each pair exists
            centres = (pos_anchors[:, :2] + pos_anchors[:, 2:]) / 2 / pos_strides[:, None]
            sides = self.bbox_coder.encode(centres, pos_gt / pos_strides[:, None],
                                           max_dis=self.reg_max, eps=DFL_TARGET_MARGIN)
            loss_dfl = self.loss_dfl(pos_preds.reshape(-1, self.reg_max + 1), sides.reshape(-1),
                                     weight=weight[:, None].expand(-1, 4).reshape(-1),
                                     avg_factor=4.0)
            weight_sum = float(weight.sum())
        num_pos = max(mean_over_ranks(len(pos), cls_scores), 1.0)
        loss_cls = self.loss_cls(cls_scores, (labels, quality), weight=label_weights,
                                 avg_factor=num_pos)
        box_avg_factor = max(mean_over_ranks(weight_sum, cls_scores), 1.0)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox / box_avg_factor,
                    loss_dfl=loss_dfl / box_avg_factor)

    # ------------------------------------------------------------------ inference
    def predict(self, pyramid: list[Tensor], data_samples: list[DetDataSample],
                rescale: bool = True) -> list[InstanceData]:
        """Detections per image: ``bboxes (K, 4)`` xyxy (original image pixels when
        ``rescale``), ``scores (K,)`` sigmoid joint class-quality scores, ``labels (K,)``."""
        cls_scores, bbox_preds = to_float32(self(pyramid))
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        level_anchors = self.prior_generator.grid_priors(
            sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)
        results = []
        for i, sample in enumerate(data_samples):
            levels = [(anchors, stride[0], cls[i], reg[i]) for anchors, stride, cls, reg
                      in zip(level_anchors, self.prior_generator.strides, cls_scores,
                             bbox_preds)]
            results.append(self._predict_single(levels, sample, rescale))
        return results

    @float32_inputs
    def _predict_single(self, levels: list[tuple[Tensor, float, Tensor, Tensor]],
                        sample: DetDataSample, rescale: bool) -> InstanceData:
        """One image from per-level (anchors, stride, cls (C, H, W), reg (4 (n+1), H, W))."""
        cfg, img_shape = self.test_cfg, input_shape(sample, 'img_shape')
        boxes, scores, labels = [], [], []
        for anchors, stride, cls, reg in levels:
            probs = cls.permute(1, 2, 0).reshape(-1, self.num_classes).sigmoid()
            score, idx, label = top_scores(probs, cfg['score_thr'], cfg['nms_pre'])
            logits = reg.permute(1, 2, 0).reshape(-1, 4 * (self.reg_max + 1))[idx]
            boxes.append(self.decode(anchors[idx], logits.new_full((len(idx),), float(stride)),
                                     logits, max_shape=img_shape))
            scores.append(score)
            labels.append(label)
        return postprocess_dense(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                                 sample.metainfo, cfg, rescale)
