"""ExpMomentumEMA with mmengine's EMAHook: the official momentum schedule, checked on a toy run."""
from __future__ import annotations

import math

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import EMAHook, Hook
from torch import nn

from codetr.models.ema import ExpMomentumEMA
from codetr.registry import HOOKS, RUNNERS

from .toy import toy_config


def test_momentum_schedule_is_the_official_one():
    ema = ExpMomentumEMA(nn.Linear(2, 2), momentum=1e-4)
    # (1 - 1e-4) * exp(-(1 + t) / 2000) + 1e-4, worked out by hand
    # exp(-1 / 2000) = 0.99950012497917, exp(-1) = 0.36787944117144
    assert ema.momentum_at(0) == pytest.approx(0.99950017496667, rel=1e-12)
    assert ema.momentum_at(1999) == pytest.approx(0.36794265322733, rel=1e-12)
    assert math.isclose(ema.momentum_at(10 ** 6), 1e-4, rel_tol=1e-12)
    avg, src = torch.zeros(3), torch.ones(3)
    ema.avg_func(avg, src, steps=1999)
    torch.testing.assert_close(avg, torch.full((3,), 0.36794265322733))


@HOOKS.register_module()
class RecordParamsHook(Hook):
    """Keeps a copy of the model's parameters after every training iteration."""

    priority = 'LOWEST'

    def before_run(self, runner) -> None:
        self.history = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.history.append({k: v.detach().clone() for k, v in runner.model.state_dict().items()})


def test_ema_hook_of_the_vit_recipe_averages_a_toy_run(tmp_path):
    """The config's hook entry: after 8 steps the averaged weights are the hand-rolled
    recursion over the recorded weights (copy at the first step, as mmengine starts)."""
    recipe = Config.fromfile('configs/co_dino_vit/co_dino_5scale_vit_l_64xb1_12e_coco.py')
    ema_cfg = dict(recipe.custom_hooks[0], gamma=4)  # a short time constant: visible decay
    cfg = toy_config(str(tmp_path), max_epochs=2, length=8, batch_size=2,
                     custom_hooks=[ema_cfg, dict(type='RecordParamsHook')])
    runner = RUNNERS.build(Config(cfg))
    runner.train()
    ema_hook = next(h for h in runner.hooks if isinstance(h, EMAHook))
    record = next(h for h in runner.hooks if isinstance(h, RecordParamsHook))
    assert ema_hook.priority == 49 and len(record.history) == 8
    averaged = ema_hook.ema_model.module.state_dict()
    for key in averaged:
        expected = record.history[0][key].clone()
        for step, params in enumerate(record.history[1:], start=1):
            m = (1 - 1e-4) * math.exp(-(1 + step) / 4) + 1e-4
            expected += m * (params[key] - expected)
        torch.testing.assert_close(averaged[key], expected)
        assert not torch.allclose(averaged[key], record.history[-1][key])
