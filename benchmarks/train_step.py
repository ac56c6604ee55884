"""Time full training steps (forward, backward, optimizer step) of a config's model; prints
one JSON object.

    python benchmarks/train_step.py CONFIG [--batch-size 2] [--img-size 320] [--num-gt 3]
        [--iters 5] [--warmup 2] [--threads N] [--device cpu|cuda] [--cfg-options k=v ...]
        [--amp] [--glibc-tunables [VALUE]] [--compare CONFIG2 ...] [--variant NAME k=v ...]
        [--peer PORT_PATH [--peer-python PYTHON] [--rounds 3]] [--no-floor]

``--amp`` trains as ``tools/train.py --amp`` does (bfloat16 autocast on a CPU, float16 with
loss scaling on CUDA). ``--glibc-tunables`` measures in a child process whose glibc malloc
serves every allocation of 4 MB or more with its own mapping (returned to the OS when
freed) and asks for transparent huge pages (default value ``glibc.malloc.hugetlb=1:
glibc.malloc.mmap_threshold=4194304``): a lower peak RSS for some time. The JSON says which
precision and malloc settings were used (``precision``, ``glibc_tunables``).

The batch is synthetic (random pixels, ``--num-gt`` random boxes per image), passed once
through the model's data preprocessor; data loading is not timed. The optimizer is the
config's ``optim_wrapper`` (AdamW, gradient clipping). The forward pass is split by
component (see the ``components_included`` key of the output); ``backward_step_s`` is the
backward pass plus the optimizer step.

``matrix_floor`` is the step's matrix-product floor measured in the same process (the
step's matrix products timed alone, matrix_floor.py) and ``step_over_floor`` = step / floor.

With ``--compare`` or ``--variant``, every config / variant runs in its own process (the
CPU peak-RSS figure only ever grows within one process) and the output holds each run and
its ratios to the first one. With ``--peer PATH`` the MMDetection port at PATH is measured
with the same batch, optimizer, threads and steps, alternating with codetr in fresh
processes (side_by_side.py).

``--strategy fsdp --nproc N`` shards the model over N processes (``CodetrFSDPStrategy``,
encoder layers and backbone blocks as FSDP units; gloo on a CPU) and reports every rank's
peak memory, each rank training on its own synthetic batch (no forward split). See
benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from codetr.cpu_runtime import configure_cpu_runtime  # noqa: E402

# As the tools do, before torch loads (OpenMP and torch's allocator read it then): the
# bounded spin (CODETR_OMP_SPIN=0 off), the lean allocator with CODETR_LEAN_MALLOC=1 / thp.
# Imported by a process that has torch already (the tests), it changes nothing.
CPU_RUNTIME = configure_cpu_runtime()

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ComponentTimer,
    PeakMemory,
    SavedTensorMeter,
    attach_component_timers,
    build_model,
    load_config,
    median,
    minor_faults,
    num_classes_of,
    ratios_to_first,
    run_json,
    run_variants,
    sync,
    synthetic_batch,
    track,
)
from matrix_floor import measure_floor  # noqa: E402
from side_by_side import add_peer_args, compare, cpu_model, load_batch  # noqa: E402

RANK_ARGV_ENV = 'CODETR_BENCH_RANK_ARGV'  # sharded.ARGV_ENV: set for --strategy fsdp ranks
COMPARED_KEYS = ('step_s', 'forward_s', 'backward_step_s', 'peak_mem_mb')
# glibc malloc: a fixed 4 MB mmap threshold (the default one grows up to 32 MB as blocks are
# freed, after which freed blocks stay in the heap) and transparent huge pages for it.
LOW_MEMORY_TUNABLES = 'glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=4194304'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--img-size', type=int, default=320)
    parser.add_argument('--num-gt', type=int, default=3)
    parser.add_argument('--iters', type=int, default=5, help='timed steps')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps first')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision as tools/train.py --amp')
    parser.add_argument('--glibc-tunables', nargs='?', const=LOW_MEMORY_TUNABLES, default=None,
                        metavar='VALUE', help='GLIBC_TUNABLES of the measured process')
    parser.add_argument('--compare', nargs='+', default=[], metavar='CONFIG',
                        help='more configs measured in the same run (ratios to CONFIG)')
    parser.add_argument('--strategy', choices=('none', 'fsdp'), default='none',
                        help='fsdp: shard the model over --nproc processes')
    parser.add_argument('--nproc', type=int, default=2, help='processes with --strategy fsdp')
    parser.add_argument('--rank-out', help=argparse.SUPPRESS)  # set for the FSDP ranks
    parser.add_argument('--variant', nargs='+', action='append', default=[],
                        metavar=('NAME', 'KEY=VALUE'),
                        help='a variant of CONFIG: a name and cfg options, e.g. '
                             '--variant k0 model.aux_heads={} (repeatable)')
    add_peer_args(parser)
    return parser.parse_args(argv)


def shared_argv(args: argparse.Namespace) -> list[str]:
    """The measurement settings, passed on to each variant's process."""
    argv = ['--batch-size', str(args.batch_size), '--img-size', str(args.img_size),
            '--num-gt', str(args.num_gt), '--iters', str(args.iters),
            '--warmup', str(args.warmup), '--device', args.device]
    argv += ['--amp'] if getattr(args, 'amp', False) else []
    if getattr(args, 'glibc_tunables', None):
        argv += ['--glibc-tunables', args.glibc_tunables]
    argv += [] if getattr(args, 'floor', True) else ['--no-floor']
    return argv + (['--threads', str(args.threads)] if args.threads else [])


