"""Time ``model.predict`` on a synthetic batch; prints one JSON object.

    python benchmarks/inference.py CONFIG [--checkpoint PTH] [--batch-size 2] [--img-size 320]
        [--iters 5] [--warmup 1] [--threads N] [--device cpu|cuda] [--cfg-options k=v ...]
        [--compare CONFIG2 ...] [--variant NAME k=v ...]
        [--peer PORT_PATH [--peer-python PYTHON] [--rounds 3]] [--no-floor]
    python benchmarks/inference.py CONFIG --backend torch onnxruntime export
        [--batch-sizes 1 8] [--img-size 320 | 800x1333] [--ort-opt-level extended]
        [--ort-arena] [--ort-option KEY=VALUE ...] [--ort-profile] [...]

With ``--backend`` the backends run side by side (``backends.py``: one export, then one fresh
process per backend and batch size); without it, eager PyTorch as below.

The batch (random pixels, no boxes needed) goes through the model's data preprocessor once;
each timed iteration is one ``model(..., mode='predict')`` call under ``torch.no_grad`` in
eval mode: backbone, neck, encoder, decoder and post-processing (NMS if the config has it).
Without ``--checkpoint`` the weights are random, which times the same work, except that
NMS cost depends on how many boxes overlap. ``matrix_floor`` is the call's matrix-product
floor (matrix_floor.py). With ``--peer PATH`` the MMDetection port is measured alternately
with codetr on the same batch (side_by_side.py). See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from codetr.cpu_runtime import configure_cpu_runtime  # noqa: E402

# As the tools do, before torch loads (OpenMP and torch's allocator read it then): the
# bounded spin (CODETR_OMP_SPIN=0 off), the lean allocator with CODETR_LEAN_MALLOC=1 / thp.
# Imported by a process that has torch already (the tests), it changes nothing.
CPU_RUNTIME = configure_cpu_runtime()

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import (  # noqa: E402
    BACKENDS,
    ORT_LEVELS,
    measure_backends,
    parse_img_size,
    parse_ort_option,
)
from backends import compare as compare_backends  # noqa: E402
from common import (  # noqa: E402
    ComponentTimer,
    PeakMemory,
    attach_component_timers,
    build_model,
    load_config,
    median,
    minor_faults,
    num_classes_of,
    ratios_to_first,
    run_variants,
    sync,
    synthetic_batch,
    track,
)
from matrix_floor import measure_floor  # noqa: E402
from side_by_side import add_peer_args, compare, cpu_model, load_batch  # noqa: E402
from train_step import peer_batch, peer_codetr_argv, shared_argv, variant_argvs  # noqa: E402

from codetr.engine.checkpoint import load_checkpoint  # noqa: E402

COMPARED_KEYS = ('batch_s', 'peak_mem_mb')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint', default=None, help='local .pth (state_dict) to load')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--img-size', type=parse_img_size, default=320,
                        help='S (S x S) or HxW, e.g. 800x1333 (--backend runs)')
    parser.add_argument('--num-gt', type=int, default=3, help='unused by predict; kept so '
                        'that the settings match train_step.py')
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'))
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    parser.add_argument('--compare', nargs='+', default=[], metavar='CONFIG')
    parser.add_argument('--variant', nargs='+', action='append', default=[],
                        metavar=('NAME', 'KEY=VALUE'))
    parser.add_argument('--backend', nargs='+', choices=BACKENDS, default=None,
                        help='run these backends side by side (CPU); eager torch is always '
                        'run too, as the baseline of the ratios')
    parser.add_argument('--no-torch-baseline', action='store_true',
                        help='with --backend: run only the listed backends (no ratios '
                        'unless torch is listed)')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8],
                        help='batch sizes of the --backend runs')
    parser.add_argument('--ort-opt-level', choices=ORT_LEVELS, default='extended',
                        help='ONNX Runtime graph optimisation level')
    parser.add_argument('--ort-arena', action='store_true',
                        help="ONNX Runtime with its CPU memory arena (off by default: lower "
                        'peak memory)')
    parser.add_argument('--ort-option', nargs='+', default=[], metavar='KEY=VALUE',
                        type=parse_ort_option,
                        help='ONNX Runtime session setting over the runtime defaults: a '
                        'SessionOptions attribute (enable_mem_pattern=0) or a configuration '
                        'key (session.intra_op.allow_spinning=0)')
    parser.add_argument('--export-dir', default=None,
                        help='keep the weights and exported files here, and reuse them when '
                        'present (same config and --checkpoint: the graph takes any size)')
    parser.add_argument('--ort-profile', action='store_true',
                        help="add ONNX Runtime's profile (time per operator type) of one call "
                        'per batch size, from one more process')
    # internal: 'backend=file' pairs timed in turn by one child process of --backend
    parser.add_argument('--backend-run', nargs='+', help=argparse.SUPPRESS)
    add_peer_args(parser)
    return parser.parse_args(argv)


def load_weights(model: torch.nn.Module, path: str) -> None:
    """Strictly load a codetr checkpoint (``state_dict`` key or a bare state dict)."""
    checkpoint = load_checkpoint(path)
    state = checkpoint.get('state_dict', checkpoint)
    model.load_state_dict({k.removeprefix('module.'): v for k, v in state.items()})


def measure(args: argparse.Namespace) -> dict:
    """Build, warm up and time ``args.iters`` predict calls of one config."""
    device = torch.device(args.device)
    cfg = load_config(args.config, args.cfg_options)
    torch.manual_seed(0)
    model = build_model(cfg, device)
    if args.checkpoint:
        load_weights(model, args.checkpoint)
    model.eval()
    raw = (load_batch(args.batch_file) if args.batch_file else
           synthetic_batch(args.batch_size, args.img_size, args.num_gt, num_classes_of(model)))
    timer = ComponentTimer(device)
    included = attach_component_timers(model, timer)
    memory = PeakMemory(device)
    with torch.no_grad():
        data = model.data_preprocessor(raw, training=False)
        memory.start()
        times, parts = [], []
        faults = 0
        for it in track(range(args.warmup + args.iters), 'inference', unit='batches'):
            timer.reset()
            timer.active = it >= args.warmup
            faults = minor_faults() if it == args.warmup else faults
            sync(device)
            t0 = time.perf_counter()
            model(**data, mode='predict')
            sync(device)
            elapsed = time.perf_counter() - t0
            if it >= args.warmup:
                times.append(elapsed)
                parts.append(dict(timer.times, rest=elapsed - sum(timer.times.values())))
    # aux heads and positive queries never run in predict (eval_module='detr')
    included = {k: v for k, v in included.items()
                if not k.startswith(('aux_head.', 'positive_queries', 'query_head_rest'))}
    included['rest'] = 'predict minus the above: query selection, post-processing (top-k, NMS)'
    result = summarise(args, times, parts, included, memory.report())
    result['cpu_runtime'] = CPU_RUNTIME
    result['page_faults_per_batch'] = (minor_faults() - faults) // max(args.iters, 1)
    if args.floor and device.type == 'cpu':

        def step() -> None:
            with torch.no_grad():
                model(**data, mode='predict')

        result['matrix_floor'] = measure_floor(step, result['batch_s'])
    return result


def summarise(args: argparse.Namespace, times: list[float], parts: list[dict], included: dict,
              memory: dict) -> dict:
    batch_s = median(times)
    return {
        'benchmark': 'inference', 'config': args.config, 'checkpoint': args.checkpoint,
        'device': args.device, 'cpu_model': cpu_model(), 'threads': torch.get_num_threads(),
        'batch_size': args.batch_size, 'img_size': args.img_size, 'iters': args.iters,
        'warmup': args.warmup, 'batch_s': round(batch_s, 4),
        'images_per_s': round(args.batch_size / batch_s, 3),
        'split_s': {n: round(median([p.get(n, 0.0) for p in parts]), 4) for n in included},
        'components_included': included,
        'peak_mem_mb': memory['peak_mb'], 'memory': memory,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.backend or args.backend_run) and not isinstance(args.img_size, int):
        raise SystemExit('inference.py: error: --img-size HxW is for --backend runs; give one '
                         'side S (S x S) otherwise')
    if args.backend and args.device != 'cpu':
        raise SystemExit('inference.py: error: --backend runs on the CPU (no --device cuda)')
    if args.backend and not args.no_torch_baseline and 'torch' not in args.backend:
        args.backend = ['torch', *args.backend]
    if args.backend_run:
        result = measure_backends(args)
    elif args.backend:
        result = compare_backends(args, Path(__file__))
    elif args.peer:
        argv = peer_codetr_argv(args) + (['--checkpoint', args.checkpoint]
                                         if args.checkpoint else [])
        result = compare(args, Path(__file__), argv, peer_batch(args), 'predict', 'batch_s')
    elif args.compare or args.variant:
        argv_common = shared_argv(args) + (['--checkpoint', args.checkpoint]
                                           if args.checkpoint else [])
        runs = run_variants(Path(__file__), argv_common, variant_argvs(args))
        result = {'benchmark': 'inference', 'runs': runs,
                  'ratios_to_first': ratios_to_first(runs, COMPARED_KEYS)}
    else:
        result = measure(args)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
