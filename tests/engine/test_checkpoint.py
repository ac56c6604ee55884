"""Checked loading, the weights-only allow-list and atomic checkpoint saving."""
import os
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.fileio.backends import LocalBackend
from mmengine.logging import HistoryBuffer

from codetr.engine import SAFE_GLOBALS, CheckpointError, load_checkpoint
from codetr.registry import RUNNERS

from .toy import toy_config


class ForeignObject:
    """A class no allow-list names: unpickling it would run arbitrary module code."""


def _train(work_dir: Path, **kwargs):
    runner = RUNNERS.build(Config(toy_config(str(work_dir), **kwargs)))
    runner.train()
    return runner


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> Path:
    """A work dir after 2 toy epochs: epoch_1.pth, epoch_2.pth, last_checkpoint."""
    work_dir = tmp_path_factory.mktemp('trained')
    _train(work_dir, max_epochs=2)
    return work_dir


def test_runner_checkpoint_loads_with_weights_only_default(trained):
    # Plain torch.load (weights_only=True by default in torch >= 2.6) needs the allow-list.
    checkpoint = torch.load(trained / 'epoch_2.pth')
    assert checkpoint['meta']['epoch'] == 2
    assert set(checkpoint) >= {'state_dict', 'meta', 'message_hub', 'optimizer'}
    assert getattr not in SAFE_GLOBALS and ForeignObject not in SAFE_GLOBALS


class _ReadsAnAttribute:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``: not a statistics method."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def test_getattr_is_limited_to_history_buffer_statistics(tmp_path):
    path = tmp_path / 'reads_attribute.pth'
    torch.save({'state_dict': {}, 'meta': {'x': _ReadsAnAttribute()}}, path)
    with pytest.raises(CheckpointError, match='allow-list'):
        load_checkpoint(str(path))


def test_missing_file_message(tmp_path):
    path = tmp_path / 'nope.pth'
    with pytest.raises(CheckpointError, match=f'^checkpoint not found: {path}$'):
        load_checkpoint(str(path))


def test_truncated_file_message(trained, tmp_path):
    data = (trained / 'epoch_1.pth').read_bytes()
    path = tmp_path / 'half.pth'
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='is not a readable checkpoint '
                       r'\(truncated or corrupt\?\): '):
        load_checkpoint(str(path))


def test_garbage_file_message(tmp_path):
    path = tmp_path / 'garbage.pth'
    path.write_bytes(b'this is not a zip archive' * 10)
    with pytest.raises(CheckpointError, match='truncated or corrupt'):
        load_checkpoint(str(path))


def test_not_a_checkpoint_lists_keys(tmp_path):
    path = tmp_path / 'other.pth'
    torch.save({'weights': [1, 2], 'epoch': 3}, path)
    with pytest.raises(CheckpointError, match=r'has no state_dict \(its keys: epoch, weights\)'):
        load_checkpoint(str(path))
    torch.save({'state_dict': {}}, path)
    with pytest.raises(CheckpointError, match=r'has no state_dict, meta \(its keys: state_dict'):
        load_checkpoint(str(path), require=('state_dict', 'meta'))


def test_plain_state_dict_is_accepted(tmp_path):
    path = tmp_path / 'weights.pth'
    torch.save({'linear.weight': torch.ones(2, 2)}, path)
    assert torch.equal(load_checkpoint(str(path))['linear.weight'], torch.ones(2, 2))


def test_foreign_object_is_refused_not_executed(tmp_path):
    path = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {}, 'extra': ForeignObject()}, path)
    with pytest.raises(CheckpointError, match='outside the checkpoint allow-list'):
        load_checkpoint(str(path))


def test_resume_from_corrupt_file_names_it(trained, tmp_path):
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'\0' * 100)
    cfg = toy_config(str(tmp_path / 'w'), max_epochs=3, resume=True, load_from=str(bad))
    runner = RUNNERS.build(Config(cfg))
    with pytest.raises(CheckpointError, match=f'{bad} is not a readable checkpoint'):
        runner.train()


