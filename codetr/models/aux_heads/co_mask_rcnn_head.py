"""Mask R-CNN auxiliary head of Co-DETR (paper Table 8): the Faster R-CNN aux head plus an
FCN mask branch.

Training: the RPN and RoI box losses and the positives handed to the decoder are exactly
those of :class:`CoRPNRoIHead`; the positive RoIs of its sampler also pool ``14 x 14``
features (``mask_roi_extractor`` over the first L adapter levels) for the mask head, whose
``28 x 28`` logit of each RoI's GT class is trained with BCE against the GT mask cut to the
RoI and resized (``loss_mask``).

Inference: :meth:`predict` gives the RoI head's boxes with their masks
(``eval_module='two-stage'``); :meth:`predict_masks` gives masks for any boxes, e.g. the
DETR head's (``CoDETR``'s ``test_cfg.mask_branch``). Masks are bool ``(D, H, W)`` in
original image pixels when ``rescale``.

Parameter names follow MMDetection's ``StandardRoIHead`` (``roi_head.mask_roi_extractor``,
``roi_head.mask_head.convs.i.conv``, ``.upsample``, ``.conv_logits``).
"""
from __future__ import annotations

import copy

import torch
from mmengine.structures import InstanceData
from torch import Tensor

from codetr.models.co_modules.positives import MAX_POS_COORDS, AuxPositives
from codetr.models.task_modules.samplers import SamplingResult
from codetr.registry import MODELS

from .co_rpn_roi_head import CoRPNRoIHead, RoIHead
from .fcn_mask_head import FCNMaskHead, mask_targets

# MMDetection's test_cfg.rcnn.mask_thr_binary default: a pixel is in the mask from p >= 0.5.
MASK_THR_BINARY = 0.5


class MaskRoIHead(RoIHead):
    """``RoIHead`` plus ``mask_roi_extractor`` and ``mask_head`` (FCN)."""

    def __init__(self, bbox_roi_extractor: dict, bbox_head: dict, mask_roi_extractor: dict,
                 mask_head: dict) -> None:
        super().__init__(bbox_roi_extractor, bbox_head)
        self.mask_roi_extractor = MODELS.build(mask_roi_extractor)
        mask_head = dict(mask_head)
        kind = mask_head.pop('type', 'FCNMaskHead')
        if kind != 'FCNMaskHead':
            raise ValueError(f"CoMaskRCNNHead implements roi.mask_head type 'FCNMaskHead' (Mask "
                             f'R-CNN), got {kind!r}')
        self.mask_head = FCNMaskHead(**mask_head)

    def forward_mask(self, pyramid: list[Tensor], boxes: list[Tensor]) -> Tensor:
        """``(K, num_classes, M, M)`` mask logits of the per-image ``boxes`` (xyxy input
        pixels), K = total number of boxes."""
        levels = len(self.mask_roi_extractor.featmap_strides)
        if len(pyramid) < levels:
            raise ValueError(f'roi.mask_roi_extractor has {levels} featmap_strides but the '
                             f'pyramid has only {len(pyramid)} levels')
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1)
                          for i, b in enumerate(boxes)])  # [K, 5]
        return self.mask_head(self.mask_roi_extractor(pyramid[:levels], rois))


def _scale_back(boxes: Tensor, meta: dict) -> Tensor:
    """Input-pixel xyxy boxes to original-image pixels (divided by ``scale_factor``)."""
    factor = meta.get('scale_factor')
    if factor is None:
        raise KeyError('predicting masks with rescale=True needs metainfo scale_factor (w, h), '
                       'which the Resize transform sets')
    sx, sy = (factor, factor) if isinstance(factor, (int, float)) else factor[:2]
    return boxes / boxes.new_tensor([sx, sy, sx, sy])


