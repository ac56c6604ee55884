"""CoATSSHead: the ATSS auxiliary head of Co-DETR (one-to-many assignment on the pyramid).

ATSS (Zhang et al., 2020) picks, per GT box, the ``topk`` anchors per level whose centres
are nearest to the box centre, and keeps those whose IoU is at least the mean + std of the
candidates' IoUs and whose centre lies inside the box. The head predicts classes (focal
loss), decoded boxes (GIoU weighted by the centerness target) and a centerness logit (BCE),
with the official normalisers. Its ``loss`` also hands every anchor with its ATSS label and
GT box to the decoder (:class:`AuxPositives`), as the official ``pos_coords``.

Parameter names follow the official port's ``bbox_head.0.*``: ``cls_convs.i.conv/.gn``,
``reg_convs.i.conv/.gn``, ``atss_cls``, ``atss_reg``, ``atss_centerness``, ``scales.i.scale``.
"""
from __future__ import annotations

import copy

import torch
from mmcv.cnn import Scale
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.registry import MODELS, TASK_UTILS
from codetr.structures import DetDataSample

from ..co_modules.positives import MAX_POS_COORDS, AuxPositives
from ..query_heads.detr_criterion import mean_over_ranks
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
    top_scores,
)

# Official Co-DINO ATSS aux head settings (projects/CO-DETR configs), weights before the
# lambda_2 * num_decoder_layers = 12 fold the official configs write into them.
ATSS_ANCHOR_GENERATOR = dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8,
                             scales_per_octave=1, strides=[4, 8, 16, 32, 64, 128])
ATSS_BBOX_CODER = dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                       target_stds=[0.1, 0.1, 0.2, 0.2])
ATSS_TRAIN_CFG = dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                      pos_weight=-1)
ATSS_TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                     nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)


def centerness_target(anchors: Tensor, gt_boxes: Tensor) -> Tensor:
    """FCOS centerness of each anchor centre w.r.t. its GT box, ``(P, 4), (P, 4) -> (P,)``.

    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` with ``l, t, r, b`` the pixel
    distances from the anchor centre to the box sides; ATSS positives have their centre
    inside the box, so every distance is positive.
    """
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    left_right = torch.stack([cx - gt_boxes[:, 0], gt_boxes[:, 2] - cx], dim=1)
    top_bottom = torch.stack([cy - gt_boxes[:, 1], gt_boxes[:, 3] - cy], dim=1)
    return torch.sqrt(left_right.min(1).values / left_right.max(1).values
                      * top_bottom.min(1).values / top_bottom.max(1).values)


