"""EvalProgressHook (default_hooks.progress): a progress report over validation and test."""
from mmengine.runner import Runner

import codetr.engine.hooks.progress_hook as progress_hook

from .toy import toy_config


def build(tmp_path) -> Runner:
    cfg = toy_config(str(tmp_path), max_epochs=1, length=6, batch_size=4)
    cfg['default_hooks']['progress'] = dict(type='EvalProgressHook')
    return Runner.from_cfg(cfg)


def test_validation_and_test_show_their_progress(tmp_path, capsys):
    runner = build(tmp_path)
    runner.train()
    err = capsys.readouterr().err
    assert 'val: 6/6 images [############################] 100%' in err
    runner.test()
    assert 'test: 6/6 images [' in capsys.readouterr().err


def test_distributed_counts_every_rank_and_only_rank_0_writes(tmp_path, capsys, monkeypatch):
    runner = build(tmp_path)
    monkeypatch.setattr(progress_hook, 'get_world_size', lambda: 2)
    runner.test()  # rank 0 sees 2 batches (4 + 2 images), counted twice: clamped to 6
    assert 'test: 6/6 images' in capsys.readouterr().err
    monkeypatch.setattr('mmengine.dist.get_rank', lambda: 1)
    runner.test()
    assert 'images' not in capsys.readouterr().err


def test_the_default_runtime_registers_it():
    from mmengine.config import Config

    cfg = Config.fromfile('configs/_base_/default_runtime.py')
    assert cfg.default_hooks.progress == dict(type='EvalProgressHook')
