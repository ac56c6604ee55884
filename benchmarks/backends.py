"""Prediction with PyTorch (eager), ONNX Runtime and a torch.export program, side by side.

Used by ``inference.py --backend torch onnxruntime export``. The parent process builds the
model once (seeded random weights, or ``--checkpoint``), saves its weights and exports one
dynamic-shape graph (ONNX and ``.pt2`` from one trace). Then, per batch size:

- **time**: one fresh process holds every backend and calls them in turn, ``--iters`` rounds
  after ``--warmup``: on a shared machine the load drifts over minutes, and alternating
  puts each backend's calls in the same conditions (medians per backend);
- **memory**: one fresh process per backend makes one call and reports its peak RSS over
  it (Linux's high-water mark is reset before it, so the model's construction does not
  count; imports, weights and runtime stay resident and do). A lone backend
  (``--no-torch-baseline``) takes it from its timing process, over all its calls.

Each call is ``predict`` on the same preprocessed synthetic batch: eager ``model.predict``,
or the exported graph plus the same post-processing (threshold, rescale, soft-NMS where the
config has it). Data loading and preprocessing are not timed. ``--export-dir`` keeps the
weights and exported files for a later run (the graph takes any batch and size), and
``--ort-profile`` adds ONNX Runtime's time per operator type (one more process per batch).
"""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import build_model, load_config, median, run_json
from mmengine.structures import InstanceData

from codetr.structures import DetDataSample

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


def parse_ort_option(text: str) -> tuple[str, bool | int | str]:
    """``'enable_mem_pattern=0'`` -> ``('enable_mem_pattern', False)``; a dotted key
    (``session.intra_op.allow_spinning=0``) keeps its value as text."""
    key, sep, value = text.partition('=')
    if not sep or not key:
        raise ValueError(f'--ort-option takes KEY=VALUE, not {text!r}')
    if '.' in key:
        return key, value
    if value.lower() in ('0', '1', 'true', 'false'):
        return key, value.lower() in ('1', 'true')
    return key, int(value) if value.lstrip('-').isdigit() else value


def _hw(img_size: int | tuple[int, int]) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)


def synthetic_images(batch_size: int, img_size: int | tuple[int, int], seed: int = 0) -> dict:
    """A raw batch as the test dataloader gives it: uint8 (3, H, W) random images (``img_size``
    S for S x S, or (H, W)) and samples with their metainfo, no boxes (predict needs none)."""
    height, width = _hw(img_size)
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, height, width), generator=g,
                                    dtype=torch.uint8))
        sample = DetDataSample(metainfo=dict(
            img_id=i, img_path=f'synthetic_{i}.jpg', img_shape=(height, width),
            ori_shape=(height, width), scale_factor=(1.0, 1.0), flip=False,
            flip_direction=None))
        sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4),
                                           labels=torch.zeros(0, dtype=torch.long))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark in MB: Linux's ``VmHWM``, which belongs to
    the process's own address space (``ru_maxrss`` survives ``exec``: a child started by a
    large parent reports at least the parent's size at the fork)."""
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError('no VmHWM in /proc/self/status: the backend benchmark needs Linux')


class PeakSinceStart:
    """Peak RSS in MB from ``start()`` on: writing 5 to ``/proc/self/clear_refs`` (Linux >= 4.0)
    resets ``VmHWM`` to the current RSS, so the model's construction does not count."""

    def __init__(self) -> None:
        self.baseline_mb = 0.0
        self.reset = False

    def start(self) -> None:
        try:
            with open('/proc/self/clear_refs', 'w') as refs:
                refs.write('5')
            self.reset = True
        except OSError:  # the peak then includes what came before start()
            self.reset = False
        self.baseline_mb = peak_rss_mb()

    def report(self) -> dict:
        peak = peak_rss_mb()
        return {'kind': 'cpu_peak_rss_since_start' if self.reset else 'cpu_peak_rss',
                'peak_mb': round(peak, 1), 'baseline_mb': round(self.baseline_mb, 1),
                'delta_mb': round(peak - self.baseline_mb, 1)}


