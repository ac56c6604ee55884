"""Faster R-CNN auxiliary head of Co-DETR: an RPN and a RoI box head on the adapter pyramid.

Training (paper Table 1): RPN proposals (detached) are assigned to GT boxes by IoU (positive
>= 0.5, negative < 0.5), sampled with the GT boxes added, classified with a softmax over
``num_classes + 1`` and regressed with GIoU on decoded boxes. The sampled RoIs, their labels
and GT targets, plus each RoI's pooled feature averaged to ``(C,)``, are handed to the query
head as :class:`AuxPositives`.

Parameter names follow the MMDetection port (``rpn_head.rpn_conv``, ``rpn_head.rpn_cls``,
``rpn_head.rpn_reg``, ``roi_head.bbox_head.shared_convs.i``, ``roi_head.bbox_head.shared_fcs.i``,
``roi_head.bbox_head.fc_cls``, ``roi_head.bbox_head.fc_reg``) so checkpoints convert by a
prefix rename.

Loss weights in the config are this head's own (the official ones divided by
``lambda_2 * num_decoder_layers = 12``); CoDETR applies that factor to every key.
"""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.models.co_modules.positives import MAX_POS_COORDS, AuxPositives, select_positives
from codetr.models.task_modules.samplers import SamplingResult
from codetr.registry import MODELS, TASK_UTILS

from .roi_bbox_head import BBOX_HEADS
from .rpn import RPNHead

# The official CoStandardRoIHead truncates every image's sampled RoIs to
# min(2000, smallest per-image count in the batch) before handing them on.
MAX_HANDED_ON_ROIS = 2000


class RoIHead(nn.Module):
    """Container that keeps the port's ``roi_head.bbox_roi_extractor`` / ``roi_head.bbox_head``
    names: RoI feature pooling over the first L pyramid levels, then the box head."""

    def __init__(self, bbox_roi_extractor: dict, bbox_head: dict) -> None:
        super().__init__()
        self.bbox_roi_extractor = MODELS.build(bbox_roi_extractor)
        bbox_head = dict(bbox_head)
        kind = bbox_head.pop('type', 'ConvFCBBoxHead')
        if kind not in BBOX_HEADS:
            raise ValueError(f'roi.bbox_head type={kind!r} is not implemented; use one of '
                             f'{sorted(BBOX_HEADS)} (or drop the type key: ConvFCBBoxHead)')
        self.bbox_head = BBOX_HEADS[kind](**bbox_head)

    @property
    def num_levels(self) -> int:
        """L: the extractor pools from the first L pyramid levels (its ``featmap_strides``)."""
        return len(self.bbox_roi_extractor.featmap_strides)

    def forward(self, pyramid: list[Tensor], boxes: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """RoI features ``(K, C, S, S)``, logits ``(K, num_classes + 1)`` and deltas of the
        per-image ``boxes`` (xyxy input pixels), K = total number of boxes."""
        if len(pyramid) < self.num_levels:
            raise ValueError(f'roi.bbox_roi_extractor has {self.num_levels} featmap_strides but '
                             f'the pyramid has only {len(pyramid)} levels')
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1)
                          for i, b in enumerate(boxes)])  # (K, 5) [image index, x1, y1, x2, y2]
        roi_feats = self.bbox_roi_extractor(pyramid[:self.num_levels], rois)
        cls_score, deltas = self.bbox_head(roi_feats)
        return roi_feats, cls_score, deltas


def _untyped(cfg: dict, expected: str) -> dict:
    """``cfg`` without its optional ``type`` key (MMDetection configs name these sub-heads),
    which must then be the one sub-head this head implements."""
    cfg = dict(cfg)
    kind = cfg.pop('type', expected)
    if kind != expected:
        raise ValueError(f'CoRPNRoIHead only implements {expected}, got type={kind!r}; drop '
                         'the type key or write a new aux head')
    return cfg


def _ignored(data_sample) -> InstanceData | None:
    """The sample's ``ignored_instances`` (boxes the assigners may ignore), if it has any."""
    ignored = data_sample.get('ignored_instances', None)
    return ignored if ignored is not None and 'bboxes' in ignored else None


def _pad_shape(data_sample) -> tuple[int, int] | None:
    """``(h, w)`` of the padded input the anchors must start in, if the sample records it."""
    shape = data_sample.metainfo.get('pad_shape', data_sample.metainfo.get('batch_input_shape'))
    return None if shape is None else tuple(shape[:2])


