"""The positives and negatives a sampler picked from one image's assigned priors."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..assigners import AssignResult


class SamplingResult:
    """Sampled positive and negative priors of one image and their targets.

    Args:
        pos_inds: ``(num_pos,)`` indices into ``priors`` of the sampled positives.
        neg_inds: ``(num_neg,)`` indices of the sampled negatives.
        priors: ``(P, 4)`` xyxy priors the indices refer to (GT boxes first if they were
            added as proposals).
        gt_bboxes: ``(G, 4)`` GT boxes of the image.
        assign_result: the assignment of ``priors``.
        gt_flags: ``(P,)`` uint8, 1 where a prior is a GT box added as a proposal.
        avg_factor_with_neg: whether :attr:`avg_factor` counts negatives too.

    Attributes:
        pos_priors, neg_priors: ``(num_pos, 4)``, ``(num_neg, 4)``.
        pos_gt_bboxes: ``(num_pos, 4)`` GT box of each positive.
        pos_gt_labels: ``(num_pos,)`` its class.
        pos_assigned_gt_inds: ``(num_pos,)`` **0-based** GT index of each positive.
        pos_is_gt: ``(num_pos,)`` uint8, 1 where the positive is a GT box itself.
        num_gts: ``G``.
        num_pos, num_neg: counts, at least 1 (they serve as loss normalisers).
    """

    def __init__(self, pos_inds: Tensor, neg_inds: Tensor, priors: Tensor, gt_bboxes: Tensor,
                 assign_result: AssignResult, gt_flags: Tensor,
                 avg_factor_with_neg: bool = True) -> None:
        self.pos_inds = pos_inds
        self.neg_inds = neg_inds
        self.num_pos = max(pos_inds.numel(), 1)
        self.num_neg = max(neg_inds.numel(), 1)
        self.avg_factor_with_neg = avg_factor_with_neg
        self.avg_factor = self.num_pos + self.num_neg if avg_factor_with_neg else self.num_pos
        self.pos_priors = priors[pos_inds]
        self.neg_priors = priors[neg_inds]
        self.pos_is_gt = gt_flags[pos_inds]
        self.num_gts = len(gt_bboxes)
        self.pos_assigned_gt_inds = assign_result.gt_inds[pos_inds] - 1
        self.pos_gt_labels = (assign_result.labels[pos_inds] if assign_result.labels is not None
                              else None)
        gt_bboxes = gt_bboxes.reshape(-1, 4)
        if len(gt_bboxes) == 0 and self.pos_assigned_gt_inds.numel() > 0:
            raise ValueError('positives were assigned although the image has no GT box')
        self.pos_gt_bboxes = gt_bboxes[self.pos_assigned_gt_inds.long()]

    @property
    def priors(self) -> Tensor:
        """``(num_pos + num_neg, 4)``: the positive priors, then the negative ones."""
        return torch.cat([self.pos_priors, self.neg_priors])

    @property
    def bboxes(self) -> Tensor:
        """Alias of :attr:`priors` (MMDetection's older name)."""
        return self.priors

    @property
    def pos_bboxes(self) -> Tensor:
        """Alias of :attr:`pos_priors`."""
        return self.pos_priors

    @property
    def neg_bboxes(self) -> Tensor:
        """Alias of :attr:`neg_priors`."""
        return self.neg_priors

    @property
    def info(self) -> dict[str, Any]:
        """The main fields as a dict."""
        return dict(pos_inds=self.pos_inds, neg_inds=self.neg_inds, pos_priors=self.pos_priors,
                    neg_priors=self.neg_priors, pos_is_gt=self.pos_is_gt, num_gts=self.num_gts,
                    pos_assigned_gt_inds=self.pos_assigned_gt_inds,
                    pos_gt_labels=self.pos_gt_labels, pos_gt_bboxes=self.pos_gt_bboxes,
                    num_pos=self.num_pos, num_neg=self.num_neg, avg_factor=self.avg_factor)

    def to(self, device: torch.device | str) -> SamplingResult:
        """Move every tensor field to ``device``, in place; returns ``self``."""
        for key, value in vars(self).items():
            if isinstance(value, Tensor):
                setattr(self, key, value.to(device))
        return self

    def __repr__(self) -> str:
        return (f'<SamplingResult num_pos={self.pos_inds.numel()} '
                f'num_neg={self.neg_inds.numel()} num_gts={self.num_gts}>')