def amp_options(args: argparse.Namespace) -> dict:
    """The cfg options of ``--amp``: the optimizer wrapper ``tools/train.py --amp`` picks."""
    if not getattr(args, 'amp', False):
        return {}
    if args.device == 'cuda':
        return {'optim_wrapper.type': 'AmpOptimWrapper', 'optim_wrapper.loss_scale': 'dynamic'}
    return {'optim_wrapper.type': 'BFloat16OptimWrapper'}


def precision_of(cfg) -> str:
    """'bfloat16-autocast', 'float16-autocast' or 'float32', from the optimizer wrapper."""
    kind = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if kind == 'BFloat16OptimWrapper':
        return 'bfloat16-autocast'
    if kind == 'AmpOptimWrapper':
        return f"{cfg.optim_wrapper.get('dtype') or 'float16'}-autocast"
    return 'float32'


def rerun_with_tunables(script: Path, args: argparse.Namespace,
                        argv: list[str] | None) -> dict | None:
    """With ``--glibc-tunables``, measure in a child process that has them (glibc reads
    GLIBC_TUNABLES at process start only); None when this process already has them."""
    value = args.glibc_tunables
    if not value or os.environ.get('GLIBC_TUNABLES') == value:
        return None
    cmd = [sys.executable, str(script), *(sys.argv[1:] if argv is None else argv)]
    return run_json(cmd, f'the run with GLIBC_TUNABLES={value}',
                    env={**os.environ, 'GLIBC_TUNABLES': value})


def variant_argvs(args: argparse.Namespace) -> dict[str, list[str]]:
    """``{name: [config, --cfg-options ...]}`` for the base config, --compare and --variant."""
    base_opts = [f'{k}={v}' for k, v in args.cfg_options.items()]

    def with_opts(config: str, opts: list[str]) -> list[str]:
        return [config, '--cfg-options', *opts] if opts else [config]

    variants = {Path(args.config).stem: with_opts(args.config, base_opts)}
    for config in args.compare:
        variants[Path(config).stem] = with_opts(config, base_opts)
    for name, *opts in args.variant:
        variants[name] = with_opts(args.config, base_opts + opts)
    return variants


def measure(args: argparse.Namespace) -> dict:
    """Build, warm up and time ``args.iters`` training steps of one config."""
    device = torch.device(args.device)
    cfg = load_config(args.config, {**args.cfg_options, **amp_options(args)})
    torch.manual_seed(0)
    model = build_model(cfg, device)
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    raw = (load_batch(args.batch_file) if args.batch_file else
           synthetic_batch(args.batch_size, args.img_size, args.num_gt, num_classes_of(model)))
    data = model.data_preprocessor(raw, training=True)
    timer = ComponentTimer(device)
    included = attach_component_timers(model, timer)
    memory = PeakMemory(device)
    memory.start()
    saved = SavedTensorMeter()
    forward_s, backward_s, parts = [], [], []
    faults = 0
    # Activations are counted in the first warm-up step, or in an extra untimed step first.
    steps = [-1] * (args.warmup == 0) + list(range(args.warmup + args.iters))
    for it in track(steps, 'train_step', unit='steps'):
        timer.reset()
        timer.active = it >= args.warmup
        faults = minor_faults() if it == args.warmup else faults
        sync(device)
        t0 = time.perf_counter()
        counting = saved.recording(model) if it == (0 if args.warmup else -1) else nullcontext()
        with optim_wrapper.optim_context(model), counting:  # autocast: BFloat16OptimWrapper
            losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        sync(device)
        t1 = time.perf_counter()
        timer.active = False  # checkpoint recomputation in backward is not forward time
        optim_wrapper.update_params(loss)
        sync(device)
        t2 = time.perf_counter()
        if it >= args.warmup:
            forward_s.append(t1 - t0)
            backward_s.append(t2 - t1)
            parts.append(dict(timer.times, query_head_rest=(t1 - t0) - sum(timer.times.values())))
    result = summarise(args, cfg, forward_s, backward_s, parts, included, memory.report())
    result.update(activations_saved_mb=saved.saved_mb,
                  page_faults_per_step=(minor_faults() - faults) // max(args.iters, 1),
                  precision=precision_of(cfg),
                  glibc_tunables=os.environ.get('GLIBC_TUNABLES') or None,
                  cpu_runtime=CPU_RUNTIME)
    if args.floor and device.type == 'cpu':  # after the memory figures: it allocates too

        def step() -> None:
            with optim_wrapper.optim_context(model):
                loss, _ = model.parse_losses(model(**data, mode='loss'))
            optim_wrapper.update_params(loss)

        result['matrix_floor'] = measure_floor(step, result['step_s'])
    return result