@MODELS.register_module()
class CoRPNRoIHead(nn.Module):
    """RPN + RoI head (Faster R-CNN) used as a Co-DETR auxiliary head.

    Args:
        rpn: keyword arguments of :class:`RPNHead` (``in_channels``, ``feat_channels``,
            ``anchor_generator``, ``bbox_coder``, ``loss_cls``, ``loss_bbox``).
        roi: ``dict(bbox_roi_extractor=MODELS cfg, bbox_head=kwargs of ConvFCBBoxHead)``; the
            bbox head's optional ``type`` is ``ConvFCBBoxHead`` (default: 2 FCs),
            ``Shared2FCBBoxHead`` or ``Shared4Conv1FCBBoxHead`` (4 GN convs + 1 FC).
        train_cfg: ``dict(rpn=dict(assigner, sampler, allowed_border, pos_weight),
            rpn_proposal=dict(nms_pre, max_per_img, nms, min_bbox_size),
            rcnn=dict(assigner, sampler, pos_weight))``; needed by :meth:`loss` only.
        test_cfg: ``dict(rpn=<as rpn_proposal>, rcnn=dict(score_thr, nms, max_per_img))``;
            ``rpn`` also serves training when ``train_cfg`` has no ``rpn_proposal``.
        max_pos_coords: upper bound of the positives handed on per image.
    """

    # CoDETR evaluates through this head when test_cfg.eval_module == 'two-stage'.
    eval_kind = 'two-stage'
    # Where CoDETR(num_classes=...) puts the class count (the RPN is class-agnostic).
    num_classes_keys = ('roi.bbox_head.num_classes',)

    def __init__(self, rpn: dict, roi: dict, train_cfg: dict | None = None,
                 test_cfg: dict | None = None, max_pos_coords: int = MAX_POS_COORDS) -> None:
        super().__init__()
        self.rpn_head = RPNHead(**_untyped(rpn, 'RPNHead'))
        self.roi_head = self._build_roi_head(roi)
        self.num_classes = self.roi_head.bbox_head.num_classes
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.max_pos_coords = max_pos_coords
        if train_cfg is not None:
            self._build_training(train_cfg)

    @staticmethod
    def _build_roi_head(roi: dict) -> nn.Module:
        """The RoI-head container (a Mask R-CNN head adds its mask branch here)."""
        return RoIHead(**roi)

    def _build_training(self, train_cfg: dict) -> None:
        for stage in ('rpn', 'rcnn'):
            if stage not in train_cfg:
                raise ValueError(f'CoRPNRoIHead train_cfg needs a {stage!r} entry with assigner '
                                 f'and sampler; got keys {sorted(train_cfg)}')
            if train_cfg[stage].get('pos_weight', -1) > 0:
                raise ValueError(f'train_cfg.{stage}.pos_weight > 0 is not supported; use -1 '
                                 '(positives weigh 1, the official setting)')
        if train_cfg['rpn'].get('allowed_border', -1) >= 0:
            raise ValueError('train_cfg.rpn.allowed_border >= 0 is not supported; use -1 (every '
                             'anchor takes part, the official setting)')
        self.rpn_assigner = TASK_UTILS.build(train_cfg['rpn']['assigner'])
        self.rpn_sampler = TASK_UTILS.build(train_cfg['rpn']['sampler'])
        self.rcnn_assigner = TASK_UTILS.build(train_cfg['rcnn']['assigner'])
        self.rcnn_sampler = TASK_UTILS.build(train_cfg['rcnn']['sampler'])

    def _cfg(self, which: str, key: str, fallback: tuple[str, str] | None = None) -> dict:
        """``train_cfg[key]`` or ``test_cfg[key]`` (``which``), with an optional fallback."""
        cfg = getattr(self, which) or {}
        if key in cfg:
            return cfg[key]
        if fallback is not None:
            return self._cfg(*fallback)
        raise ValueError(f'CoRPNRoIHead needs {which}.{key}; set model.{which}.<head name>.{key}')

    def loss(self, pyramid: list[Tensor],
             data_samples: list) -> tuple[dict[str, Tensor], AuxPositives]:
        """RPN and RoI losses (this head's own weights) and the positives for the decoder.

        Args:
            pyramid: adapter levels ``(B, C, H_l, W_l)``, strides as the anchor generator's.
            data_samples: DetDataSamples with ``gt_instances`` (xyxy input pixels) and
                ``img_shape``.

        Returns:
            ``loss_rpn_cls``, ``loss_rpn_bbox``, ``loss_cls``, ``loss_bbox`` and the positives.
        """
        if self.train_cfg is None:
            raise ValueError('CoRPNRoIHead.loss needs a train_cfg; set model.train_cfg.<head '
                             'name>=dict(rpn=..., rpn_proposal=..., rcnn=...)')
        gt_bboxes = [s.gt_instances.bboxes for s in data_samples]
        cls_scores, bbox_preds = self.rpn_head(pyramid)
        anchors = self.rpn_head.anchors(pyramid)
        valid = [self.rpn_head.valid_flags(pyramid, _pad_shape(s)) for s in data_samples]
        losses = self.rpn_head.loss(cls_scores, bbox_preds, anchors, gt_bboxes,
                                    self.rpn_assigner, self.rpn_sampler,
                                    [_ignored(s) for s in data_samples], valid)
        proposals = self.rpn_head.proposals(
            cls_scores, bbox_preds, anchors, [s.metainfo['img_shape'][:2] for s in data_samples],
            self._cfg('train_cfg', 'rpn_proposal', fallback=('test_cfg', 'rpn')))
        roi_losses, positives = self.roi_loss(pyramid, [p.bboxes for p in proposals],
                                              data_samples)
        losses.update(roi_losses)
        return losses, positives

    def roi_loss(self, pyramid: list[Tensor], proposals: list[Tensor],
                 data_samples: list) -> tuple[dict[str, Tensor], AuxPositives]:
        """RoI-head losses and positives for given per-image ``(P_i, 4)`` xyxy proposals."""
        return self.bbox_loss(pyramid, self.sample_rois(proposals, data_samples))

    def sample_rois(self, proposals: list[Tensor], data_samples: list) -> list[SamplingResult]:
        """Per image: proposals assigned by IoU with ``train_cfg.rcnn.assigner`` and sampled
        (GT boxes added) with ``train_cfg.rcnn.sampler``."""
        samplings = []
        for boxes, sample in zip(proposals, data_samples):
            priors = InstanceData(priors=boxes.detach())
            gts = InstanceData(bboxes=sample.gt_instances.bboxes,
                               labels=sample.gt_instances.labels)
            assigned = self.rcnn_assigner.assign(priors, gts, _ignored(sample))
            samplings.append(self.rcnn_sampler.sample(assigned, priors, gts))
        return samplings

    def bbox_loss(self, pyramid: list[Tensor],
                  samplings: list[SamplingResult]) -> tuple[dict[str, Tensor], AuxPositives]:
        """Box-head losses of the sampled RoIs (ordered positives first) and the positives
        handed to the decoder."""
        rois = [s.priors for s in samplings]
        labels = [self._sampled(s.pos_gt_labels, len(s.neg_inds), self.num_classes)
                  for s in samplings]
        targets = [self._sampled(s.pos_gt_bboxes, len(s.neg_inds), 0.0) for s in samplings]
        roi_feats, cls_score, deltas = self.roi_head(pyramid, rois)
        losses = self.roi_head.bbox_head.loss(cls_score, deltas, torch.cat(rois),
                                              torch.cat(labels), torch.cat(targets))
        # the RoI feature averaged over its S x S cells: Co-Deformable-DETR's coord feature
        feats = roi_feats.mean((2, 3)).split([len(r) for r in rois])
        keep = min(MAX_HANDED_ON_ROIS, *(len(r) for r in rois))
        positives = select_positives([r[:keep] for r in rois], [lab[:keep] for lab in labels],
                                     [t[:keep] for t in targets], self.num_classes,
                                     feats=[f[:keep] for f in feats],
                                     max_pos_coords=self.max_pos_coords)
        return losses, positives

    @staticmethod
    def _sampled(pos_values: Tensor, num_neg: int, neg_fill: float) -> Tensor:
        """Positives' values followed by ``num_neg`` rows of ``neg_fill`` (RoI order)."""
        fill = pos_values.new_full((num_neg, *pos_values.shape[1:]), neg_fill)
        return torch.cat([pos_values, fill])

    @torch.no_grad()
    def predict(self, pyramid: list[Tensor], data_samples: list,
                rescale: bool = True) -> list[InstanceData]:
        """Detections per image: ``bboxes (D, 4)`` xyxy (original-image pixels when
        ``rescale``, else input pixels), ``scores (D,)``, ``labels (D,)``;
        D <= ``test_cfg.rcnn.max_per_img``."""
        metas = [s.metainfo for s in data_samples]
        cls_scores, bbox_preds = self.rpn_head(pyramid)
        proposals = self.rpn_head.proposals(
            cls_scores, bbox_preds, self.rpn_head.anchors(pyramid),
            [m['img_shape'][:2] for m in metas], self._cfg('test_cfg', 'rpn'))
        boxes = [p.bboxes for p in proposals]
        _, cls_score, deltas = self.roi_head(pyramid, boxes)
        sizes = [len(b) for b in boxes]
        rcnn_cfg = self._cfg('test_cfg', 'rcnn')
        return [self.roi_head.bbox_head.predict(c, d, b, meta, rcnn_cfg, rescale)
                for c, d, b, meta in zip(cls_score.split(sizes), deltas.split(sizes), boxes,
                                         metas)]
