"""BFloat16OptimWrapper: what tools/train.py --amp uses without CUDA."""
import torch
from mmengine.config import Config
from torch import nn

from codetr.engine import BFloat16OptimWrapper
from codetr.registry import RUNNERS

from .toy import toy_config


def test_forward_runs_in_bfloat16_and_parameters_stay_float32():
    model = nn.Linear(4, 2)
    wrapper = BFloat16OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    with wrapper.optim_context(model):
        out = model(torch.ones(3, 4))
    assert out.dtype == torch.bfloat16
    assert model(torch.ones(3, 4)).dtype == torch.float32  # only inside the context
    before = model.weight.detach().clone()
    wrapper.update_params(out.float().sum())
    assert model.weight.dtype == torch.float32 and not torch.equal(before, model.weight)


def test_toy_training_with_bfloat16_wrapper(tmp_path):
    cfg = toy_config(str(tmp_path), max_epochs=1,
                     optim_wrapper=dict(type='BFloat16OptimWrapper',
                                        optimizer=dict(type='SGD', lr=0.05)))
    runner = RUNNERS.build(Config(cfg))
    runner.train()
    assert isinstance(runner.optim_wrapper, BFloat16OptimWrapper)
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
