"""Sharded training (``tools/train.py --strategy fsdp``) with 2 gloo processes on a CPU.

One torchrun launch per test runs DDP, FSDP and a resumed FSDP run in the same two processes
(tests/engine/fsdp_worker.py): starting processes is the slow part. The default run uses
``ToyShardedNet`` (tests/engine/toy.py): 3 FSDP units, a 0-d parameter, random draws in the
forward pass and active gradient clipping, the four things FSDP changes for a Co-DINO, in
well under a second of compute. The slow test runs the quick-start Co-DINO (K = 2) itself.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from codetr.datasets.synthetic import make_synthetic_dataset
from codetr.engine import configure_strategy

from ..conftest import ROOT
from .toy import toy_config_text

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason='tests the CPU-only path')
WORKER = Path(__file__).with_name('fsdp_worker.py')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _launch(config: Path, out: Path, resume_from: str, *extra: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
           '--master_port', str(_free_port()), str(WORKER), str(config), str(out), resume_from,
           *extra]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def _steps(run_dir: Path, rank: int) -> list[dict]:
    return json.loads((run_dir / f'steps_rank{rank}.json').read_text())


def _assert_same_steps(expected: list[dict], actual: list[dict]) -> None:
    assert [s['iter'] for s in actual] == [s['iter'] for s in expected]
    for want, got in zip(expected, actual):
        assert got['loss'] == pytest.approx(want['loss'], rel=1e-5, abs=1e-7), (want, got)
        assert got['grad_norm'] == pytest.approx(want['grad_norm'], rel=1e-5), (want, got)


def _assert_runs(out: Path, resume_iter: int, full: bool) -> None:
    for rank in (0, 1):
        ddp, fsdp = _steps(out / 'ddp', rank), _steps(out / 'fsdp', rank)
        assert len(ddp) >= resume_iter + 1
        _assert_same_steps(ddp, fsdp)
        # The resumed run starts after the checkpoint and continues exactly.
        _assert_same_steps(fsdp[resume_iter:], _steps(out / 'fsdp_resumed', rank))
        if full:
            _assert_same_steps(ddp, _steps(out / 'fsdp_full', rank))
            _assert_same_steps(fsdp[resume_iter:], _steps(out / 'fsdp_full_resumed', rank))
            loaded = _steps(out / 'fsdp_loaded', rank)
            _assert_same_steps(_steps(out / 'ddp_loaded', rank), loaded)
            assert loaded[0]['loss'] != ddp[0]['loss']  # it started from the loaded weights
    # The two ranks saw different data (different losses) and clipped by one global norm.
    first = [_steps(out / 'fsdp', r)[0] for r in (0, 1)]
    assert first[0]['loss'] != first[1]['loss']
    assert first[0]['grad_norm'] == first[1]['grad_norm']
    shards = [json.loads((out / f'shards_rank{r}.json').read_text()) for r in (0, 1)]
    total = shards[0]['model_numel']
    for shard in shards:  # each rank holds half of the parameters, alignment padding aside
        assert total / 2 <= shard['local_numel'] <= total / 2 + 16 + total / 1000, shard
        assert {'state_dict', 'optimizer', 'rng_state', 'meta'} <= set(shard['keys'])


def test_fsdp_equals_ddp_and_resumes_sharded_and_full(tmp_path: Path):
    config = tmp_path / 'toy_fsdp.py'
    # mmengine's strategy name in a config: configure_strategy swaps in codetr's.
    strategy = dict(type='FSDPStrategy', model_wrapper=dict(auto_wrap_policy=dict(
        type='codetr.layer_wrap_policy', layer_types=['Linear'])))
    config.write_text(toy_config_text(
        'unused', max_epochs=2, model=dict(type='ToyShardedNet'), strategy=strategy,
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9),
                           clip_grad=dict(max_norm=0.05)),  # below every step's norm
        custom_hooks=[dict(type='RecordTrainStepsHook')]))
    _launch(config, tmp_path / 'out', 'epoch_1.pth', '--full')
    # 8 samples / 2 ranks / batch 2 = 2 iterations per epoch; epoch_1 ends after iter 1.
    _assert_runs(tmp_path / 'out', resume_iter=2, full=True)
    steps = _steps(tmp_path / 'out' / 'fsdp', 0)
    assert all(s['grad_norm'] > 0.05 for s in steps)  # clipping was active at every step
    full = torch.load(tmp_path / 'out' / 'fsdp_full' / 'epoch_1.pth', weights_only=True)
    state = full['state_dict']  # an ordinary checkpoint: the unsharded model's layout
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        'fc1.weight': (16, 4), 'fc1.bias': (16,), 'fc2.weight': (1, 16), 'fc2.bias': (1,),
        'scale': ()}


@pytest.mark.slow  # about 3 min on a shared 2-core CPU
def test_fsdp_co_dino_equals_ddp_and_resumes(tmp_path: Path):
    data = tmp_path / 'data'
    make_synthetic_dataset(data, num_train=4, num_val=2, seed=0, min_size=96, max_size=128)
    config = tmp_path / 'co_dino_fsdp.py'
    base = ROOT / 'configs' / 'quickstart' / 'co_dino_r18_k2_quickstart_synthetic.py'
    config.write_text(_co_dino_config(base, data))
    _launch(config, tmp_path / 'out', 'iter_2.pth')
    _assert_runs(tmp_path / 'out', resume_iter=2, full=False)


def _co_dino_config(base: Path, data: Path) -> str:
    """The quick-start Co-DINO on 4 fixed 96 px images, 1 per rank, 4 iterations, clip 0.1
    (the official value), a sharded checkpoint after iteration 2, no evaluation."""
    return f'''_base_ = ['{base}']
pipe = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(96, 96), keep_ratio=True), dict(type='PackDetInputs')]
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                        sampler=dict(type='DefaultSampler', shuffle=False),
                        dataset=dict(data_root='{data}/', pipeline=pipe))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=4, val_interval=100)
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
param_scheduler = None
optim_wrapper = dict(clip_grad=dict(max_norm=0.1))
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=2, max_keep_ckpts=2),
                     logger=dict(interval=1))
custom_hooks = [dict(type='RecordTrainStepsHook')]
custom_imports = dict(imports=['tests.engine.toy'], allow_failed_imports=False)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_level = 'WARNING'
'''


def test_configure_strategy_maps_names_and_refuses_single_process():
    cfg = Config(dict(runner_type='CodetrRunner', strategy=dict(
        type='FSDPStrategy', state_dict_cfg='full')))
    configure_strategy(cfg, None, 'pytorch')
    assert cfg.runner_type == 'CodetrFlexibleRunner'
    assert cfg.strategy.type == 'codetr.CodetrFSDPStrategy'
    assert cfg.strategy.state_dict_cfg == 'full'  # the config's options stay
    assert cfg.strategy.model_wrapper.auto_wrap_policy.type == 'codetr.layer_wrap_policy'
    ddp = Config(dict(strategy=dict(type='FSDPStrategy', state_dict_cfg='full')))
    configure_strategy(ddp, 'ddp', 'pytorch')  # FSDP options do not carry over to DDP
    assert ddp.strategy == dict(type='codetr.CodetrDDPStrategy')
    untouched = Config(dict(runner_type='CodetrRunner'))
    configure_strategy(untouched, None, 'none')
    assert untouched.runner_type == 'CodetrRunner' and 'strategy' not in untouched
    with pytest.raises(ValueError, match='needs a distributed launch'):
        configure_strategy(Config(), 'fsdp', 'none')
    with pytest.raises(ValueError, match="strategy type 'DeepSpeedStrategy' is not one of"):
        configure_strategy(Config(dict(strategy=dict(type='DeepSpeedStrategy'))), None,
                           'pytorch')
