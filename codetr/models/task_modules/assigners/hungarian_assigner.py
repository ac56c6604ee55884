"""One-to-one assignment of queries to GT boxes by minimum total cost (Hungarian matching)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from codetr.registry import TASK_UTILS

from .assign_result import AssignResult
from .match_costs import BaseMatchCost, MatchInputs

CostConfig = dict | BaseMatchCost

# Co-DINO's official matcher (Co-DETR configs, train_cfg.assigner): focal 2, L1 5, GIoU 2
CO_DINO_MATCH_COSTS = (dict(type='FocalLossCost', weight=2.0),
                       dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                       dict(type='IoUCost', iou_mode='giou', weight=2.0))


@TASK_UTILS.register_module()
class HungarianAssigner:
    """Match each GT box to exactly one query so that the summed match cost is minimal.

    Queries left without a GT are background (``gt_inds = 0``, ``labels = -1``).

    Args:
        match_costs: one cost or a list of costs (configs, built costs, or plain callables
            ``(pred_instances, gt_instances, img_meta) -> (Q, G)``), summed. Defaults to
            Co-DINO's :data:`CO_DINO_MATCH_COSTS`.
    """

    def __init__(self, match_costs: CostConfig | Sequence[CostConfig] | None = None) -> None:
        if match_costs is None:
            match_costs = [dict(c) for c in CO_DINO_MATCH_COSTS]
        if isinstance(match_costs, dict) or callable(match_costs):
            match_costs = [match_costs]
        if len(match_costs) == 0:
            raise ValueError('HungarianAssigner needs at least one match cost in match_costs')
        self.match_costs = [TASK_UTILS.build(c) if isinstance(c, dict) else c
                            for c in match_costs]

    def assign(self, pred_instances: InstanceData, gt_instances: InstanceData,
               img_meta: dict[str, Any] | None = None) -> AssignResult:
        """Assign the ``Q`` predictions of one image.

        Args:
            pred_instances: ``scores (Q, C)`` logits, ``bboxes (Q, 4)`` normalised cxcywh.
            gt_instances: ``labels (G,)``, ``bboxes (G, 4)`` pixel xyxy.
            img_meta: holds ``img_shape = (h, w)``, the normalisation of the boxes.

        Returns:
            ``AssignResult`` with ``gt_inds (Q,)`` 1-based, ``labels (Q,)``, no overlaps.
        """
        return self.assign_batch([pred_instances], [gt_instances], [img_meta])[0]

    def assign_batch(self, pred_instances_list: Sequence[InstanceData],
                     gt_instances_list: Sequence[InstanceData],
                     img_metas: Sequence[dict[str, Any] | None]) -> list[AssignResult]:
        """Assign every image of a batch, computing all costs in one ``(B, Q, G)`` tensor.

        All images must have the same number of queries. The cost leaves the device once per
        batch; only the per-image linear assignment runs in a Python loop.

        Returns:
            One ``AssignResult`` per image, as :meth:`assign` would give.
        """
        num_gts = [len(g) for g in gt_instances_list]
        num_queries = len(pred_instances_list[0]) if pred_instances_list else 0
        if sum(num_gts) == 0 or num_queries == 0:
            return [_empty_result(len(p), g.labels) for p, g in
                    zip(pred_instances_list, gt_instances_list)]
        inputs = MatchInputs.from_lists(pred_instances_list, gt_instances_list, img_metas)
        with torch.no_grad():  # matching picks targets; no gradient flows through it
            costs = [self._one_cost(c, inputs, pred_instances_list, gt_instances_list,
                                    img_metas) for c in self.match_costs]
        cost_cpu = torch.stack(costs).sum(0).detach().float().cpu()  # the one copy to the host
        if not bool(torch.isfinite(cost_cpu).all()):
            raise self._non_finite_error(costs)
        per_image = cost_cpu.split(num_gts, dim=-1)  # B x (B, Q, G_b)
        return [self._solve(per_image[b][b], gt.labels)
                for b, gt in enumerate(gt_instances_list)]

    def _non_finite_error(self, costs: list[Tensor]) -> ValueError:
        """The error for a cost matrix with NaN or inf, naming the costs that produced them."""
        bad = [repr(c) for c, v in zip(self.match_costs, costs)
               if not bool(torch.isfinite(v).all())]
        return ValueError(f'match cost {", ".join(bad)} gave NaN or inf; check the predicted '
                          'boxes / scores for NaN (diverged training) and the GT boxes for '
                          'degenerate or non-finite coordinates')

    @staticmethod
    def _one_cost(match_cost: Any, inputs: MatchInputs,
                  pred_instances_list: Sequence[InstanceData],
                  gt_instances_list: Sequence[InstanceData],
                  img_metas: Sequence[dict[str, Any] | None]) -> Tensor:
        """``(B, Q, G)`` of one cost; a plain per-image callable fills its diagonal blocks."""
        if isinstance(match_cost, BaseMatchCost):
            return match_cost.batch_cost(inputs)
        blocks = [match_cost(pred_instances=p, gt_instances=g, img_meta=m)
                  for p, g, m in zip(pred_instances_list, gt_instances_list, img_metas)]
        ref = blocks[0]
        full = ref.new_zeros(len(blocks), ref.size(0), sum(inputs.num_gts))
        for b, block in enumerate(blocks):
            start = sum(inputs.num_gts[:b])
            full[b, :, start:start + block.size(1)] = block
        return full

    @staticmethod
    def _solve(cost: Tensor, gt_labels: Tensor) -> AssignResult:
        """Solve one image's ``(Q, G)`` CPU cost; results land on ``gt_labels``' device."""
        num_queries, num_gts = cost.shape
        if num_gts == 0:
            return _empty_result(num_queries, gt_labels)
        rows, cols = linear_sum_assignment(cost.numpy())
        device = gt_labels.device
        rows = torch.from_numpy(rows).to(device)
        cols = torch.from_numpy(cols).to(device)
        gt_inds = torch.zeros(num_queries, dtype=torch.long, device=device)
        gt_inds[rows] = cols + 1
        labels = torch.full((num_queries,), -1, dtype=torch.long, device=device)
        labels[rows] = gt_labels[cols].long()
        return AssignResult(num_gts, gt_inds, None, labels)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(match_costs={self.match_costs})'


def _empty_result(num_queries: int, gt_labels: Tensor) -> AssignResult:
    """Every query is background: there is no GT box (or no query)."""
    device = gt_labels.device
    gt_inds = torch.zeros(num_queries, dtype=torch.long, device=device)
    labels = torch.full((num_queries,), -1, dtype=torch.long, device=device)
    return AssignResult(len(gt_labels), gt_inds, None, labels)
