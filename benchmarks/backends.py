"""Prediction with PyTorch (eager), ONNX Runtime and a torch.export program, side by side.

Used by ``inference.py --backend torch onnxruntime export``. The parent process builds the
model once (seeded random weights, or ``--checkpoint``), saves its weights and exports one
dynamic-shape graph (ONNX and ``.pt2`` from one trace); then every (backend, batch size)
pair runs in a fresh process (peak RSS only grows within a process) that times ``predict``
on the same preprocessed synthetic batch: eager ``model.predict``, or the exported graph plus
the same post-processing (threshold, rescale, soft-NMS where the config has it). Data
loading and preprocessing are not timed in any.
"""
from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import (
    PeakMemory,
    build_model,
    load_config,
    median,
    run_json,
    synthetic_batch,
)

BACKENDS = ('torch', 'onnxruntime', 'export')
EXPORT_FORMATS = {'onnxruntime': 'onnx', 'export': 'torch_export'}
SUFFIXES = {'onnx': '.onnx', 'torch_export': '.pt2'}
ORT_LEVELS = ('disable', 'basic', 'extended', 'all')


def parse_img_size(text: str) -> int | tuple[int, int]:
    """``'320'`` -> 320 (square), ``'800x1333'`` -> (800, 1333) (height x width)."""
    if 'x' in text:
        height, width = (int(v) for v in text.split('x'))
        return height, width
    return int(text)


def _hw(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)


def prepare(args, workdir: Path) -> dict:
    """Build the model, save its weights, export the formats the backends need."""
    from codetr.deployment.export import InputSpec, export_model

    cfg = load_config(args.config, args.cfg_options)
    torch.manual_seed(0)
    model = build_model(cfg, torch.device('cpu')).eval()
    if args.checkpoint:
        from inference import load_weights
        load_weights(model, args.checkpoint)
    weights = workdir / 'weights.pth'
    torch.save({'state_dict': model.state_dict()}, weights)
    formats = {EXPORT_FORMATS[b] for b in args.backend if b in EXPORT_FORMATS}
    paths = {fmt: workdir / f'model{SUFFIXES[fmt]}' for fmt in sorted(formats)}
    export_s = None
    if paths:
        height, width = _hw(args.img_size)
        spec = InputSpec(batch=max(args.batch_sizes), height=height, width=width, dynamic=True,
                         max_side=max(2048, height, width))
        start = time.perf_counter()
        export_model(model, paths, spec)
        export_s = round(time.perf_counter() - start, 1)
    return dict(weights=str(weights), files={k: str(v) for k, v in paths.items()},
                export_s=export_s)


def compare(args, script: Path) -> dict:
    """Every backend at every batch size, each in a fresh process; ratios to torch."""
    with tempfile.TemporaryDirectory(prefix='codetr_backends_') as tmp:
        prepared = prepare(args, Path(tmp))
        runs: dict[str, dict] = {}
        for backend in args.backend:
            for batch in args.batch_sizes:
                model_file = (prepared['files'][EXPORT_FORMATS[backend]]
                              if backend in EXPORT_FORMATS else prepared['weights'])
                argv = [sys.executable, str(script), args.config, '--backend-run', backend,
                        '--model-file', model_file, '--batch-size', str(batch),
                        '--img-size', _size_text(args.img_size), '--iters', str(args.iters),
                        '--warmup', str(args.warmup), '--ort-opt-level', args.ort_opt_level]
                if args.threads:
                    argv += ['--threads', str(args.threads)]
                if args.ort_no_arena:
                    argv.append('--ort-no-arena')
                if args.cfg_options:
                    argv += ['--cfg-options'] + [f'{k}={v}' for k, v in args.cfg_options.items()]
                runs.setdefault(backend, {})[f'batch_{batch}'] = run_json(
                    argv, f'{backend} batch {batch}')
    return {'benchmark': 'inference_backends', 'config': args.config,
            'img_size': _size_text(args.img_size), 'threads': args.threads,
            'export_s': prepared['export_s'], 'runs': runs,
            'vs_torch': _vs_torch(runs)}


def _size_text(img_size: int | tuple[int, int]) -> str:
    height, width = _hw(img_size)
    return str(height) if height == width else f'{height}x{width}'


def _vs_torch(runs: dict) -> dict:
    """Per backend and batch size: ``speedup`` = torch time / backend time, and
    ``memory_ratio`` = backend peak RSS / torch peak RSS (targets: ONNX Runtime >= 1.5x at
    batch 1, memory <= 1)."""
    if 'torch' not in runs:
        return {}
    ratios = {}
    for backend, by_batch in runs.items():
        ratios[backend] = {
            key: {'speedup': round(runs['torch'][key]['batch_s'] / run['batch_s'], 3),
                  'memory_ratio': round(run['peak_mem_mb'] / runs['torch'][key]['peak_mem_mb'],
                                        3)}
            for key, run in by_batch.items() if key in runs['torch']}
    return ratios


def _predictor(args, cfg):
    """``(predict(inputs, samples), data_preprocessor)`` for ``args.backend_run``."""
    if args.backend_run == 'torch':
        from inference import load_weights
        model = build_model(cfg, torch.device('cpu')).eval()
        load_weights(model, args.model_file)
        return model.predict, model.data_preprocessor
    from codetr.deployment.runtime import OnnxDetector, ProgramDetector
    if args.backend_run == 'onnxruntime':
        import onnxruntime as ort
        level = {'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                 'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                 'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                 'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[args.ort_opt_level]
        options = dict(graph_optimization_level=level,
                       enable_cpu_mem_arena=not args.ort_no_arena)
        runner = OnnxDetector(args.model_file, cfg, threads=args.threads,
                              session_options=options)
    else:
        runner = ProgramDetector(args.model_file, cfg)
    return runner.predict, runner.data_preprocessor


def measure_backend(args) -> dict:
    """Time ``predict`` of one backend at one batch size (run in its own process)."""
    cfg = load_config(args.config, args.cfg_options)
    torch.manual_seed(0)
    predict, preprocessor = _predictor(args, cfg)
    num_classes = cfg.model.query_head.num_classes
    raw = synthetic_batch(args.batch_size, args.img_size, 0, num_classes)
    memory = PeakMemory(torch.device('cpu'))
    times = []
    with torch.no_grad():
        data = preprocessor(raw, False)
        memory.start()
        for it in range(args.warmup + args.iters):
            samples = copy.deepcopy(data['data_samples'])
            start = time.perf_counter()
            predict(data['inputs'], samples)
            if it >= args.warmup:
                times.append(time.perf_counter() - start)
    batch_s = median(times)
    report = memory.report()
    return {'backend': args.backend_run, 'batch_size': args.batch_size,
            'img_size': _size_text(args.img_size), 'threads': torch.get_num_threads(),
            'iters': args.iters, 'batch_s': round(batch_s, 4),
            'per_image_s': round(batch_s / args.batch_size, 4),
            'images_per_s': round(args.batch_size / batch_s, 3), 'times_s': [
                round(t, 4) for t in times],
            'peak_mem_mb': report['peak_mb'], 'memory': report,
            'ort_opt_level': args.ort_opt_level if args.backend_run == 'onnxruntime' else None}


__all__ = ['BACKENDS', 'ORT_LEVELS', 'compare', 'measure_backend', 'parse_img_size']
