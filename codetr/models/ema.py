"""``ExpMomentumEMA``: the weight average of the official Co-DETR ViT-L recipe.

mmengine's ``EMAHook`` builds the averaged model by name from the model registry; mmengine
0.10 ships ``ExponentialMovingAverage`` and ``MomentumAnnealingEMA`` but not this one (it
is MMDetection's). Each update is ``avg = (1 - m_t) * avg + m_t * param`` with
``m_t = (1 - momentum) * exp(-(1 + t) / gamma) + momentum``: nearly a copy at first, then
``momentum`` once ``t >> gamma`` (the official ``ExpMomentumEMAHook``, ``total_iter=2000``).
Use it as ``custom_hooks = [dict(type='EMAHook', ema_type='ExpMomentumEMA',
momentum=1e-4, update_buffers=True, priority=49)]``.
"""
from __future__ import annotations

import math

import torch
from mmengine.model import ExponentialMovingAverage
from torch import Tensor, nn

from codetr.registry import MODELS


@MODELS.register_module()
class ExpMomentumEMA(ExponentialMovingAverage):
    """Exponential moving average whose momentum decays from 1 to ``momentum``.

    Args:
        model: the model to average.
        momentum: the final momentum (weight of the current parameters).
        gamma: time constant, in updates, of the momentum's decay (official 2000).
        interval: update every ``interval`` steps.
        device: where the averaged copy lives (default: the model's device).
        update_buffers: average buffers too (the official hook averages the whole state
            dict: True).
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: int = 2000,
                 interval: int = 1, device: torch.device | None = None,
                 update_buffers: bool = False) -> None:
        super().__init__(model=model, momentum=momentum, interval=interval, device=device,
                         update_buffers=update_buffers)
        if gamma <= 0:
            raise ValueError(f'ExpMomentumEMA gamma must be > 0, got {gamma}')
        self.gamma = gamma

    def momentum_at(self, steps: int) -> float:
        """Momentum of the update after ``steps`` earlier updates."""
        return (1 - self.momentum) * math.exp(-(1 + steps) / self.gamma) + self.momentum

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        """``averaged_param <- averaged_param + m_t * (source_param - averaged_param)``."""
        averaged_param.lerp_(source_param, self.momentum_at(steps))