def test_resume_from_weights_only_file_says_what_is_missing(tmp_path):
    path = tmp_path / 'weights.pth'
    torch.save({'state_dict': {}}, path)
    cfg = toy_config(str(tmp_path / 'w'), max_epochs=3, resume=True, load_from=str(path))
    with pytest.raises(CheckpointError, match='has no state_dict, meta, message_hub'):
        RUNNERS.build(Config(cfg)).train()


def _fail_halfway_torch_save(monkeypatch):
    real_save = torch.save

    def half_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)  # a partial write, then the failure
        raise OSError('No space left on device (simulated)')
    monkeypatch.setattr(torch, 'save', half_save)


def _fail_halfway_file_write(monkeypatch):
    def half_put(self, obj: bytes, filepath):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
        raise OSError('No space left on device (simulated)')
    monkeypatch.setattr(LocalBackend, 'put', half_put)


@pytest.mark.parametrize('fail', [_fail_halfway_torch_save, _fail_halfway_file_write])
def test_failed_save_keeps_previous_checkpoints(tmp_path, monkeypatch, fail):
    work_dir = tmp_path / 'w'
    _train(work_dir, max_epochs=2)  # max_keep_ckpts=2: epoch_1, epoch_2
    before = {p: (work_dir / p).read_bytes() for p in ('epoch_1.pth', 'epoch_2.pth')}
    fail(monkeypatch)
    runner = RUNNERS.build(Config(toy_config(str(work_dir), max_epochs=3, resume=True)))
    with pytest.raises(OSError, match='simulated'):
        runner.train()
    monkeypatch.undo()
    # mmengine's CheckpointHook would already have deleted epoch_1.pth here.
    names = sorted(os.listdir(work_dir))
    assert [n for n in names if 'pth' in n] == ['epoch_1.pth', 'epoch_2.pth']
    for name, data in before.items():
        assert (work_dir / name).read_bytes() == data
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'epoch_2.pth')
    assert load_checkpoint(str(work_dir / 'epoch_2.pth'), require=('meta',))['meta']['epoch'] == 2


def test_rotation_removes_oldest_only_after_new_save(tmp_path):
    work_dir = tmp_path / 'w'
    _train(work_dir, max_epochs=3)
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['epoch_2.pth', 'epoch_3.pth']
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'epoch_3.pth')
    assert not list(work_dir.glob('.*tmp*'))


# With this lr the toy validation mse falls every epoch (1.13, 0.40, 0.06): each is a new best.
SLOW_SGD = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9))


def test_failed_best_save_keeps_previous_best(tmp_path, monkeypatch):
    work_dir = tmp_path / 'w'
    hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=2,
                                 save_best='toy/mse', rule='less'))
    cfg = toy_config(str(work_dir), max_epochs=1, val_interval=1, optim_wrapper=SLOW_SGD)
    cfg['default_hooks'].update(hooks)
    RUNNERS.build(Config(cfg)).train()
    assert (work_dir / 'best_toy_mse_epoch_1.pth').is_file()
    real_put = LocalBackend.put

    def fail_best(self, obj, filepath):
        if os.path.basename(filepath).startswith('.best_'):  # the temporary best file
            raise OSError('No space left on device (simulated)')
        real_put(self, obj, filepath)
    monkeypatch.setattr(LocalBackend, 'put', fail_best)
    cfg.update(resume=True)
    cfg['train_cfg']['max_epochs'] = 2
    with pytest.raises(OSError, match='simulated'):
        RUNNERS.build(Config(cfg)).train()  # epoch 2 improves the mse: a new best is saved
    assert load_checkpoint(str(work_dir / 'best_toy_mse_epoch_1.pth'))['meta']['epoch'] == 1
    assert not list(work_dir.glob('best_toy_mse_epoch_2.pth'))


def test_best_checkpoint_rotates_after_success(tmp_path):
    cfg = toy_config(str(tmp_path), max_epochs=2, val_interval=1, optim_wrapper=SLOW_SGD)
    cfg['default_hooks']['checkpoint'].update(save_best='toy/mse', rule='less')
    RUNNERS.build(Config(cfg)).train()
    assert sorted(p.name for p in tmp_path.glob('best_*.pth')) == ['best_toy_mse_epoch_2.pth']
