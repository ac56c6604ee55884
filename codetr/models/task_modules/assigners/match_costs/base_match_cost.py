"""The match-cost interface: per image like MMDetection 3, batched for the assigner."""
from __future__ import annotations

from typing import Any

from mmengine.structures import InstanceData
from torch import Tensor

from .match_inputs import MatchInputs


class BaseMatchCost:
    """A weighted cost between every prediction and every GT box.

    Subclasses implement :meth:`cost` once, on the batched layout of :class:`MatchInputs`;
    calling the object on one image runs the same code with a batch of one, so the per-image
    and batched costs cannot drift apart.

    Args:
        weight: multiplies the cost.
    """

    def __init__(self, weight: float | int = 1.0) -> None:
        self.weight = weight

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: dict[str, Any] | None = None) -> Tensor:
        """``(Q, G)`` weighted cost of one image.

        Args:
            pred_instances: ``scores (Q, C)`` logits and/or ``bboxes (Q, 4)`` normalised cxcywh.
            gt_instances: ``labels (G,)`` and/or ``bboxes (G, 4)`` pixel xyxy.
            img_meta: must hold ``img_shape = (h, w)`` for box costs.
        """
        inputs = MatchInputs.from_lists([pred_instances], [gt_instances], [img_meta])
        return self.batch_cost(inputs)[0]

    def batch_cost(self, inputs: MatchInputs) -> Tensor:
        """``(B, Q, G)`` weighted cost, ``G`` summed over the batch's images."""
        return self.cost(inputs) * self.weight

    def cost(self, inputs: MatchInputs) -> Tensor:
        """``(B, Q, G)`` unweighted cost; implemented by each cost."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{type(self).__name__}(weight={self.weight})'
