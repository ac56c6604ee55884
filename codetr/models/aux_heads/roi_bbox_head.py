"""Box head of the Faster R-CNN aux head: shared convs and FCs, then class scores and box
regression (MMDetection's ``ConvFCBBoxHead`` without separate branches; its
``Shared2FCBBoxHead`` is 0 convs + 2 FCs, its ``Shared4Conv1FCBBoxHead`` 4 convs + 1 FC)."""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torch import Tensor, nn

from codetr.models.layers.nms import multiclass_nms
from codetr.models.necks.channel_mapper import ConvNormAct
from codetr.models.utils import float32_inputs
from codetr.registry import MODELS, TASK_UTILS
from codetr.structures import scale_boxes

# MMDetection's BBoxHead initialisation: Normal std 0.01 (fc_cls) / 0.001 (fc_reg); the shared
# FCs use Xavier-uniform (ConvFCBBoxHead). Biases are zero.
CLS_INIT_STD = 0.01
REG_INIT_STD = 0.001


class ConvFCBBoxHead(nn.Module):
    """Classify and refine RoIs from their ``(C, S, S)`` pooled features.

    Args:
        in_channels: channels ``C`` of the RoI features.
        fc_out_channels: width of the shared FCs.
        roi_feat_size: side ``S`` of the pooled RoI features.
        num_classes: object classes; the classifier has ``num_classes + 1`` outputs (last =
            background).
        bbox_coder: ``TASK_UTILS`` config of the RoI -> box delta coder.
        reg_class_agnostic: one box per RoI instead of one per class.
        reg_decoded_bbox: the box loss compares decoded xyxy boxes (for IoU-type losses)
            instead of deltas.
        loss_cls: ``MODELS`` config of the softmax classification loss.
        loss_bbox: ``MODELS`` config of the box loss.
        num_shared_convs: 3x3 conv + norm + ReLU layers before the FCs (names
            ``shared_convs.i.conv`` / ``shared_convs.i.gn``, MMDetection's ``ConvModule``).
        num_shared_fcs: FC + ReLU layers (at least 1).
        conv_out_channels: width of the shared convs.
        norm_cfg: norm of the shared convs (mmcv config; ``None``: none, convs with bias).
    """

    def __init__(self, in_channels: int, fc_out_channels: int, roi_feat_size: int,
                 num_classes: int, bbox_coder: dict, loss_cls: dict, loss_bbox: dict,
                 reg_class_agnostic: bool = False, reg_decoded_bbox: bool = True,
                 num_shared_convs: int = 0, num_shared_fcs: int = 2,
                 conv_out_channels: int = 256, norm_cfg: dict | None = None) -> None:
        super().__init__()
        if num_shared_fcs < 1 or num_shared_convs < 0:
            raise ValueError(f'bbox_head needs num_shared_fcs >= 1 and num_shared_convs >= 0, '
                             f'got {num_shared_fcs} / {num_shared_convs}')
        if loss_cls.get('use_sigmoid', False):
            raise ValueError('roi.bbox_head.loss_cls must be a softmax loss over num_classes + 1 '
                             '(CrossEntropyLoss with use_sigmoid=False)')
        self.num_classes = num_classes
        self.reg_class_agnostic = reg_class_agnostic
        self.reg_decoded_bbox = reg_decoded_bbox
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.shared_convs = nn.ModuleList(
            ConvNormAct(in_channels if i == 0 else conv_out_channels, conv_out_channels, 3,
                        norm_cfg=norm_cfg, act_cfg=dict(type='ReLU'))
            for i in range(num_shared_convs))
        for conv in self.shared_convs:  # ConvModule's init: Kaiming normal, fan-out, ReLU
            nn.init.kaiming_normal_(conv.conv.weight, mode='fan_out', nonlinearity='relu')
        flat = (conv_out_channels if num_shared_convs else in_channels) * roi_feat_size ** 2
        self.shared_fcs = nn.ModuleList(
            nn.Linear(flat if i == 0 else fc_out_channels, fc_out_channels)
            for i in range(num_shared_fcs))
        self.fc_cls = nn.Linear(fc_out_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 4 * (1 if reg_class_agnostic else num_classes))
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
        nn.init.normal_(self.fc_cls.weight, std=CLS_INIT_STD)
        nn.init.normal_(self.fc_reg.weight, std=REG_INIT_STD)
        for fc in (*self.shared_fcs, self.fc_cls, self.fc_reg):
            nn.init.zeros_(fc.bias)

    def forward(self, roi_feats: Tensor) -> tuple[Tensor, Tensor]:
        """``(K, C, S, S)`` -> logits ``(K, num_classes + 1)`` and deltas ``(K, 4 * classes)``."""
        for conv in self.shared_convs:
            roi_feats = conv(roi_feats)
        hidden = roi_feats.flatten(1)
        for fc in self.shared_fcs:
            hidden = torch.relu(fc(hidden))
        return self.fc_cls(hidden), self.fc_reg(hidden)

    def _class_boxes(self, rois: Tensor, deltas: Tensor, labels: Tensor) -> Tensor:
        """``(K, 4)`` deltas of each RoI's own class (``labels`` in ``[0, num_classes)``)."""
        if self.reg_class_agnostic:
            return deltas
        return deltas.view(len(rois), -1, 4)[torch.arange(len(rois)), labels]

    @float32_inputs
    def loss(self, cls_score: Tensor, deltas: Tensor, rois: Tensor, labels: Tensor,
             gt_bboxes: Tensor) -> dict[str, Tensor]:
        """Classification and box losses of the sampled RoIs of a batch.

        Args:
            cls_score: ``(K, num_classes + 1)`` logits.
            deltas: ``(K, 4 * classes)`` predicted deltas.
            rois: ``(K, 4)`` xyxy sampled RoIs (input pixels).
            labels: ``(K,)`` assigned class; ``num_classes`` for background.
            gt_bboxes: ``(K, 4)`` xyxy assigned GT box (any value for background).

        Returns:
            ``loss_cls`` averaged over the K RoIs; ``loss_bbox`` over the positives, divided
            by K as well (MMDetection's bbox head), zero when there is no positive.
        """
        num = max(len(labels), 1)
        losses = dict(loss_cls=self.loss_cls(cls_score, labels, avg_factor=num))
        pos = (labels >= 0) & (labels < self.num_classes)
        if not pos.any():
            # keeps fc_reg in the graph so distributed gradient reduction sees every parameter
            losses['loss_bbox'] = deltas.sum() * 0
            return losses
        pos_deltas = self._class_boxes(rois[pos], deltas[pos], labels[pos])
        if self.reg_decoded_bbox:
            pred, target = self.bbox_coder.decode(rois[pos], pos_deltas), gt_bboxes[pos]
        else:
            pred, target = pos_deltas, self.bbox_coder.encode(rois[pos], gt_bboxes[pos])
        losses['loss_bbox'] = self.loss_bbox(pred, target, torch.ones_like(pred), avg_factor=num)
        return losses

    @float32_inputs
    def predict(self, cls_score: Tensor, deltas: Tensor, rois: Tensor, img_meta: dict,
                cfg: dict, rescale: bool = True) -> InstanceData:
        """One image's detections: softmax scores, per-class boxes, multi-class NMS.

        Args:
            cls_score / deltas: ``(K, ...)`` head outputs for the image's K proposals.
            rois: ``(K, 4)`` xyxy proposals (input pixels).
            img_meta: metainfo with ``img_shape`` (clipping) and ``scale_factor`` (rescale).
            cfg: ``test_cfg.rcnn``: ``score_thr``, ``nms``, ``max_per_img``.
            rescale: map boxes back to the original image.

        Returns:
            ``bboxes (D, 4)`` xyxy, ``scores (D,)``, ``labels (D,)`` with D <= max_per_img.
        """
        scores = cls_score.softmax(-1)
        boxes = self.bbox_coder.decode(rois, deltas, max_shape=img_meta['img_shape'][:2])
        if rescale and len(boxes):
            sx, sy = img_meta['scale_factor'][:2]
            boxes = scale_boxes(boxes.view(-1, 4), (1 / sx, 1 / sy)).view(len(rois), -1)
        dets, labels = multiclass_nms(boxes, scores, cfg.get('score_thr', 0.0), cfg['nms'],
                                      cfg.get('max_per_img', -1))
        return InstanceData(bboxes=dets[:, :4], scores=dets[:, 4], labels=labels)


class Shared2FCBBoxHead(ConvFCBBoxHead):
    """:class:`ConvFCBBoxHead` with two shared FCs and no convs (the R50 configs' head)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(num_shared_convs=0, num_shared_fcs=2, **kwargs)


class Shared4Conv1FCBBoxHead(ConvFCBBoxHead):
    """:class:`ConvFCBBoxHead` with four shared 3x3 convs (GroupNorm by default) and one FC."""

    def __init__(self, norm_cfg: dict | None = None, **kwargs) -> None:
        norm_cfg = dict(type='GN', num_groups=32) if norm_cfg is None else norm_cfg
        super().__init__(num_shared_convs=4, num_shared_fcs=1, norm_cfg=norm_cfg, **kwargs)


# The ``type`` names an RoI head config may give its bbox_head.
BBOX_HEADS = {cls.__name__: cls for cls in
              (ConvFCBBoxHead, Shared2FCBBoxHead, Shared4Conv1FCBBoxHead)}
