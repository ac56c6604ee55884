"""Samplers: a fixed-size random draw of positives and negatives (R-CNN), or all of them."""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torch import Tensor

from codetr.registry import TASK_UTILS

from ..assigners import AssignResult
from .sampling_result import SamplingResult


@TASK_UTILS.register_module()
class RandomSampler:
    """Draw up to ``num`` priors per image, at most ``num * pos_fraction`` of them positive.

    Positives and negatives are drawn uniformly without replacement (``torch.randperm`` on
    the priors' device, so seeding torch makes draws repeatable); the negatives fill the rest
    of ``num``, capped at ``neg_pos_ub`` times the positives when that is >= 0.

    Args:
        num: priors per image.
        pos_fraction: largest share of positives.
        neg_pos_ub: cap on negatives per positive; < 0 for none.
        add_gt_as_proposals: put the GT boxes in front of the priors, assigned to themselves,
            so that every GT is a positive candidate (R-CNN's second stage).
    """

    def __init__(self, num: int, pos_fraction: float, neg_pos_ub: int = -1,
                 add_gt_as_proposals: bool = True, **kwargs) -> None:
        if num < 1 or not 0 <= pos_fraction <= 1:
            raise ValueError(f'RandomSampler needs num >= 1 and pos_fraction in [0, 1], got '
                             f'num={num}, pos_fraction={pos_fraction}')
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = add_gt_as_proposals

    def sample(self, assign_result: AssignResult, pred_instances: InstanceData,
               gt_instances: InstanceData, **kwargs) -> SamplingResult:
        """Sample one image.

        Args:
            assign_result: assignment of ``pred_instances.priors``; extended in place with
                the GT boxes when ``add_gt_as_proposals``.
            pred_instances: ``priors (P, 4)`` xyxy pixels (proposals or anchors).
            gt_instances: ``bboxes (G, 4)``, ``labels (G,)``.

        Returns:
            A :class:`SamplingResult`; its indices are sorted and refer to the priors with the
            GT boxes prepended (when added).
        """
        priors = pred_instances.priors
        if priors.dim() < 2:
            priors = priors[None, :]
        priors = priors[:, :4]
        gt_bboxes, gt_labels = gt_instances.bboxes, gt_instances.labels
        gt_flags = priors.new_zeros((len(priors),), dtype=torch.uint8)
        if self.add_gt_as_proposals and len(gt_bboxes) > 0:
            priors = torch.cat([gt_bboxes.to(priors.dtype), priors])
            assign_result.add_gt_(gt_labels)
            gt_flags = torch.cat([gt_flags.new_ones((len(gt_bboxes),)), gt_flags])
        pos_inds = _random_subset(torch.nonzero(assign_result.gt_inds > 0).flatten(),
                                  int(self.num * self.pos_fraction)).unique()
        num_neg = self.num - pos_inds.numel()
        if self.neg_pos_ub >= 0:
            num_neg = min(num_neg, int(self.neg_pos_ub * max(1, pos_inds.numel())))
        neg_inds = _random_subset(torch.nonzero(assign_result.gt_inds == 0).flatten(),
                                  num_neg).unique()
        return SamplingResult(pos_inds, neg_inds, priors, gt_bboxes, assign_result, gt_flags)


@TASK_UTILS.register_module()
class PseudoSampler:
    """Take every positive and every negative: for heads that weight all priors (ATSS,
    RetinaNet, FCOS). :attr:`SamplingResult.avg_factor` counts positives only."""

    def __init__(self, **kwargs) -> None:
        pass

    def sample(self, assign_result: AssignResult, pred_instances: InstanceData,
               gt_instances: InstanceData, **kwargs) -> SamplingResult:
        """All priors with ``gt_inds > 0`` as positives, ``== 0`` as negatives."""
        priors = pred_instances.priors
        pos_inds = torch.nonzero(assign_result.gt_inds > 0).flatten().unique()
        neg_inds = torch.nonzero(assign_result.gt_inds == 0).flatten().unique()
        gt_flags = priors.new_zeros((len(priors),), dtype=torch.uint8)
        return SamplingResult(pos_inds, neg_inds, priors, gt_instances.bboxes, assign_result,
                              gt_flags, avg_factor_with_neg=False)


def _random_subset(indices: Tensor, num: int) -> Tensor:
    """``indices`` itself if it has at most ``num`` entries, else ``num`` of them at random."""
    if indices.numel() <= num:
        return indices
    return indices[torch.randperm(indices.numel(), device=indices.device)[:num]]
