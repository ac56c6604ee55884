"""Softmax classification cost (DETR matching)."""
from __future__ import annotations

from torch import Tensor

from codetr.registry import TASK_UTILS

from .base_match_cost import BaseMatchCost
from .match_inputs import MatchInputs


@TASK_UTILS.register_module()
class ClassificationCost(BaseMatchCost):
    """``-softmax(logits)[q, c_g]``: the probability of each GT's class, negated.

    ``scores`` are ``(Q, C + 1)`` logits with a background column, as a softmax head gives.

    Args:
        weight: multiplies the cost.
    """

    def cost(self, inputs: MatchInputs) -> Tensor:
        probs = inputs.require('pred_scores', type(self).__name__).softmax(-1)  # (B, Q, C+1)
        return -probs[..., inputs.gt_labels]  # (B, Q, G)