def summarise(args: argparse.Namespace, cfg, forward_s: list[float], backward_s: list[float],
              parts: list[dict], included: dict, memory: dict) -> dict:
    step_s = median([f + b for f, b in zip(forward_s, backward_s)])
    names = list(included)
    result = {
        'benchmark': 'train_step', 'config': args.config, 'device': args.device,
        'cpu_model': cpu_model(), 'threads': torch.get_num_threads(),
        'batch_size': args.batch_size,
        'img_size': args.img_size, 'num_gt': args.num_gt, 'iters': args.iters,
        'warmup': args.warmup, 'num_aux_heads': len(cfg.model.get('aux_heads') or {}),
        'step_s': round(step_s, 4),
        'images_per_s': round(args.batch_size / step_s, 3),
        'forward_s': round(median(forward_s), 4),
        'backward_step_s': round(median(backward_s), 4),
        'forward_split_s': {n: round(median([p.get(n, 0.0) for p in parts]), 4) for n in names},
        'components_included': included,
        'peak_mem_mb': memory['peak_mb'], 'memory': memory,
    }
    return result


def peer_codetr_argv(args: argparse.Namespace) -> list[str]:
    """One codetr run of a side-by-side comparison: the config and settings, no --peer."""
    opts = [f'{k}={v}' for k, v in args.cfg_options.items()]
    argv = [args.config, *shared_argv(args)]
    argv = [a for a in argv if a not in ('--no-floor',)]
    return argv + (['--cfg-options', *opts] if opts else [])


def peer_batch(args: argparse.Namespace) -> dict:
    """The synthetic batch of a side-by-side run (labels below the config's class count)."""
    cfg = load_config(args.config, args.cfg_options)
    num_classes = int(cfg.model.query_head.get('num_classes', 1))
    return synthetic_batch(args.batch_size, args.img_size, args.num_gt, num_classes)


def sharded_run(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """``--strategy fsdp``: as a rank, measure and write ``rank{r}.json``; otherwise start the
    ranks and merge their figures."""
    import sharded
    if args.compare or args.variant:
        raise SystemExit('--strategy fsdp measures one config: drop --compare / --variant')
    if args.rank_out is None:
        return sharded.launch(Path(__file__), sys.argv[1:] if argv is None else list(argv),
                              args.nproc)
    result = sharded.measure_rank(args, {**args.cfg_options, **amp_options(args)})
    rank = os.environ['RANK']
    Path(args.rank_out, f'rank{rank}.json').write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> dict:
    if argv is None and RANK_ARGV_ENV in os.environ:  # a rank of --strategy fsdp
        argv = json.loads(os.environ[RANK_ARGV_ENV])
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tuned = rerun_with_tunables(Path(__file__), args, argv)
    if tuned is not None:
        result = tuned
    elif args.peer:
        result = compare(args, Path(__file__), peer_codetr_argv(args), peer_batch(args),
                         'train', 'step_s')
    elif args.strategy == 'fsdp':
        result = sharded_run(args, argv)
        if args.rank_out:  # a rank: its JSON goes to the parent through a file
            return result
    elif args.compare or args.variant:
        runs = run_variants(Path(__file__), shared_argv(args), variant_argvs(args))
        result = {'benchmark': 'train_step', 'runs': runs,
                  'ratios_to_first': ratios_to_first(runs, COMPARED_KEYS)}
    else:
        result = measure(args)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
