"""NonFiniteLossHook: stop with the iteration and the bad terms, or skip a bounded number."""
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from torch import nn

from codetr.engine import NonFiniteLossHook
from codetr.engine.hooks import describe_nonfinite
from codetr.registry import RUNNERS

from .toy import toy_config


def _runner(tmp_path, nan_at_calls, max_skips=0, max_epochs=2):
    cfg = toy_config(str(tmp_path), max_epochs=max_epochs,
                     model=dict(type='ToyRegressor', nan_at_calls=nan_at_calls))
    cfg['default_hooks']['nonfinite_loss']['max_nonfinite_skips'] = max_skips
    return RUNNERS.build(Config(cfg))


def _hook(runner) -> NonFiniteLossHook:
    return next(h for h in runner.hooks if isinstance(h, NonFiniteLossHook))


def test_describe_nonfinite_names_only_bad_terms():
    log_vars = dict(loss=torch.tensor(float('nan')), loss_cls=torch.tensor(0.5),
                    loss_bbox=torch.tensor(float('inf')), acc=torch.tensor(1.0))
    assert describe_nonfinite(log_vars) == 'loss=nan, loss_bbox=inf'


def test_first_nan_stops_with_iteration_and_terms(tmp_path):
    runner = _runner(tmp_path, nan_at_calls=[3])
    with pytest.raises(RuntimeError, match=r'^iteration 3: non-finite loss terms: '
                       r'loss=nan, loss_reg=nan\. Training stopped'):
        runner.train()
    # The bad step was not applied: the parameters are still finite.
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_skips_up_to_the_limit_then_finishes(tmp_path):
    runner = _runner(tmp_path, nan_at_calls=[2, 5], max_skips=2)
    runner.train()  # 2 epochs x 4 iterations
    assert _hook(runner).num_skipped == 2
    assert runner.iter == 8
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())


def test_one_more_than_the_limit_fails(tmp_path):
    runner = _runner(tmp_path, nan_at_calls=[2, 5, 6], max_skips=2)
    with pytest.raises(RuntimeError, match=r'^iteration 6: .*after 3 non-finite iteration'):
        runner.train()


def test_skipped_step_leaves_parameters_and_grads_untouched():
    model = nn.Linear(2, 1)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    hook = NonFiniteLossHook(max_nonfinite_skips=1)
    hook._guard(wrapper)
    before = [p.detach().clone() for p in model.parameters()]
    wrapper.update_params(model(torch.ones(1, 2)).sum() * float('nan'))
    assert hook._step_skipped
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    # A finite loss afterwards updates normally: d(w.x + b)/db = 1, lr 0.1.
    wrapper.update_params(model(torch.ones(1, 2)).sum())
    assert torch.allclose(model.bias, before[1] - 0.1)


def test_negative_limit_is_a_config_error():
    with pytest.raises(ValueError, match='max_nonfinite_skips must be >= 0'):
        NonFiniteLossHook(max_nonfinite_skips=-1)
