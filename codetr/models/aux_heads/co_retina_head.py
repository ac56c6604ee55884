"""CoRetinaHead: the RetinaNet auxiliary head of Co-DETR (paper Table 1).

Nine anchors per location (3 octave scales x 3 ratios), max-IoU assignment (IoU >= 0.5
positive, < 0.4 negative, each GT's best anchor positive as well), focal loss and GIoU on
decoded boxes, both divided by the number of positives (MMDetection's RetinaNet). Its
``loss`` hands every anchor with its label and GT box to the decoder, like the ATSS head.

Parameter names follow MMDetection's ``RetinaHead``: ``cls_convs.i.conv``, ``reg_convs.i.conv``,
``retina_cls``, ``retina_reg``.
"""
from __future__ import annotations

import copy

import torch
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.registry import MODELS, TASK_UTILS
from codetr.structures import DetDataSample

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
    top_scores,
)

# MMDetection's RetinaNet settings (configs/_base_/models/retinanet_r50_fpn.py) on the
# Co-DINO pyramid strides; GIoU weight 2 on decoded boxes as the ATSS aux head.
RETINA_ANCHOR_GENERATOR = dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                               ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64, 128])
RETINA_BBOX_CODER = dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                         target_stds=[0.1, 0.1, 0.2, 0.2])
RETINA_TRAIN_CFG = dict(
    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                  ignore_iof_thr=-1),
    allowed_border=-1, pos_weight=-1)
RETINA_TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                       nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)


