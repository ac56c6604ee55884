"""``train_step.py --strategy fsdp --nproc N``: training steps with the model sharded over N
processes (``CodetrFSDPStrategy``, gloo on a CPU, NCCL on GPUs), each rank's peak memory.

The parent process starts N ranks with ``torch.distributed.run``; each rank runs this
module's :func:`measure_rank` on its own synthetic batch (seed = rank), as a data-parallel
job would, and writes its JSON to ``--rank-out``. The parent merges them: per-rank figures
plus the largest peak and the slowest median step.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import (  # benchmarks/ is on sys.path, as in train_step.py
    PeakMemory,
    load_config,
    median,
    num_classes_of,
    sync,
    synthetic_batch,
)

ARGV_ENV = 'CODETR_BENCH_RANK_ARGV'  # the arguments of a rank started by ``launch``


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def launch(script: Path, argv: list[str], nproc: int) -> dict:
    """Run ``script argv --rank-out DIR`` on ``nproc`` ranks; the merged JSON."""
    with tempfile.TemporaryDirectory(prefix='codetr_fsdp_bench_') as out:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(nproc),
               '--master_port', str(_free_port()), str(script)]
        # The ranks' arguments travel in the environment: torchrun would take options such
        # as --nproc after the script for abbreviations of its own.
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(script.resolve().parents[1]), os.environ.get('PYTHONPATH', '')]),
            **{ARGV_ENV: json.dumps([*argv, '--rank-out', out])})
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f'the {nproc}-process FSDP run failed ({" ".join(cmd)}):\n'
                               f'{proc.stderr[-6000:]}')
        ranks = [json.loads((Path(out) / f'rank{r}.json').read_text()) for r in range(nproc)]
    return merge(ranks)


def merge(ranks: list[dict]) -> dict:
    """One JSON for the job: each rank's figures, the largest peak, the slowest step."""
    first = ranks[0]
    result = {k: first[k] for k in ('benchmark', 'config', 'device', 'threads', 'batch_size',
                                    'img_size', 'num_gt', 'iters', 'warmup', 'precision',
                                    'strategy', 'nproc', 'model_params', 'wrapped_units')}
    result.update(
        step_s=max(r['step_s'] for r in ranks),
        forward_s=max(r['forward_s'] for r in ranks),
        backward_step_s=max(r['backward_step_s'] for r in ranks),
        peak_mem_mb=max(r['peak_mem_mb'] for r in ranks),
        peak_mem_mb_per_rank=[r['peak_mem_mb'] for r in ranks],
        local_params_per_rank=[r['local_params'] for r in ranks],
        memory_per_rank=[r['memory'] for r in ranks],
    )
    result['images_per_s'] = round(result['batch_size'] * len(ranks) / result['step_s'], 3)
    return result


def measure_rank(args: argparse.Namespace, cfg_options: dict) -> dict:
    """Build, shard, warm up and time ``args.iters`` steps on this rank (under torchrun)."""
    from codetr.engine import CodetrFSDPStrategy, shutdown_distributed
    from codetr.engine.strategies import DEFAULT_FSDP_WRAPPER
    cfg = load_config(args.config, cfg_options)
    rank = int(os.environ['RANK'])
    backend = 'nccl' if args.device == 'cuda' else 'gloo'
    with tempfile.TemporaryDirectory(prefix=f'codetr_fsdp_rank{rank}_') as work_dir:
        strategy = CodetrFSDPStrategy(
            model_wrapper=dict(DEFAULT_FSDP_WRAPPER), work_dir=work_dir,
            env_kwargs=dict(launcher='pytorch', dist_cfg=dict(backend=backend),
                            randomness=dict(seed=0)),
            log_kwargs=dict(log_level='ERROR'))
        model, optim_wrapper = strategy.prepare(cfg.model, optim_wrapper=cfg.optim_wrapper)
    device = torch.device(args.device)
    raw = synthetic_batch(args.batch_size, args.img_size, args.num_gt,
                          num_classes_of(model.module), seed=rank)
    data = model.module.data_preprocessor(raw, training=True)
    model.train()
    memory = PeakMemory(device)
    memory.start()
    forward_s, backward_s = [], []
    for it in range(args.warmup + args.iters):
        sync(device)
        t0 = time.perf_counter()
        with optim_wrapper.optim_context(model):
            losses = model(**data, mode='loss')
        loss, _ = model.module.parse_losses(losses)
        sync(device)
        t1 = time.perf_counter()
        optim_wrapper.update_params(loss)
        sync(device)
        if it >= args.warmup:
            forward_s.append(t1 - t0)
            backward_s.append(time.perf_counter() - t1)
    report = memory.report()
    shutdown_distributed()
    step_s = median([f + b for f, b in zip(forward_s, backward_s)])
    kind = cfg.optim_wrapper.get('type', 'OptimWrapper')
    return {
        'benchmark': 'train_step', 'config': args.config, 'device': args.device,
        'threads': torch.get_num_threads(), 'batch_size': args.batch_size,
        'img_size': args.img_size, 'num_gt': args.num_gt, 'iters': args.iters,
        'warmup': args.warmup, 'strategy': 'fsdp', 'nproc': int(os.environ['WORLD_SIZE']),
        'precision': 'bfloat16-autocast' if kind == 'BFloat16OptimWrapper' else (
            'float16-autocast' if kind == 'AmpOptimWrapper' else 'float32'),
        'model_params': sum(_unsharded_numel(model)),
        'local_params': sum(p.numel() for p in model.parameters()),
        'wrapped_units': sum(1 for m in model.modules() if type(m).__name__.endswith(
            'FullyShardedDataParallel')),
        'step_s': round(step_s, 4), 'forward_s': round(median(forward_s), 4),
        'backward_step_s': round(median(backward_s), 4),
        'peak_mem_mb': report['peak_mb'], 'memory': report,
    }


def _unsharded_numel(model: torch.nn.Module) -> list[int]:
    """Numel of every original parameter (FSDP's flat parameters record their shapes)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    sizes = []
    for unit in FSDP.fsdp_modules(model):
        handle = unit._handle
        if handle is not None:
            sizes.extend(s.numel() for s in handle.flat_param._shapes)
    return sizes