@MODELS.register_module()
class CoATSSHead(BaseModule):
    """ATSS aux head with one stacked conv per branch and GIoU on decoded boxes.

    Args:
        num_classes: foreground classes (the background label is ``num_classes``).
        in_channels: pyramid width.
        feat_channels: width of the conv towers.
        stacked_convs: conv -> GN -> ReLU blocks per branch (Co-DETR: 1; ATSS paper: 4).
        norm_cfg: norm of the towers (mmcv config; ``num_groups`` must divide the width).
        anchor_generator, bbox_coder: ``TASK_UTILS`` configs; one stride per pyramid level.
        loss_cls, loss_bbox, loss_centerness: ``MODELS`` loss configs.
        reg_decoded_bbox: box loss on decoded boxes (GIoU) instead of encoded deltas.
        train_cfg: ``assigner`` (ATSSAssigner), ``allowed_border``, ``pos_weight``.
        test_cfg: ``nms_pre``, ``min_bbox_size``, ``score_thr``, ``nms``, ``max_per_img``.
        max_pos_coords: most positive queries handed on per image.
    """

    # CoDETR evaluates through this head when test_cfg.eval_module == 'one-stage'.
    eval_kind = 'one-stage'

    def __init__(self, num_classes: int, in_channels: int = 256, feat_channels: int = 256,
                 stacked_convs: int = 1, norm_cfg: dict | None = None,
                 anchor_generator: dict | None = None, bbox_coder: dict | None = None,
                 loss_cls: dict | None = None, loss_bbox: dict | None = None,
                 loss_centerness: dict | None = None, reg_decoded_bbox: bool = True,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 max_pos_coords: int = MAX_POS_COORDS, init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.reg_decoded_bbox = reg_decoded_bbox
        self.max_pos_coords = max_pos_coords
        self.train_cfg = {**ATSS_TRAIN_CFG, **(train_cfg or {})}
        self.test_cfg = {**ATSS_TEST_CFG, **(test_cfg or {})}
        check_sampler(self.train_cfg, 'CoATSSHead')
        self.prior_generator = TASK_UTILS.build(copy.deepcopy(
            anchor_generator or ATSS_ANCHOR_GENERATOR))
        self.bbox_coder = TASK_UTILS.build(copy.deepcopy(bbox_coder or ATSS_BBOX_CODER))
        self.assigner = TASK_UTILS.build(copy.deepcopy(self.train_cfg['assigner']))
        self.loss_cls = MODELS.build(loss_cls or dict(
            type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))
        self.loss_bbox = MODELS.build(loss_bbox or dict(type='GIoULoss', loss_weight=2.0))
        self.loss_centerness = MODELS.build(loss_centerness or dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0))

        norm_cfg = dict(type='GN', num_groups=32) if norm_cfg is None else norm_cfg
        num_anchors = self.prior_generator.num_base_priors[0]
        self.num_anchors = num_anchors
        self.cls_convs = build_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.reg_convs = build_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.atss_cls = nn.Conv2d(feat_channels, num_anchors * num_classes, 3, padding=1)
        self.atss_reg = nn.Conv2d(feat_channels, num_anchors * 4, 3, padding=1)
        self.atss_centerness = nn.Conv2d(feat_channels, num_anchors, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.prior_generator.strides)
        self._reset_parameters()

    def init_weights(self) -> None:
        """The default scheme again, unless ``init_cfg`` (e.g. a checkpoint) says otherwise."""
        super().init_weights()
        if self.init_cfg is None:
            self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Normal(0, 0.01) convs, class bias at prior 0.01, unit scales (MMDetection's ATSS)."""
        init_dense_head(self, self.atss_cls)
        for scale in self.scales:
            nn.init.ones_(scale.scale)

    def forward(self, pyramid: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per level ``(B, C, H, W)`` -> class logits ``(B, A * num_classes, H, W)``, box
        deltas ``(B, A * 4, H, W)`` and centerness logits ``(B, A, H, W)``."""
        check_levels(pyramid, self.prior_generator.num_levels, 'CoATSSHead')
        cls_scores, bbox_preds, centernesses = [], [], []
        for feat, scale in zip(pyramid, self.scales):
            cls_feat, reg_feat = feat, feat
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            cls_scores.append(self.atss_cls(cls_feat))
            # ATSS regresses raw deltas (no exp), scaled per level; float for AMP safety
            bbox_preds.append(scale(self.atss_reg(reg_feat)).float())
            centernesses.append(self.atss_centerness(reg_feat))
        return cls_scores, bbox_preds, centernesses

    # ------------------------------------------------------------------ training
    def loss(self, pyramid: list[Tensor], data_samples: list[DetDataSample]
             ) -> tuple[dict[str, Tensor], AuxPositives]:
        """ATSS losses and the positives handed to the decoder.

        Returns:
            ``loss_cls``, ``loss_bbox``, ``loss_centerness`` (this head's own weights) and
            the :class:`AuxPositives` made from all anchors with their ATSS labels.
        """
        # float32 from here on: anchors, targets and losses never run in autocast's bf16
        cls_scores, bbox_preds, centernesses = to_float32(self(pyramid))
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        _, anchors, inside = image_anchors(self.prior_generator, sizes, data_samples,
                                           self.train_cfg['allowed_border'], cls_scores[0])
        targets = self.get_targets(anchors, inside, sizes, data_samples)
        losses = self._losses(anchors, flatten_levels(cls_scores, self.num_classes),
                              flatten_levels(bbox_preds, 4), flatten_levels(centernesses, 1),
                              targets)
        positives = dense_positives(anchors, targets, pyramid,
                                    self.prior_generator.num_base_priors, self.num_classes,
                                    self.max_pos_coords)
        return losses, positives

    @float32_inputs
    def get_targets(self, anchors: Tensor, inside: list[Tensor],
                    featmap_sizes: list[tuple[int, int]],
                    data_samples: list[DetDataSample]) -> list[AnchorTargets]:
        """ATSS targets per image over all ``(N, 4)`` anchors; ``inside`` per image ``(N,)``."""
        num_level = [h * w * a for (h, w), a
                     in zip(featmap_sizes, self.prior_generator.num_base_priors)]
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
    def _losses(self, anchors: Tensor, cls_scores: Tensor, bbox_preds: Tensor,
                centernesses: Tensor, targets: list[AnchorTargets]) -> dict[str, Tensor]:
        """Official ATSS normalisers on the batch (``(B, N, K)`` predictions).

        Focal and centerness losses are divided by the number of positives (at least one
        per image) averaged over ranks; the GIoU loss is weighted by the centerness targets
        and divided by their sum averaged over ranks (at least 1).
        """
        labels = torch.stack([t.labels for t in targets]).flatten()
        label_weights = torch.stack([t.label_weights for t in targets]).flatten()
        gt_boxes = torch.cat([t.gt_boxes for t in targets])
        avg_factor = mean_over_ranks(sum(max(t.num_pos, 1) for t in targets), cls_scores)
        loss_cls = self.loss_cls(cls_scores.flatten(0, 1), labels, label_weights,
                                 avg_factor=avg_factor)

        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero().squeeze(1)
        bbox_preds, centernesses = bbox_preds.flatten(0, 1), centernesses.flatten()
        if len(pos) == 0:
            # zero losses that still reach every parameter (DDP needs all gradients)
            loss_bbox = bbox_preds.sum() * 0
            loss_centerness = centernesses.sum() * 0
            center_sum = 0.0
        else:
            pos_anchors = anchors.repeat(len(targets), 1)[pos]
            pos_gt = gt_boxes[pos]
            center = centerness_target(pos_anchors, pos_gt)
            loss_bbox = self._box_loss(pos_anchors, bbox_preds[pos], pos_gt, center)
            loss_centerness = self.loss_centerness(centernesses[pos], center,
                                                   avg_factor=avg_factor)
            center_sum = float(center.sum())
        bbox_avg_factor = max(mean_over_ranks(center_sum, cls_scores), 1.0)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox / bbox_avg_factor,
                    loss_centerness=loss_centerness)

    def _box_loss(self, anchors: Tensor, deltas: Tensor, gt_boxes: Tensor,
                  weight: Tensor) -> Tensor:
        """Summed (``avg_factor`` 1) box loss of the positives, weighted by ``weight``."""
        if self.reg_decoded_bbox:
            return self.loss_bbox(self.bbox_coder.decode(anchors, deltas), gt_boxes,
                                  weight=weight, avg_factor=1.0)
        return self.loss_bbox(deltas, self.bbox_coder.encode(anchors, gt_boxes),
                              weight=weight[:, None].expand_as(deltas), avg_factor=1.0)

    # ------------------------------------------------------------------ inference
    def predict(self, pyramid: list[Tensor], data_samples: list[DetDataSample],
                rescale: bool = True) -> list[InstanceData]:
        """Detections per image: ``bboxes (K, 4)`` xyxy (original image pixels when
        ``rescale``), ``scores (K,)`` = sigmoid class score * sigmoid centerness, ``labels``.
        """
        cls_scores, bbox_preds, centernesses = to_float32(self(pyramid))
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        level_anchors = self.prior_generator.grid_priors(
            sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)
        results = []
        for i, sample in enumerate(data_samples):
            levels = [(anchors, cls[i], reg[i], ctr[i]) for anchors, cls, reg, ctr
                      in zip(level_anchors, cls_scores, bbox_preds, centernesses)]
            results.append(self._predict_single(levels, sample, rescale))
        return results

    @float32_inputs
    def _predict_single(self, levels: list[tuple[Tensor, ...]], sample: DetDataSample,
                        rescale: bool) -> InstanceData:
        """MMDetection's dense-head post-processing for one image."""
        cfg, img_shape = self.test_cfg, input_shape(sample, 'img_shape')
        boxes, scores, labels = [], [], []
        for anchors, cls, reg, ctr in levels:
            probs = cls.permute(1, 2, 0).reshape(-1, self.num_classes).sigmoid()
            score, idx, label = top_scores(probs, cfg['score_thr'], cfg['nms_pre'])
            factor = ctr.permute(1, 2, 0).reshape(-1).sigmoid()[idx]
            deltas = reg.permute(1, 2, 0).reshape(-1, 4)[idx]
            boxes.append(self.bbox_coder.decode(anchors[idx], deltas, max_shape=img_shape))
            scores.append(score * factor)
            labels.append(label)
        return postprocess_dense(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                                 sample.metainfo, cfg, rescale)
