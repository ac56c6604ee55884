"""Train a detector from a config: ``codetr-train CONFIG [options]``.

``tools/train.py`` in a clone is the same command. CONFIG is a file, a path under the
configs folder or a short name (:func:`codetr.utils.resolve_config`). The flags are
MMDetection's. Distributed runs go through ``tools/dist_train.sh`` (torchrun,
``--launcher pytorch``) or ``tools/slurm_train.sh``; without CUDA they use the gloo backend
and DDP without device ids.

``--amp``: with CUDA, mmengine's ``AmpOptimWrapper`` (float16, dynamic loss scaling);
without CUDA, ``BFloat16OptimWrapper`` (bfloat16 autocast, no loss scaling), because
float16 autocast and mmengine's AMP wrapper are GPU-only.

``--strategy fsdp``: mmengine's ``FlexibleRunner`` with ``CodetrFSDPStrategy`` (parameters,
gradients and optimizer state sharded over the processes; CPU processes use gloo), e.g.
``tools/dist_train.sh CONFIG 8 --strategy fsdp``. A config can choose it too:
``runner_type='CodetrFlexibleRunner'`` and ``strategy=dict(type='CodetrFSDPStrategy', ...)``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

from codetr.cpu_runtime import configure_cpu_runtime

# Before torch loads: a bounded OpenMP spin (CODETR_OMP_SPIN=0 turns it off) and, where asked
# for with CODETR_LEAN_MALLOC=1, glibc's lean allocator (codetr/cpu_runtime.py). Nothing
# changes in a process that imported torch already.
configure_cpu_runtime()

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from codetr.cli.utils import CONFIG_HELP, command_name, fail, load_config  # noqa: E402

WORK_DIRS = './work_dirs'
PROG = command_name('codetr-train', 'tools/train.py')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description='Train a codetr detector')
    parser.add_argument('config', help=CONFIG_HELP)
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        f'(default: the config\'s work_dir, else {WORK_DIRS}/<config name>)')
    parser.add_argument('--amp', action='store_true', help='mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale lr by (GPUs x batch) / auto_scale_lr.base_batch_size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CHECKPOINT; without a path, from the latest '
                        'checkpoint in the work dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.lambda_2=1.0')
    parser.add_argument('--strategy', choices=['fsdp', 'ddp'],
                        help="train with mmengine's FlexibleRunner and this strategy: 'fsdp' "
                        'shards parameters, gradients and optimizer state over the processes '
                        "(needs a distributed launch); 'ddp' is the unsharded counterpart")
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local-rank', '--local_rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _fail(message: str) -> None:
    fail(PROG, message)


def build_cfg(args: argparse.Namespace) -> Config:
    """The config after applying the command-line flags (no Runner built)."""
    from codetr.engine import adapt_cfg_to_device, configure_strategy

    cfg = load_config(args.config, PROG)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join(WORK_DIRS, osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        _enable_amp(cfg)
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            _fail('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the '
                  'config (the total batch size its learning rate was tuned for)')
        cfg.auto_scale_lr.enable = True
        _count_accumulation(cfg)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    adapt_cfg_to_device(cfg, args.launcher)
    try:
        configure_strategy(cfg, args.strategy, args.launcher)
    except ValueError as err:
        _fail(str(err))
    return cfg


def _count_accumulation(cfg: Config) -> None:
    """mmengine scales the lr by (processes x batch) / base_batch_size, blind to gradient
    accumulation; dividing the base by ``accumulative_counts`` counts the accumulated batch."""
    counts = cfg.optim_wrapper.get('accumulative_counts', 1)
    if counts > 1:
        base = cfg.auto_scale_lr.base_batch_size
        cfg.auto_scale_lr.base_batch_size = base / counts
        print(f'--auto-scale-lr: optim_wrapper.accumulative_counts={counts}, so the lr scales '
              f'by (processes x batch x {counts}) / {base}', file=sys.stderr)


def _enable_amp(cfg: Config) -> None:
    wrapper = cfg.optim_wrapper
    if wrapper.get('type', 'OptimWrapper') in ('AmpOptimWrapper', 'BFloat16OptimWrapper'):
        print(f'--amp: the config already uses {wrapper.type}', file=sys.stderr)
        return
    if wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
        _fail(f'--amp replaces OptimWrapper, but the config uses {wrapper.type}')
    if torch.cuda.is_available():
        wrapper.type, wrapper.loss_scale = 'AmpOptimWrapper', 'dynamic'
    else:
        wrapper.type = 'BFloat16OptimWrapper'


def main(argv: list[str] | None = None) -> None:
    from codetr.engine import shutdown_distributed
    from codetr.registry import RUNNERS
    from codetr.utils import register_all_modules

    register_all_modules()
    cfg = build_cfg(parse_args(argv))
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    try:
        runner.train()
    finally:
        shutdown_distributed()


if __name__ == '__main__':
    main()
