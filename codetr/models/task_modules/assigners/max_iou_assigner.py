"""IoU-threshold assignment of priors / proposals to GT boxes (RPN, RetinaNet, R-CNN)."""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torch import Tensor

from codetr.registry import TASK_UTILS

from .assign_result import AssignResult


@TASK_UTILS.register_module()
class MaxIoUAssigner:
    """Assign each prior to the GT it overlaps most, by IoU thresholds.

    A prior whose max IoU is in ``[0, neg_iou_thr)`` (or in the ``(lo, hi)`` range) is
    background; one with max IoU ``>= pos_iou_thr`` is positive for its best GT; the rest
    are ignored (``gt_inds = -1``). With ``match_low_quality``, each GT then takes its
    best prior(s) if their IoU is ``>= min_pos_iou``, overriding the above (later GTs win
    ties between GTs).

    Args:
        pos_iou_thr: IoU for positives.
        neg_iou_thr: IoU below which (float) or range ``(lo, hi)`` in which priors are
            negatives.
        min_pos_iou: smallest IoU of a low-quality match.
        gt_max_assign_all: a GT takes every prior that reaches its best IoU, not only the first.
        ignore_iof_thr: priors overlapping an ignored GT box by more than this IoF are ignored;
            <= 0 disables it.
        ignore_wrt_candidates: IoF relative to the prior (True) or to the ignored box.
        match_low_quality: give each GT its best prior(s) (RPN, RetinaNet: True; R-CNN: False).
        gpu_assign_thr: with more GTs than this, compute on the CPU to save device memory;
            <= 0 disables it.
        iou_calculator: config of the IoU calculator.
    """

    def __init__(self, pos_iou_thr: float, neg_iou_thr: float | tuple[float, float],
                 min_pos_iou: float = 0., gt_max_assign_all: bool = True,
                 ignore_iof_thr: float = -1, ignore_wrt_candidates: bool = True,
                 match_low_quality: bool = True, gpu_assign_thr: float = -1,
                 iou_calculator: dict | None = None) -> None:
        if not isinstance(neg_iou_thr, (int, float)) and len(neg_iou_thr) != 2:
            raise ValueError(f'neg_iou_thr must be a number or a (lo, hi) pair, got {neg_iou_thr}')
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality
        self.gpu_assign_thr = gpu_assign_thr
        self.iou_calculator = TASK_UTILS.build(iou_calculator or dict(type='BboxOverlaps2D'))

    def assign(self, pred_instances: InstanceData, gt_instances: InstanceData,
               gt_instances_ignore: InstanceData | None = None) -> AssignResult:
        """Assign the ``P`` priors of one image.

        Args:
            pred_instances: ``priors (P, 4)`` xyxy pixels (a fifth score column is ignored).
            gt_instances: ``bboxes (G, 4)`` xyxy pixels, ``labels (G,)``.
            gt_instances_ignore: ``bboxes`` of GT boxes to ignore, if any.

        Returns:
            ``AssignResult`` with 1-based ``gt_inds (P,)`` (0 negative, -1 ignored),
            ``max_overlaps (P,)`` (each prior's best IoU) and ``labels (P,)`` (-1 unless
            positive).
        """
        priors, gt_bboxes, gt_labels = (pred_instances.priors, gt_instances.bboxes,
                                        gt_instances.labels)
        ignore = None if gt_instances_ignore is None else gt_instances_ignore.bboxes
        device = priors.device
        on_cpu = 0 < self.gpu_assign_thr < len(gt_bboxes)
        if on_cpu:
            priors, gt_bboxes, gt_labels = priors.cpu(), gt_bboxes.cpu(), gt_labels.cpu()
            ignore = None if ignore is None else ignore.cpu()
        overlaps = self.iou_calculator(gt_bboxes, priors)  # (G, P)
        ignored = self._ignored(priors, ignore)
        if ignored is not None:
            overlaps[:, ignored] = -1
        result = self.assign_wrt_overlaps(overlaps, gt_labels)
        if on_cpu:
            result.gt_inds = result.gt_inds.to(device)
            result.max_overlaps = result.max_overlaps.to(device)
            result.labels = result.labels.to(device)
        return result

    def _ignored(self, priors: Tensor, ignore: Tensor | None) -> Tensor | None:
        """``(P,)`` bool: IoF with an ignored box above ``ignore_iof_thr``; or ``None``."""
        if self.ignore_iof_thr <= 0 or ignore is None or len(ignore) == 0 or len(priors) == 0:
            return None
        if self.ignore_wrt_candidates:
            iof = self.iou_calculator(priors, ignore, mode='iof').max(dim=1).values
        else:
            iof = self.iou_calculator(ignore, priors, mode='iof').max(dim=0).values
        return iof > self.ignore_iof_thr

    def assign_wrt_overlaps(self, overlaps: Tensor, gt_labels: Tensor) -> AssignResult:
        """Assign from a ``(G, P)`` IoU matrix; see the class docstring for the rules."""
        num_gts, num_priors = overlaps.shape
        gt_inds = overlaps.new_full((num_priors,), -1, dtype=torch.long)
        if num_gts == 0 or num_priors == 0:
            if num_gts == 0:
                gt_inds[:] = 0
            return AssignResult(num_gts, gt_inds, overlaps.new_zeros((num_priors,)),
                                gt_inds.new_full((num_priors,), -1))
        max_overlaps, argmax = overlaps.max(dim=0)
        if isinstance(self.neg_iou_thr, (int, float)):
            negative = (max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)
        else:
            negative = (max_overlaps >= self.neg_iou_thr[0]) & (max_overlaps < self.neg_iou_thr[1])
        gt_inds[negative] = 0
        positive = max_overlaps >= self.pos_iou_thr
        gt_inds[positive] = argmax[positive] + 1
        if self.match_low_quality:
            low_quality = self._low_quality_matches(overlaps)
            gt_inds = torch.where(low_quality > 0, low_quality, gt_inds)
        labels = gt_inds.new_full((num_priors,), -1)
        assigned = gt_inds > 0
        labels[assigned] = gt_labels[gt_inds[assigned] - 1].long()
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)

    def _low_quality_matches(self, overlaps: Tensor) -> Tensor:
        """``(P,)`` 1-based index of the GT that takes the prior as its best one, else 0.

        A GT whose best IoU is below ``min_pos_iou`` takes nothing. When several GTs take
        the same prior the highest GT index wins, as a loop over GTs in order would give.
        """
        num_gts, num_priors = overlaps.shape
        gt_max, gt_argmax = overlaps.max(dim=1)
        eligible = gt_max >= self.min_pos_iou  # (G,)
        one_based = torch.arange(1, num_gts + 1, device=overlaps.device)
        if self.gt_max_assign_all:
            takes = (overlaps == gt_max[:, None]) & eligible[:, None]  # (G, P)
            return (takes.long() * one_based[:, None]).amax(dim=0)
        best = overlaps.new_zeros((num_priors,), dtype=torch.long)
        return best.scatter_reduce(0, gt_argmax[eligible], one_based[eligible], reduce='amax')

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(pos_iou_thr={self.pos_iou_thr}, '
                f'neg_iou_thr={self.neg_iou_thr}, min_pos_iou={self.min_pos_iou})')