@MODELS.register_module()
class CoRetinaHead(BaseModule):
    """RetinaNet aux head with one stacked conv per branch and GIoU on decoded boxes.

    Args:
        num_classes: foreground classes (the background label is ``num_classes``).
        in_channels: pyramid width.
        stacked_convs: conv -> [norm] -> ReLU blocks per branch (Co-DETR aux heads: 1).
        feat_channels: width of the conv towers.
        norm_cfg: norm of the towers; ``None`` (RetinaNet's default) gives biased convs.
        anchor_generator, bbox_coder: ``TASK_UTILS`` configs; one stride per pyramid level.
        loss_cls, loss_bbox: ``MODELS`` loss configs.
        reg_decoded_bbox: box loss on decoded boxes (GIoU) instead of encoded deltas.
        train_cfg: ``assigner`` (MaxIoUAssigner), ``allowed_border``, ``pos_weight``.
        test_cfg: ``nms_pre``, ``min_bbox_size``, ``score_thr``, ``nms``, ``max_per_img``.
        max_pos_coords: most positive queries handed on per image.
    """

    # CoDETR evaluates through this head when test_cfg.eval_module == 'one-stage'.
    eval_kind = 'one-stage'

    def __init__(self, num_classes: int, in_channels: int = 256, stacked_convs: int = 1,
                 feat_channels: int = 256, norm_cfg: dict | None = None,
                 anchor_generator: dict | None = None, bbox_coder: dict | None = None,
                 loss_cls: dict | None = None, loss_bbox: dict | None = None,
                 reg_decoded_bbox: bool = True, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, max_pos_coords: int = MAX_POS_COORDS,
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.num_classes = num_classes
        self.reg_decoded_bbox = reg_decoded_bbox
        self.max_pos_coords = max_pos_coords
        self.train_cfg = {**RETINA_TRAIN_CFG, **(train_cfg or {})}
        self.test_cfg = {**RETINA_TEST_CFG, **(test_cfg or {})}
        check_sampler(self.train_cfg, 'CoRetinaHead')
        self.prior_generator = TASK_UTILS.build(copy.deepcopy(
            anchor_generator or RETINA_ANCHOR_GENERATOR))
        self.bbox_coder = TASK_UTILS.build(copy.deepcopy(bbox_coder or RETINA_BBOX_CODER))
        self.assigner = TASK_UTILS.build(copy.deepcopy(self.train_cfg['assigner']))
        self.loss_cls = MODELS.build(loss_cls or dict(
            type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))
        self.loss_bbox = MODELS.build(loss_bbox or dict(type='GIoULoss', loss_weight=2.0))

        num_anchors = self.prior_generator.num_base_priors[0]
        self.num_anchors = num_anchors
        self.cls_convs = build_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.reg_convs = build_tower(in_channels, feat_channels, stacked_convs, norm_cfg)
        self.retina_cls = nn.Conv2d(feat_channels, num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(feat_channels, num_anchors * 4, 3, padding=1)
        self._reset_parameters()

    def init_weights(self) -> None:
        """The default scheme again, unless ``init_cfg`` (e.g. a checkpoint) says otherwise."""
        super().init_weights()
        if self.init_cfg is None:
            self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Normal(0, 0.01) convs and class bias at prior 0.01 (MMDetection's RetinaHead)."""
        init_dense_head(self, self.retina_cls)

    def forward(self, pyramid: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``(B, C, H, W)`` -> class logits ``(B, A * num_classes, H, W)`` and box
        deltas ``(B, A * 4, H, W)``."""
        check_levels(pyramid, self.prior_generator.num_levels, 'CoRetinaHead')
        cls_scores, bbox_preds = [], []
        for feat in pyramid:
            cls_feat, reg_feat = feat, feat
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            cls_scores.append(self.retina_cls(cls_feat))
            bbox_preds.append(self.retina_reg(reg_feat))
        return cls_scores, bbox_preds

    # ------------------------------------------------------------------ training
    def loss(self, pyramid: list[Tensor], data_samples: list[DetDataSample]
             ) -> tuple[dict[str, Tensor], AuxPositives]:
        """Focal and box losses, and the positives handed to the decoder.

        Returns:
            ``loss_cls``, ``loss_bbox`` (this head's own weights) and the
            :class:`AuxPositives` made from all anchors with their max-IoU labels.
        """
        # float32 from here on: anchors, targets and losses never run in autocast's bf16
        cls_scores, bbox_preds = to_float32(self(pyramid))
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        _, anchors, inside = image_anchors(self.prior_generator, sizes, data_samples,
                                           self.train_cfg['allowed_border'], cls_scores[0])
        targets = self.get_targets(anchors, inside, data_samples)
        losses = self._losses(anchors, flatten_levels(cls_scores, self.num_classes),
                              flatten_levels(bbox_preds, 4), targets)
        positives = dense_positives(anchors, targets, pyramid,
                                    self.prior_generator.num_base_priors, self.num_classes,
                                    self.max_pos_coords)
        return losses, positives

    @float32_inputs
    def get_targets(self, anchors: Tensor, inside: list[Tensor],
                    data_samples: list[DetDataSample]) -> list[AnchorTargets]:
        """Max-IoU targets per image over all ``(N, 4)`` anchors; ``inside`` per image ``(N,)``."""
        return [anchor_targets(anchors, flags, sample, self.num_classes,
                               self.train_cfg['pos_weight'], self.assigner.assign)
                for flags, sample in zip(inside, data_samples)]

    @float32_inputs
    def _losses(self, anchors: Tensor, cls_scores: Tensor, bbox_preds: Tensor,
                targets: list[AnchorTargets]) -> dict[str, Tensor]:
        """Both losses divided by the positives of the batch (at least one per image), as
        MMDetection's AnchorHead with a PseudoSampler (no averaging over ranks)."""
        labels = torch.stack([t.labels for t in targets]).flatten()
        label_weights = torch.stack([t.label_weights for t in targets]).flatten()
        gt_boxes = torch.cat([t.gt_boxes for t in targets])
        avg_factor = float(sum(max(t.num_pos, 1) for t in targets))
        loss_cls = self.loss_cls(cls_scores.flatten(0, 1), labels, label_weights,
                                 avg_factor=avg_factor)
        pos = ((labels >= 0) & (labels < self.num_classes)).nonzero().squeeze(1)
        bbox_preds = bbox_preds.flatten(0, 1)
        if len(pos) == 0:
            # a zero loss that still reaches every parameter (DDP needs all gradients)
            return dict(loss_cls=loss_cls, loss_bbox=bbox_preds.sum() * 0)
        pos_anchors = anchors.repeat(len(targets), 1)[pos]
        if self.reg_decoded_bbox:
            loss_bbox = self.loss_bbox(self.bbox_coder.decode(pos_anchors, bbox_preds[pos]),
                                       gt_boxes[pos], avg_factor=avg_factor)
        else:
            loss_bbox = self.loss_bbox(bbox_preds[pos],
                                       self.bbox_coder.encode(pos_anchors, gt_boxes[pos]),
                                       avg_factor=avg_factor)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    # ------------------------------------------------------------------ inference
    def predict(self, pyramid: list[Tensor], data_samples: list[DetDataSample],
                rescale: bool = True) -> list[InstanceData]:
        """Detections per image: ``bboxes (K, 4)`` xyxy (original image pixels when
        ``rescale``), ``scores (K,)`` sigmoid class scores, ``labels (K,)``."""
        cls_scores, bbox_preds = to_float32(self(pyramid))
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        level_anchors = self.prior_generator.grid_priors(
            sizes, dtype=cls_scores[0].dtype, device=cls_scores[0].device)
        results = []
        for i, sample in enumerate(data_samples):
            levels = [(anchors, cls[i], reg[i])
                      for anchors, cls, reg in zip(level_anchors, cls_scores, bbox_preds)]
            results.append(self._predict_single(levels, sample, rescale))
        return results

    @float32_inputs
    def _predict_single(self, levels: list[tuple[Tensor, Tensor, Tensor]],
                        sample: DetDataSample, rescale: bool) -> InstanceData:
        """One image from per-level (anchors, cls (A * K, H, W), deltas (A * 4, H, W))."""
        cfg, img_shape = self.test_cfg, input_shape(sample, 'img_shape')
        boxes, scores, labels = [], [], []
        for anchors, cls, reg in levels:
            probs = cls.permute(1, 2, 0).reshape(-1, self.num_classes).sigmoid()
            score, idx, label = top_scores(probs, cfg['score_thr'], cfg['nms_pre'])
            deltas = reg.permute(1, 2, 0).reshape(-1, 4)[idx]
            boxes.append(self.bbox_coder.decode(anchors[idx], deltas, max_shape=img_shape))
            scores.append(score)
            labels.append(label)
        return postprocess_dense(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                                 sample.metainfo, cfg, rescale)