@MODELS.register_module()
class CoMaskRCNNHead(CoRPNRoIHead):
    """RPN + RoI box head + FCN mask head (Mask R-CNN) as a Co-DETR auxiliary head.

    Args:
        rpn: as :class:`CoRPNRoIHead`.
        roi: ``dict(bbox_roi_extractor, bbox_head, mask_roi_extractor=MODELS cfg
            (RoIAlign 14 x 14), mask_head=kwargs of FCNMaskHead)``.
        num_classes: when given, sets ``roi.bbox_head.num_classes`` and
            ``roi.mask_head.num_classes`` (a detector-level class count reaches both).
        train_cfg: as :class:`CoRPNRoIHead`; ``rcnn.mask_size`` (28), if given, must be the
            mask head's output size.
        test_cfg: as :class:`CoRPNRoIHead`; ``rcnn.mask_thr_binary`` (0.5) binarises masks.
        max_pos_coords: upper bound of the positives handed on per image.
    """

    def __init__(self, rpn: dict, roi: dict, num_classes: int | None = None,
                 train_cfg: dict | None = None, test_cfg: dict | None = None,
                 max_pos_coords: int = MAX_POS_COORDS) -> None:
        roi = copy.deepcopy(dict(roi))
        for part in ('bbox_head', 'mask_head', 'mask_roi_extractor'):
            if part not in roi:
                raise ValueError(f'CoMaskRCNNHead needs roi.{part}; got roi keys {sorted(roi)}')
        if num_classes is not None:
            for part in ('bbox_head', 'mask_head'):
                roi[part] = {**roi[part], 'num_classes': num_classes}
        super().__init__(rpn, roi, train_cfg=train_cfg, test_cfg=test_cfg,
                         max_pos_coords=max_pos_coords)
        mask_head = self.roi_head.mask_head
        if mask_head.num_classes != self.num_classes:
            raise ValueError(f'roi.mask_head.num_classes={mask_head.num_classes} differs from '
                             f'roi.bbox_head.num_classes={self.num_classes}; set num_classes '
                             'on the head to fill both')
        mask_size = ((train_cfg or {}).get('rcnn') or {}).get('mask_size', mask_head.mask_size)
        if mask_size != mask_head.mask_size:
            raise ValueError(f'train_cfg.rcnn.mask_size={mask_size} but the mask head predicts '
                             f'{mask_head.mask_size} px masks (2 x roi_feat_size)')

    @staticmethod
    def _build_roi_head(roi: dict) -> MaskRoIHead:
        return MaskRoIHead(**roi)

    def roi_loss(self, pyramid: list[Tensor], proposals: list[Tensor],
                 data_samples: list) -> tuple[dict[str, Tensor], AuxPositives]:
        """``loss_cls``, ``loss_bbox``, ``loss_mask`` and the positives (box branch's)."""
        samplings = self.sample_rois(proposals, data_samples)
        losses, positives = self.bbox_loss(pyramid, samplings)
        losses.update(self.mask_loss(pyramid, samplings, data_samples))
        return losses, positives

    def mask_loss(self, pyramid: list[Tensor], samplings: list[SamplingResult],
                  data_samples: list) -> dict[str, Tensor]:
        """Mask BCE of the positive RoIs against their GT masks cut to the RoI."""
        gt_masks = []
        for sample in data_samples:
            if 'masks' not in sample.gt_instances:
                raise ValueError('CoMaskRCNNHead trains on instance masks but a data sample has '
                                 'no gt_instances.masks: load them with '
                                 'LoadAnnotations(with_mask=True)')
            gt_masks.append(sample.gt_instances.masks)
        pos_rois = [s.pos_priors for s in samplings]
        logits = self.roi_head.forward_mask(pyramid, pos_rois)  # [P, num_classes, M, M]
        mask_head = self.roi_head.mask_head
        targets = mask_targets(pos_rois, [s.pos_assigned_gt_inds for s in samplings], gt_masks,
                               mask_head.mask_size)
        labels = torch.cat([s.pos_gt_labels for s in samplings])
        return mask_head.loss(logits, targets, labels)

    @torch.no_grad()
    def predict(self, pyramid: list[Tensor], data_samples: list,
                rescale: bool = True) -> list[InstanceData]:
        """The RoI head's detections (as :class:`CoRPNRoIHead`) with ``masks (D, H, W)``
        bool."""
        results = super().predict(pyramid, data_samples, rescale=False)
        return self.predict_masks(pyramid, results, data_samples, rescale=rescale)

    @torch.no_grad()
    def predict_masks(self, pyramid: list[Tensor], results: list[InstanceData],
                      data_samples: list, rescale: bool = True) -> list[InstanceData]:
        """Add ``masks`` to detections whose ``bboxes (D, 4)`` are xyxy input pixels.

        With ``rescale`` the boxes are mapped to the original image (divided by
        ``scale_factor``) and the masks pasted at ``ori_shape``; else at ``img_shape``.
        Each box's mask is its label's channel, binarised at ``test_cfg.rcnn.mask_thr_binary``.
        """
        boxes = [r.bboxes for r in results]
        logits = self.roi_head.forward_mask(pyramid, boxes).split([len(b) for b in boxes])
        threshold = self._cfg('test_cfg', 'rcnn').get('mask_thr_binary', MASK_THR_BINARY)
        for result, logit, sample in zip(results, logits, data_samples):
            meta = sample.metainfo
            shape = meta['ori_shape'][:2] if rescale else meta['img_shape'][:2]
            if rescale:
                result.bboxes = _scale_back(result.bboxes, meta)
            result.masks = self.roi_head.mask_head.predict(logit, result.bboxes, result.labels,
                                                           tuple(shape), threshold)
        return results