def prepare(args, workdir: Path) -> dict:
    """Build the model, save its weights, export the formats the backends need."""
    from codetr.deployment.export import InputSpec, export_model

    weights = workdir / 'weights.pth'
    formats = {EXPORT_FORMATS[b] for b in args.backend if b in EXPORT_FORMATS}
    paths = {fmt: workdir / f'model{SUFFIXES[fmt]}' for fmt in sorted(formats)}
    if all(p.is_file() for p in (weights, *paths.values())):
        # --export-dir of an earlier run of the same config and --checkpoint
        return dict(weights=str(weights), files={k: str(v) for k, v in paths.items()},
                    export_s=None, reused_export=str(workdir))
    cfg = load_config(args.config, args.cfg_options)
    torch.manual_seed(0)
    model = build_model(cfg, torch.device('cpu')).eval()
    if args.checkpoint:
        from inference import load_weights
        load_weights(model, args.checkpoint)
    torch.save({'state_dict': model.state_dict()}, weights)
    export_s = None
    if paths:
        height, width = _hw(args.img_size)
        spec = InputSpec(batch=max(args.batch_sizes), height=height, width=width, dynamic=True,
                         max_side=max(2048, height, width))
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the exporter's progress lines
            export_model(model, paths, spec)
        export_s = round(time.perf_counter() - start, 1)
    return dict(weights=str(weights), files={k: str(v) for k, v in paths.items()},
                export_s=export_s, reused_export=None)


def compare(args, script: Path) -> dict:
    """Every backend at every batch size; ratios to torch (see the module note). With
    ``--ort-profile`` one more process per batch size runs ONNX Runtime's profiler."""
    with contextlib.ExitStack() as stack:
        if args.export_dir:
            workdir = Path(args.export_dir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix='codetr_backends_')))
        prepared = prepare(args, workdir)
        files = {b: prepared['files'][EXPORT_FORMATS[b]] if b in EXPORT_FORMATS
                 else prepared['weights'] for b in args.backend}
        runs: dict[str, dict] = {b: {} for b in args.backend}
        for batch in args.batch_sizes:
            timed = run_json(_child_argv(args, script, batch, files, args.iters),
                             f'timing at batch {batch}')
            for backend in args.backend:
                # a lone backend's timing process is its own: its peak is the backend's
                memory = timed if len(args.backend) == 1 else run_json(
                    _child_argv(args, script, batch, {backend: files[backend]}, iters=1,
                                warmup=0), f'{backend} memory at batch {batch}')
                runs[backend][f'batch_{batch}'] = {
                    **timed[backend], 'peak_mem_mb': memory[backend]['peak_mem_mb'],
                    'memory': memory[backend]['memory']}
            if args.ort_profile and 'onnxruntime' in files:
                profiled = run_json(_child_argv(args, script, batch,
                                                {'onnxruntime': files['onnxruntime']}, iters=1,
                                                warmup=1) + ['--ort-profile'],
                                    f'onnxruntime profile at batch {batch}')
                runs['onnxruntime'][f'batch_{batch}']['profile'] = \
                    profiled['onnxruntime']['profile']
    return {'benchmark': 'inference_backends', 'config': args.config,
            'img_size': _size_text(args.img_size), 'threads': args.threads,
            'iters': args.iters, 'warmup': args.warmup, 'ort_options': dict(args.ort_option),
            'export_s': prepared['export_s'],
            'reused_export': prepared['reused_export'], 'runs': runs,
            'vs_torch': _vs_torch(runs)}


def _child_argv(args, script: Path, batch: int, files: dict[str, str], iters: int,
                warmup: int | None = None) -> list:
    warmup = args.warmup if warmup is None else warmup
    argv = [sys.executable, str(script), args.config, '--backend-run',
            *[f'{backend}={path}' for backend, path in files.items()],
            '--batch-size', str(batch), '--img-size', _size_text(args.img_size),
            '--iters', str(iters), '--warmup', str(warmup),
            '--ort-opt-level', args.ort_opt_level]
    if args.threads:
        argv += ['--threads', str(args.threads)]
    if args.ort_arena:
        argv.append('--ort-arena')
    if args.ort_option:
        argv += ['--ort-option'] + [f'{k}={v}' for k, v in args.ort_option]
    if args.cfg_options:
        argv += ['--cfg-options'] + [f'{k}={v}' for k, v in args.cfg_options.items()]
    return argv


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


