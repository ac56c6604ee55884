"""``DetTTAModel``: test-time augmentation (flip, multi-scale) over any codetr detector.

``tools/test.py --tta`` wraps ``cfg.model`` in ``cfg.tta_model`` and tests with
``cfg.tta_pipeline``, whose ``TestTimeAug`` makes several views of each image (resized to
each test scale, flipped and not). The detector predicts every view on its own, in
original-image pixels (``rescale=True``); this wrapper maps each view's boxes back to the
unflipped original image, concatenates the views and removes the duplicates with the
configured (soft-)NMS per class, keeping the ``max_per_img`` best. That is how MMDetection's
``DetTTAModel`` and the dense heads' ``aug_test_bboxes`` of the mmdet 2.x code Co-DETR was
built on merge views (the official Co-DETR query head itself raises "Not implemented" for
test-time augmentation).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from mmengine.model import BaseTTAModel
from mmengine.structures import InstanceData
from torch import nn

from codetr.registry import MODELS
from codetr.structures import DetDataSample, bbox_flip

from ..layers.nms import batched_nms

# Used when neither tta_cfg nor the predicting branch's test_cfg names them: MMDetection's
# TTA settings (its dataset configs' tta_model: NMS at IoU 0.5, 100 detections).
DEFAULT_NMS = dict(type='nms', iou_threshold=0.5)
DEFAULT_MAX_PER_IMG = 100


def branch_test_cfg(module: nn.Module) -> dict:
    """The test settings of the branch that predicts: ``test_cfg[eval_head]`` (the RoI stage
    of a two-stage head) or ``test_cfg['query_head']``; ``{}`` for a detector without them."""
    test_cfg = dict(getattr(module, 'test_cfg', None) or {})
    branch = getattr(module, 'eval_head', None) or 'query_head'
    cfg = dict(test_cfg.get(branch) or {})
    return dict(cfg.get('rcnn') or {}) if 'rcnn' in cfg else cfg


@MODELS.register_module()
class DetTTAModel(BaseTTAModel):
    """Merge a detector's predictions over the augmented views of each image.

    Args:
        module: the detector (config or module); ``tools/test.py --tta`` sets it to
            ``cfg.model``.
        tta_cfg: ``dict(nms=dict(type='nms' | 'soft_nms', iou_threshold=...),
            max_per_img=N)``. A missing key is taken from the test settings of the branch
            that predicts (``model.test_cfg.query_head``, or the aux head of
            ``eval_module``), else NMS at IoU 0.5 and 100 detections (MMDetection's TTA
            defaults): the merged views repeat each object, so some NMS is always applied.
        data_preprocessor: replaces the detector's, as in mmengine's ``BaseTTAModel``.

    An image with a single view keeps the detector's predictions (unflipped if the view
    was flipped): there is nothing to merge, and a second NMS would only alter them.
    """

    def __init__(self, module: dict | nn.Module, tta_cfg: dict | None = None,
                 data_preprocessor: dict | nn.Module | None = None) -> None:
        super().__init__(module=module, data_preprocessor=data_preprocessor)
        cfg = dict(tta_cfg or {})
        unknown = sorted(set(cfg) - {'nms', 'max_per_img'})
        if unknown:
            raise ValueError(f'tta_model.tta_cfg has unknown keys {unknown}; it takes nms and '
                             'max_per_img.')
        branch = branch_test_cfg(self.module)
        self.nms_cfg = copy.deepcopy(cfg.get('nms') or branch.get('nms') or DEFAULT_NMS)
        self.max_per_img = int(cfg.get('max_per_img') or branch.get('max_per_img')
                               or DEFAULT_MAX_PER_IMG)

    def merge_preds(self, data_samples_list: Sequence[Sequence[DetDataSample]]
                    ) -> list[DetDataSample]:
        """One merged sample per image from ``data_samples_list[image][view]``."""
        return [self._merge_views(list(views)) for views in data_samples_list]

    def _merge_views(self, views: list[DetDataSample]) -> DetDataSample:
        boxes, scores, labels, masks = [], [], [], []
        for view in views:
            pred = view.pred_instances
            boxes.append(self._unflipped(pred.bboxes, view.metainfo))
            scores.append(pred.scores)
            labels.append(pred.labels)
            if 'masks' in pred:  # (N, H, W) in original pixels, like the boxes
                masks.append(self._unflipped_masks(pred.masks, view.metainfo))
        if masks and len(masks) != len(views):
            raise ValueError('DetTTAModel: some views predicted masks and others did not')
        merged = views[0]
        if len(views) == 1:  # nothing to merge: the detector's own predictions, unflipped
            merged.pred_instances.bboxes = boxes[0]
            if masks:
                merged.pred_instances.masks = masks[0]
        else:
            merged.pred_instances = self.merge_boxes(
                torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                torch.cat(masks) if masks else None)
        merged.set_metainfo(dict(flip=False, flip_direction=None))
        return merged

    @staticmethod
    def _unflipped_masks(masks: torch.Tensor, meta: dict) -> torch.Tensor:
        """(N, H, W) masks of a view in original pixels -> the unflipped original image."""
        if not meta.get('flip', False):
            return masks
        dims = {'horizontal': [-1], 'vertical': [-2], 'diagonal': [-2, -1]}
        return masks.flip(dims[meta['flip_direction']])

    @staticmethod
    def _unflipped(bboxes: torch.Tensor, meta: dict) -> torch.Tensor:
        """(N, 4) xyxy boxes of a view in original pixels -> the unflipped original image."""
        if not meta.get('flip', False):
            return bboxes
        if 'ori_shape' not in meta or 'flip_direction' not in meta:
            raise KeyError('A flipped TTA view needs metainfo ori_shape and flip_direction; add '
                           "'ori_shape', 'flip', 'flip_direction' to PackDetInputs' meta_keys "
                           'in tta_pipeline.')
        return bbox_flip(bboxes, meta['ori_shape'], meta['flip_direction'])

    def merge_boxes(self, bboxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                    masks: torch.Tensor | None = None) -> InstanceData:
        """(N, 4) xyxy, (N,), (N,) (and (N, H, W) masks) over all views -> at most
        ``max_per_img`` after (soft-)NMS per class on the boxes, by descending (for soft-NMS,
        decayed) score; a kept box keeps its own view's mask."""
        extra = {} if masks is None else dict(masks=masks)
        if bboxes.numel() == 0:
            return InstanceData(bboxes=bboxes.reshape(0, 4), scores=scores, labels=labels,
                                **extra)
        dets, keep = batched_nms(bboxes, scores, labels, self.nms_cfg)
        dets, keep = dets[:self.max_per_img], keep[:self.max_per_img]
        if masks is not None:
            extra = dict(masks=masks[keep])
        return InstanceData(bboxes=dets[:, :4], scores=dets[:, 4], labels=labels[keep],
                            **extra)
