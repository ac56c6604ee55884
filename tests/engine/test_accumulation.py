"""Gradient accumulation (``optim_wrapper.accumulative_counts``): N micro-batches give the
gradient of one N times larger batch on a model without batch-dependent layers."""
from __future__ import annotations

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from torch import nn

from codetr.engine import BFloat16OptimWrapper
from codetr.registry import RUNNERS

from .toy import toy_config

MICRO_BATCHES = 4


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 2))


def _gradients_at_step(wrapper_type: type, model: nn.Module, batches: list[torch.Tensor],
                       accumulative_counts: int) -> dict[str, torch.Tensor]:
    """The gradients the optimizer steps with, after ``update_params`` on each batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    wrapper = wrapper_type(optimizer, accumulative_counts=accumulative_counts)
    seen = {}

    def record(*args, **kwargs):
        seen.update({n: p.grad.detach().clone() for n, p in model.named_parameters()})

    optimizer.register_step_pre_hook(record)
    for batch in batches:
        with wrapper.optim_context(model):
            out = model(batch)
        loss = (out.float() ** 2).mean() + out.float().sum(1).mean()  # a per-sample mean
        wrapper.update_params(loss)
    assert seen, 'the optimizer never stepped'
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())  # zeroed
    return seen


@pytest.mark.parametrize('wrapper_type, tol', [(OptimWrapper, 1e-6),
                                               (BFloat16OptimWrapper, 2e-2)])
def test_accumulated_gradient_equals_large_batch_gradient(wrapper_type: type, tol: float):
    data = torch.randn(MICRO_BATCHES * 2, 6, generator=torch.Generator().manual_seed(1))
    large = _gradients_at_step(wrapper_type, _mlp(), [data], accumulative_counts=1)
    micro = _gradients_at_step(wrapper_type, _mlp(), list(data.split(2)),
                               accumulative_counts=MICRO_BATCHES)
    # Without the 1/N loss scaling the accumulated gradient would be N times larger.
    for name, grad in large.items():
        assert grad.abs().sum() > 0, name
        # bfloat16 rounds each micro-batch's activations on its own: compare on the scale of
        # the gradient (a 1/N scaling error would be 75 % of it).
        assert (micro[name] - grad).abs().max() <= tol * grad.abs().max(), name


def test_runner_with_accumulation_matches_the_large_batch_run(tmp_path):
    """Batch 1 x 4 accumulated steps trains the toy regressor as batch 4 does (same sample
    order: the sampler's permutation does not depend on the batch size)."""
    results = []
    for name, batch, counts in (('large', 4, 1), ('accumulated', 1, 4)):
        cfg = toy_config(str(tmp_path / name), max_epochs=2, length=8, batch_size=batch,
                         optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05),
                                            accumulative_counts=counts))
        runner = RUNNERS.build(Config(cfg))
        runner.train()
        results.append({k: v.detach().clone() for k, v in runner.model.state_dict().items()})
    for key, value in results[0].items():
        torch.testing.assert_close(results[1][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(results[0]['linear.weight'], torch.zeros(1, 4))
