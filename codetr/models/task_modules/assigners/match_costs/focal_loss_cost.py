"""Focal-loss classification cost (Deformable DETR / DINO matching)."""
from __future__ import annotations

import torch
from torch import Tensor

from codetr.registry import TASK_UTILS

from .base_match_cost import BaseMatchCost
from .match_inputs import MatchInputs


@TASK_UTILS.register_module()
class FocalLossCost(BaseMatchCost):
    """Focal loss of predicting each GT's class, minus that of not predicting it.

    ``cost[q, g] = FL(p[q, c_g], 1) - FL(p[q, c_g], 0)`` with ``p = sigmoid(logit)``, so a
    confident right class is negative (good) and a confident wrong one positive.

    Args:
        alpha: positive / negative balance of the focal loss.
        gamma: focusing exponent.
        eps: keeps the logarithms finite at p = 0 or 1.
        binary_input: score ``masks (Q, H, W)`` logits against GT ``masks (G, H, W)`` per
            pixel (averaged over pixels) instead of class scores.
        weight: multiplies the cost (2.0 in Co-DINO's matcher).
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2, eps: float = 1e-12,
                 binary_input: bool = False, weight: float = 1.0) -> None:
        super().__init__(weight)
        self.alpha = alpha
        self.gamma = gamma
        self.eps = eps
        self.binary_input = binary_input

    def _pos_neg(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Focal loss of target 1 and of target 0, element-wise."""
        prob = logits.sigmoid()
        neg = -(1 - prob + self.eps).log() * (1 - self.alpha) * prob.pow(self.gamma)
        pos = -(prob + self.eps).log() * self.alpha * (1 - prob).pow(self.gamma)
        return pos, neg

    def cost(self, inputs: MatchInputs) -> Tensor:
        if self.binary_input:
            return self._mask_cost(inputs)
        scores = inputs.require('pred_scores', type(self).__name__)  # (B, Q, C)
        pos, neg = self._pos_neg(scores)
        labels = inputs.gt_labels
        return pos[..., labels] - neg[..., labels]  # (B, Q, G)

    def _mask_cost(self, inputs: MatchInputs) -> Tensor:
        pred = inputs.require('pred_masks', type(self).__name__)  # (B, Q, P) pixels
        gt = inputs.require('gt_masks', type(self).__name__).to(pred.dtype)  # (G, P)
        pos, neg = self._pos_neg(pred)
        cost = torch.einsum('bqp,gp->bqg', pos, gt) + torch.einsum('bqp,gp->bqg', neg, 1 - gt)
        return cost / pred.size(-1)