def _predictor(args, backend: str, model_file: str, cfg):
    """``(predict(inputs, samples), data_preprocessor, runner)`` of one backend (``runner``:
    the ``OnnxDetector`` / ``ProgramDetector``, None for torch)."""
    if backend == 'torch':
        from inference import load_weights
        model = build_model(cfg, torch.device('cpu')).eval()
        load_weights(model, model_file)
        return model.predict, model.data_preprocessor, None
    from codetr.deployment.runtime import OnnxDetector, ProgramDetector
    if backend == 'onnxruntime':
        import onnxruntime as ort
        level = {'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                 'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                 'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                 'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[args.ort_opt_level]
        options = dict(graph_optimization_level=level,
                       enable_cpu_mem_arena=args.ort_arena,
                       enable_profiling=bool(getattr(args, 'ort_profile', False)),
                       **dict(args.ort_option))
        if options['enable_profiling']:  # the trace goes to a temporary file, removed once read
            options['profile_file_prefix'] = os.path.join(tempfile.mkdtemp(), 'ort_profile')
        runner = OnnxDetector(model_file, cfg, threads=args.threads, session_options=options)
    else:
        runner = ProgramDetector(model_file, cfg)
    return runner.predict, runner.data_preprocessor, runner


def profile_summary(profile_file: str, top: int = 12) -> dict:
    """Operator time of the last ``model_run`` in an ONNX Runtime profile (its JSON trace):
    the ``top`` operator types by summed kernel time (ms, share of the run), and the 5
    slowest nodes."""
    import json
    with open(profile_file) as handle:
        events = json.load(handle)
    run = max((e for e in events if e.get('name') == 'model_run'), key=lambda e: e['ts'])
    begin, end = run['ts'], run['ts'] + run['dur']
    kernels = [e for e in events if e.get('cat') == 'Node' and begin <= e['ts'] <= end
               and e.get('name', '').endswith('_kernel_time')]
    by_type: dict[str, float] = {}
    for event in kernels:
        op = event.get('args', {}).get('op_name', '?')
        by_type[op] = by_type.get(op, 0.0) + event['dur']
    run_ms = run['dur'] / 1000
    ranked = sorted(by_type.items(), key=lambda item: -item[1])
    slowest = sorted(kernels, key=lambda e: -e['dur'])[:5]
    return {'run_ms': round(run_ms, 1),
            'kernels_ms': round(sum(by_type.values()) / 1000, 1),
            'op_types': [{'op': op, 'ms': round(us / 1000, 1),
                          'share': round(us / 1000 / run_ms, 3)} for op, us in ranked[:top]],
            'slowest_nodes': [{'node': e['name'].removesuffix('_kernel_time'),
                               'op': e.get('args', {}).get('op_name'),
                               'ms': round(e['dur'] / 1000, 1)} for e in slowest]}


def measure_backends(args) -> dict:
    """Time the backends of ``args.backend_run`` (``name=file`` each) in turn, in this
    process; with one backend its peak RSS is the backend's own."""
    cfg = load_config(args.config, args.cfg_options)
    torch.manual_seed(0)
    memory = PeakSinceStart()
    predictors, runners, data = {}, {}, None
    for item in args.backend_run:
        backend, _, model_file = item.partition('=')
        predictors[backend], preprocessor, runners[backend] = _predictor(args, backend,
                                                                         model_file, cfg)
        if data is None:
            raw = synthetic_images(args.batch_size, args.img_size)
            with torch.no_grad():
                data = preprocessor(raw, False)
    memory.start()
    times: dict[str, list[float]] = {b: [] for b in predictors}
    with torch.no_grad():
        for it in range(args.warmup + args.iters):
            for backend, predict in predictors.items():
                samples = copy.deepcopy(data['data_samples'])
                start = time.perf_counter()
                predict(data['inputs'], samples)
                if it >= args.warmup:
                    times[backend].append(time.perf_counter() - start)
    report = memory.report()
    result = {backend: _summary(args, backend, backend_times, report)
              for backend, backend_times in times.items()}
    if args.ort_profile and 'onnxruntime' in runners:
        trace = runners['onnxruntime'].session.end_profiling()
        result['onnxruntime']['profile'] = profile_summary(trace)
        shutil.rmtree(os.path.dirname(os.path.abspath(trace)), ignore_errors=True)
    return result


def _summary(args, backend: str, times: list[float], memory: dict) -> dict:
    batch_s = median(times)
    return {'backend': backend, 'batch_size': args.batch_size,
            'img_size': _size_text(args.img_size), 'threads': torch.get_num_threads(),
            'iters': args.iters, 'batch_s': round(batch_s, 4),
            'per_image_s': round(batch_s / args.batch_size, 4),
            'images_per_s': round(args.batch_size / batch_s, 3),
            'times_s': [round(t, 4) for t in times], 'peak_mem_mb': memory['peak_mb'],
            'memory': memory,
            'ort_opt_level': args.ort_opt_level if backend == 'onnxruntime' else None,
            'ort_options': dict(args.ort_option) if backend == 'onnxruntime' else None}


__all__ = ['BACKENDS', 'ORT_LEVELS', 'compare', 'measure_backends', 'parse_img_size',
           'parse_ort_option']
