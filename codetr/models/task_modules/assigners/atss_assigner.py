"""Adaptive Training Sample Selection (ATSS, Zhang et al. 2020): per-GT IoU thresholds."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.structures import InstanceData
from torch import Tensor

from codetr.registry import TASK_UTILS

from .assign_result import AssignResult

# MMDetection's ATSSAssigner: a prior's centre must lie this many pixels inside the GT box.
INSIDE_EPS = 0.01
# MMDetection's ATSSAssigner: the overlap of priors that are no positive candidate of a GT.
INF = 100000000


@TASK_UTILS.register_module()
class ATSSAssigner:
    """Assign priors (anchors) to GT boxes with ATSS.

    For every GT: on each level take the ``topk`` priors whose centres are closest to the GT
    centre; the GT's IoU threshold is the mean plus the (unbiased) standard deviation of
    these candidates' IoUs; candidates with IoU >= threshold whose centres lie inside the GT
    are positives. A prior positive for several GTs goes to the one it overlaps most.

    Args:
        topk: candidates per level and GT.
        alpha: if given, the overlap is ``sigmoid(score of the GT class) ** (1 - alpha) *
            IoU(predicted box, GT) ** alpha`` (dynamic ATSS) instead of the prior's IoU.
        iou_calculator: config of the IoU calculator.
        ignore_iof_thr: priors whose IoF with an ignored GT box exceeds this are ignored
            (``gt_inds = -1``) and never candidates; <= 0 disables it.
    """

    def __init__(self, topk: int = 9, alpha: float | None = None,
                 iou_calculator: dict | None = None, ignore_iof_thr: float = -1) -> None:
        if topk < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        self.topk = topk
        self.alpha = alpha
        self.iou_calculator = TASK_UTILS.build(iou_calculator or dict(type='BboxOverlaps2D'))
        self.ignore_iof_thr = ignore_iof_thr

    def assign(self, pred_instances: InstanceData, num_level_priors: Sequence[int],
               gt_instances: InstanceData,
               gt_instances_ignore: InstanceData | None = None) -> AssignResult:
        """Assign the ``P`` priors of one image.

        Args:
            pred_instances: ``priors (P, 4)`` xyxy pixels, levels concatenated in order;
                with ``alpha``, also ``bboxes (P, 4)`` decoded predictions and ``scores
                (P, num_classes)`` logits.
            num_level_priors: priors per level, summing to ``P``.
            gt_instances: ``bboxes (G, 4)`` xyxy pixels, ``labels (G,)``.
            gt_instances_ignore: ``bboxes`` of GT boxes to ignore, if any.

        Returns:
            ``AssignResult`` with 1-based ``gt_inds (P,)`` (0 background, -1 ignored),
            ``labels (P,)`` (-1 where not positive) and ``max_overlaps (P,)``: the overlap
            with the assigned GT, ``-INF`` where not positive (as MMDetection).
        """
        priors = pred_instances.priors[:, :4]
        gt_bboxes, gt_labels = gt_instances.bboxes, gt_instances.labels
        num_priors, num_gts = len(priors), len(gt_bboxes)
        if sum(num_level_priors) != num_priors:
            raise ValueError(f'num_level_priors sums to {sum(num_level_priors)} but there are '
                             f'{num_priors} priors')
        gt_inds = priors.new_zeros((num_priors,), dtype=torch.long)
        if num_gts == 0 or num_priors == 0:
            return AssignResult(num_gts, gt_inds, priors.new_zeros((num_priors,)),
                                gt_inds.new_full((num_priors,), -1))
        overlaps = self._overlaps(pred_instances, priors, gt_bboxes, gt_labels)  # (P, G)
        centres = (priors[:, :2] + priors[:, 2:]) / 2
        gt_centres = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2
        distances = (centres[:, None, :] - gt_centres[None, :, :]).pow(2).sum(-1).sqrt()
        ignored = self._ignored(priors, gt_instances_ignore)
        if ignored is not None:
            distances[ignored] = INF
            gt_inds[ignored] = -1

        candidates = self._candidates(distances, num_level_priors)  # (K, G)
        cand_overlaps = overlaps.gather(0, candidates)
        threshold = cand_overlaps.mean(0) + cand_overlaps.std(0)
        cand_centres = centres[candidates]  # (K, G, 2)
        inside = torch.cat([cand_centres - gt_bboxes[None, :, :2],
                            gt_bboxes[None, :, 2:] - cand_centres], dim=-1).amin(-1) > INSIDE_EPS
        is_pos = (cand_overlaps >= threshold) & inside

        # overlaps kept only where a prior is a positive candidate of a GT; max picks the GT
        gt_cols = torch.arange(num_gts, device=priors.device).expand_as(candidates)
        pos_rows, pos_cols = candidates[is_pos], gt_cols[is_pos]
        pos_overlaps = torch.full_like(overlaps, -INF)
        pos_overlaps[pos_rows, pos_cols] = overlaps[pos_rows, pos_cols]
        max_overlaps, argmax = pos_overlaps.max(dim=1)
        assigned = max_overlaps != -INF
        gt_inds[assigned] = argmax[assigned] + 1
        labels = gt_inds.new_full((num_priors,), -1)
        labels[assigned] = gt_labels[argmax[assigned]].long()
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)

    def _overlaps(self, pred_instances: InstanceData, priors: Tensor, gt_bboxes: Tensor,
                  gt_labels: Tensor) -> Tensor:
        """``(P, G)`` overlap of every prior (or prediction, with ``alpha``) with every GT."""
        if self.alpha is None:
            return self.iou_calculator(priors, gt_bboxes)
        if 'bboxes' not in pred_instances or 'scores' not in pred_instances:
            raise ValueError('ATSSAssigner with alpha needs pred_instances.bboxes (decoded '
                             'predictions) and pred_instances.scores (class logits)')
        cls_cost = pred_instances.scores[:, gt_labels].sigmoid()
        ious = self.iou_calculator(pred_instances.bboxes, gt_bboxes)
        return cls_cost ** (1 - self.alpha) * ious ** self.alpha

    def _ignored(self, priors: Tensor, gt_instances_ignore: InstanceData | None) -> Tensor | None:
        """``(P,)`` bool: IoF with an ignored GT box above ``ignore_iof_thr``; or ``None``."""
        if (self.ignore_iof_thr <= 0 or gt_instances_ignore is None
                or len(gt_instances_ignore.bboxes) == 0):
            return None
        iof = self.iou_calculator(priors, gt_instances_ignore.bboxes, mode='iof')
        return iof.max(dim=1).values > self.ignore_iof_thr

    def _candidates(self, distances: Tensor, num_level_priors: Sequence[int]) -> Tensor:
        """``(K, G)`` prior indices: per level, the ``topk`` closest centres to each GT."""
        candidates = []
        for level_distances, start in zip(distances.split(list(num_level_priors)),
                                          _starts(num_level_priors)):
            k = min(self.topk, len(level_distances))
            if k == 0:
                continue
            _, idx = level_distances.topk(k, dim=0, largest=False)
            candidates.append(idx + start)
        return torch.cat(candidates, dim=0)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(topk={self.topk}, alpha={self.alpha})'


def _starts(counts: Sequence[int]) -> list[int]:
    """Offsets of consecutive blocks of sizes ``counts``."""
    starts, total = [], 0
    for count in counts:
        starts.append(total)
        total += count
    return starts
