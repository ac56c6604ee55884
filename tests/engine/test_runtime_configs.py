"""The shipped runtime and schedule bases hold the official numbers and build a Runner."""
import pytest
from mmengine.config import Config

from codetr.registry import HOOKS, RUNNERS, VISUALIZERS

from ..conftest import ROOT
from .toy import toy_config

BASE = ROOT / 'configs' / '_base_'


def test_schedule_1x_matches_reference():
    cfg = Config.fromfile(BASE / 'schedules' / 'schedule_1x.py')
    assert cfg.train_cfg == dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
    assert cfg.param_scheduler[0].milestones == [11] and cfg.param_scheduler[0].gamma == 0.1
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4, weight_decay=1e-4,
                                               fused=True)
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=0.1, norm_type=2)
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
    assert cfg.auto_scale_lr.base_batch_size == 16


@pytest.mark.parametrize('name,epochs,step', [('2x', 24, 20), ('3x', 36, 30)])
def test_longer_schedules(name, epochs, step):
    cfg = Config.fromfile(BASE / 'schedules' / f'schedule_{name}.py')
    assert cfg.train_cfg.max_epochs == epochs and cfg.train_cfg.val_interval == 1
    assert cfg.param_scheduler == [dict(type='MultiStepLR', begin=0, end=epochs, by_epoch=True,
                                        milestones=[step], gamma=0.1)]
    assert cfg.optim_wrapper.optimizer.lr == 2e-4


def test_default_runtime_values():
    cfg = Config.fromfile(BASE / 'default_runtime.py')
    assert cfg.default_scope == 'codetr' and cfg.runner_type == 'CodetrRunner'
    hooks = cfg.default_hooks
    assert hooks.checkpoint == dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3)
    assert hooks.logger == dict(type='DistSafeLoggerHook', interval=50)
    assert hooks.nonfinite_loss.max_nonfinite_skips == 0
    assert {'timer', 'param_scheduler', 'sampler_seed'} <= set(hooks)
    assert cfg.env_cfg.cudnn_benchmark is False and cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert cfg.log_processor.by_epoch and cfg.load_from is None and cfg.resume is False


def test_runtime_and_schedule_build_a_runner(tmp_path):
    try:
        HOOKS.get('DetVisualizationHook')
        VISUALIZERS.get('DetLocalVisualizer')
    except KeyError:
        pytest.skip('codetr.visualization is not available')
    cfg = Config.fromfile(BASE / 'default_runtime.py')
    cfg.merge_from_dict(Config.fromfile(BASE / 'schedules' / 'schedule_1x.py').to_dict())
    toy = toy_config(str(tmp_path), max_epochs=1)
    for key in ('model', 'train_dataloader', 'val_dataloader', 'val_evaluator',
                'test_dataloader', 'test_evaluator', 'work_dir', 'experiment_name'):
        cfg[key] = toy[key]
    cfg.train_cfg.max_epochs = 1
    cfg.param_scheduler[0].end = 1
    runner = RUNNERS.build(cfg)
    runner.train()
    assert (tmp_path / 'epoch_1.pth').is_file()
    assert runner.optim_wrapper.optimizer.param_groups[0]['lr'] == pytest.approx(2e-4)
