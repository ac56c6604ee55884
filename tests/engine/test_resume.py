"""Resume parity: stopping after epoch 1 and resuming gives the uninterrupted result."""
import pytest
import torch
from mmengine.config import Config

from codetr.registry import RUNNERS

from .toy import SimulatedCrash, toy_config


def _train(work_dir, **kwargs):
    runner = RUNNERS.build(Config(toy_config(str(work_dir), max_epochs=2, **kwargs)))
    runner.train()
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}, runner


def test_resume_after_epoch_one_matches_uninterrupted(tmp_path):
    # torch >= 2.6 loads checkpoints weights-only by default; resuming relies on that path.
    assert tuple(int(x) for x in torch.__version__.split('.')[:2]) >= (2, 6)
    straight, _ = _train(tmp_path / 'straight')
    crash = [dict(type='InterruptAfterEpochHook', epoch=1)]
    with pytest.raises(SimulatedCrash):
        _train(tmp_path / 'stopped', custom_hooks=crash)
    assert (tmp_path / 'stopped' / 'last_checkpoint').read_text().endswith('epoch_1.pth')
    resumed, runner = _train(tmp_path / 'stopped', resume=True)  # a fresh Runner
    assert runner.iter == 8 and runner.epoch == 2
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    # The learning-rate schedule resumed too: MultiStepLR halved lr after epoch 1.
    assert runner.optim_wrapper.get_lr()['lr'] == [0.025]
