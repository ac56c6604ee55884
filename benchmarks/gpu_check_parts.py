"""The checks of ``benchmarks/gpu_check.py``, imported once its dependencies are known to be
installed. Each check returns ``{'ok': bool, ...figures}`` and appends what it could not run
on this device to ``skipped`` with the reason."""
from __future__ import annotations

import argparse
import math
import platform
import socket
import statistics
import time

import torch
from common import PeakMemory, load_config, median, num_classes_of, sync
from gpu_check import FULL_CONFIG, QUICK_CONFIG, ROOT, failure
from mmengine.optim import build_optim_wrapper
from mmengine.structures import InstanceData

from codetr.models.layers.ms_deform_attn.op import get_backend
from codetr.models.layers.ms_deform_attn.pytorch_backend import ms_deform_attn_pytorch
from codetr.structures import DetDataSample

STRIDES = (4, 8, 16, 32, 64)  # Co-DINO 5-scale
HEADS, HEAD_DIMS, POINTS, DECODER_QUERIES = 8, 32, 4, 900
DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
# Error norm relative to the float64 reference's norm, per storage dtype (float16 keeps 11
# significant bits, bfloat16 8).
TOLERANCE = {'float32': 1e-4, 'bfloat16': 2e-2, 'float16': 5e-3}
# The location gradient of bilinear sampling jumps where a point crosses a pixel edge, and
# float32 arithmetic puts some points on the other side than float64 does (measured 3e-4 to
# 2e-3 for the cpp and pytorch backends alike at 320 px): a looser bound for it.
LOCATION_TOLERANCE = {'float32': 1e-2, 'bfloat16': 5e-2, 'float16': 2e-2}


class Report:
    """Collects the checks' records and what was skipped."""

    def __init__(self) -> None:
        self.checks: dict[str, dict] = {}
        self.skipped: list[dict] = []

    def skip(self, check: str, reason: str) -> None:
        self.skipped.append({'check': check, 'reason': reason})

    def run(self, name: str, fn, *args) -> None:
        try:
            self.checks[name] = fn(*args)
        except Exception as err:  # noqa: BLE001 - a failed check is a result, not a crash
            self.checks[name] = failure(err)


def run_all(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    device = torch.device('cuda' if args.device == 'cuda' or (
        args.device == 'auto' and torch.cuda.is_available()) else 'cpu')
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: CUDA is not available to this torch')
    report = Report()
    if device.type == 'cpu':
        report.skip('cuda', 'no CUDA device: the CPU parts ran at small sizes; triton, AMP '
                    'float16 with mmengine\'s AmpOptimWrapper and NCCL need a GPU')
    report.run('ms_deform_attn', check_ms_deform_attn, device, args.quick, report)
    report.run('train_step', check_train_steps, device, args.quick, report)
    report.run('ddp', check_ddp, device, args.quick, report)
    report.run('predict', check_predict, device, args.quick, report)
    return {
        'benchmark': 'gpu_check', 'quick': args.quick, **environment(device),
        'checks': report.checks, 'skipped': report.skipped,
        'passed': all(c.get('ok') for c in report.checks.values()),
        'elapsed_s': round(time.perf_counter() - start, 1),
    }


def environment(device: torch.device) -> dict:
    import mmengine
    env = {'device': device.type, 'torch': torch.__version__, 'python': platform.python_version(),
           'mmengine': mmengine.__version__, 'threads': torch.get_num_threads()}
    if device.type == 'cuda':
        env.update(device_name=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    try:
        import triton
        env['triton'] = triton.__version__
    except ImportError:
        env['triton'] = None
    return env


# ------------------------------------------------------------------ deformable attention


def msda_inputs(batch: int, img_hw: tuple[int, int], queries: int | None,
                device: torch.device) -> tuple:
    """float64 op inputs at Co-DINO's shapes; ``queries=None``: one per value (encoder)."""
    gen = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[math.ceil(img_hw[0] / s), math.ceil(img_hw[1] / s)]
                           for s in STRIDES])
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    num_value = int(areas.sum())
    queries = num_value if queries is None else queries
    value = torch.randn(batch, num_value, HEADS, HEAD_DIMS, generator=gen, dtype=torch.float64)
    locs = torch.rand(batch, queries, HEADS, len(STRIDES), POINTS, 2, generator=gen,
                      dtype=torch.float64)
    weights = torch.rand(batch, queries, HEADS, len(STRIDES) * POINTS, generator=gen,
                         dtype=torch.float64).softmax(-1)
    weights = weights.view(batch, queries, HEADS, len(STRIDES), POINTS)
    grad = torch.randn(batch, queries, HEADS * HEAD_DIMS, generator=gen, dtype=torch.float64)
    return tuple(t.to(device) for t in (value, shapes, starts, locs, weights, grad))


def run_msda(fn, inputs: tuple, dtype: torch.dtype) -> tuple[list[torch.Tensor], float, float]:
    """Output and input gradients (float64) of ``fn`` with values and weights stored in
    ``dtype`` (locations float32, as the model gives them); forward and fwd+bwd seconds."""
    value, shapes, starts, locs, weights, grad = inputs
    loc_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    leaves = [t.detach().to(d).clone().requires_grad_()
              for t, d in ((value, dtype), (locs, loc_dtype), (weights, dtype))]
    sync(value.device)
    t0 = time.perf_counter()
    out = fn(leaves[0], shapes, starts, leaves[1], leaves[2])
    sync(value.device)
    t1 = time.perf_counter()
    out.backward(grad.to(out.dtype))
    sync(value.device)
    t2 = time.perf_counter()
    return [out.detach().double()] + [t.grad.double() for t in leaves], t1 - t0, t2 - t0


def rounded(inputs: tuple, dtype: torch.dtype) -> tuple:
    """``inputs`` with values and weights rounded to ``dtype`` and locations to float32 (what
    :func:`run_msda` gives the backends), stored in float64."""
    value, shapes, starts, locs, weights, grad = inputs
    return (value.to(dtype).double(), shapes, starts, locs.float().double(),
            weights.to(dtype).double(), grad)


def relative_errors(got: list[torch.Tensor], ref: list[torch.Tensor]) -> dict[str, float]:
    names = ('output', 'grad_value', 'grad_locations', 'grad_weights')
    # Norm-relative: a max-norm would report the few location-gradient jumps at pixel edges
    # (see LOCATION_TOLERANCE) rather than the kernel's accuracy.
    return {n: float((g - r).norm() / r.norm().clamp_min(1e-12))
            for n, g, r in zip(names, got, ref)}


def check_ms_deform_attn(device: torch.device, quick: bool, report: Report) -> dict:
    if device.type == 'cuda':
        cases = {'encoder': (2, (800, 1333), None), 'decoder': (2, (800, 1333), 900)}
        backends, repeat = ['triton', 'pytorch', 'mmcv'], 5
    else:
        hw = (64, 64) if quick else (320, 320)
        cases = {'encoder': (1, hw, None), 'decoder': (1, hw, 50 if quick else 900)}
        backends, repeat = ['cpp', 'pytorch'], 1 if quick else 2
        report.skip('ms_deform_attn.triton', 'the triton kernels need CUDA (tests run them '
                    'on a CPU under TRITON_INTERPRET=1, far too slow for these shapes)')
    fns = {}
    for name in backends:
        try:
            fns[name] = get_backend(name)
        except ImportError as err:
            report.skip(f'ms_deform_attn.{name}', str(err))
    results, ok = {}, True
    for case, (batch, hw, queries) in cases.items():
        exact = msda_inputs(batch, hw, queries, device)
        for dtype_name, dtype in DTYPES.items():
            if device.type == 'cpu' and dtype == torch.float16:
                report.skip(f'ms_deform_attn.{case}.float16', 'float16 is a GPU storage '
                            'format; on a CPU --amp uses bfloat16 (cpp reads float16 as '
                            'float32)')
                continue
            # The reference sees the inputs as rounded for the backends: a location rounded
            # across a pixel edge changes its gradient, which is not the kernel's error.
            inputs = rounded(exact, dtype)
            ref, _, _ = run_msda(ms_deform_attn_pytorch, inputs, torch.float64)
            for name, fn in fns.items():
                entry = measure_backend(fn, inputs, dtype, ref, repeat)
                errors = entry['errors']
                entry['ok'] = (errors['grad_locations'] <= LOCATION_TOLERANCE[dtype_name] and
                               max(v for k, v in errors.items() if k != 'grad_locations')
                               <= TOLERANCE[dtype_name])
                # The pytorch backend stores every intermediate in a low-precision dtype
                # (its location gradients lose most digits in bfloat16): shown, not judged.
                entry['judged'] = name != 'pytorch' or dtype_name == 'float32'
                ok &= entry['ok'] or not entry['judged']
                results[f'{case}.{dtype_name}.{name}'] = entry
    shapes = {case: dict(batch=b, image=list(hw), queries=q or 'one per value')
              for case, (b, hw, q) in cases.items()}
    return {'ok': ok, 'shapes': shapes, 'error': 'norm of the difference / norm of the float64 '
            'reference', 'tolerance': TOLERANCE, 'location_tolerance': LOCATION_TOLERANCE,
            'results': results}


def measure_backend(fn, inputs: tuple, dtype: torch.dtype, ref: list[torch.Tensor],
                    repeat: int) -> dict:
    forward, total, errors = [], [], {}
    for _ in range(repeat + 1):  # the first call compiles / warms up
        got, fwd_s, all_s = run_msda(fn, inputs, dtype)
        forward.append(fwd_s)
        total.append(all_s)
        errors = relative_errors(got, ref)
    return {'errors': {k: float(f'{v:.3g}') for k, v in errors.items()},
            'max_error': float(f'{max(errors.values()):.3g}'),
            'forward_ms': round(1e3 * statistics.median(forward[1:]), 3),
            'forward_backward_ms': round(1e3 * statistics.median(total[1:]), 3)}


# ------------------------------------------------------------------ training steps


def detection_batch(batch: int, hw: tuple[int, int], num_gt: int, num_classes: int) -> dict:
    """Random uint8 images of ``hw`` with ``num_gt`` random boxes each (input pixels)."""
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(batch):
        inputs.append(torch.randint(0, 256, (3, *hw), generator=gen, dtype=torch.uint8))
        size = torch.tensor([hw[1], hw[0]], dtype=torch.float32)
        xy = torch.rand(num_gt, 2, generator=gen) * size / 2
        wh = 16 + torch.rand(num_gt, 2, generator=gen) * (size / 2 - 16)
        sample = DetDataSample(metainfo=dict(img_id=i, img_shape=hw, ori_shape=hw,
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                           labels=torch.randint(0, num_classes, (num_gt,),
                                                                generator=gen))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def step_setting(device: torch.device, quick: bool) -> dict:
    if quick:
        return dict(config=str(ROOT / QUICK_CONFIG), batch=1, hw=(64, 64), num_gt=2, iters=1,
                    warmup=0)
    config = str(ROOT / FULL_CONFIG)
    if device.type == 'cuda':
        return dict(config=config, batch=2, hw=(800, 1333), num_gt=10, iters=3, warmup=1)
    return dict(config=config, batch=1, hw=(320, 320), num_gt=3, iters=1, warmup=0)


def precisions(device: torch.device) -> dict[str, dict]:
    if device.type == 'cuda':
        return {'float32': {},
                'amp_float16': {'optim_wrapper.type': 'AmpOptimWrapper',
                                'optim_wrapper.loss_scale': 'dynamic'},
                'bfloat16': {'optim_wrapper.type': 'AmpOptimWrapper',
                             'optim_wrapper.dtype': 'bfloat16'}}
    return {'float32': {}, 'bfloat16': {'optim_wrapper.type': 'BFloat16OptimWrapper'},
            'float16_autocast_cpu': {'optim_wrapper.type': 'OptimWrapper'}}


def check_train_steps(device: torch.device, quick: bool, report: Report) -> dict:
    setting = step_setting(device, quick)
    if device.type == 'cpu':
        report.skip('train_step.amp_float16', "mmengine's AmpOptimWrapper needs CUDA: the "
                    'CPU runs float16 autocast with torch.amp.GradScaler instead, the same '
                    'code path through the model')
    results = {}
    for name, options in precisions(device).items():
        try:
            cpu_float16 = name.endswith('_cpu')
            # float16 kernels on a CPU are 10-20x slower than float32 ones: a smaller input.
            size = dict(setting, hw=(128, 128)) if cpu_float16 and not quick else setting
            results[name] = train_steps(device, size, options, cpu_float16=cpu_float16)
            results[name]['image_hw'] = list(size['hw'])
        except Exception as err:  # noqa: BLE001
            results[name] = failure(err)
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return {'ok': all(r['ok'] for r in results.values()),
            'setting': {k: v for k, v in setting.items() if k != 'hw'} | {
                'image_hw': list(setting['hw'])}, 'results': results}


def build(setting: dict, options: dict, device: torch.device):
    """A fresh model (seed 0, random weights) and its config's optimizer wrapper."""
    from common import build_model
    cfg = load_config(setting['config'], options)
    torch.manual_seed(0)
    model = build_model(cfg, device)
    return cfg, model, build_optim_wrapper(model, cfg.optim_wrapper)


def train_steps(device: torch.device, setting: dict, options: dict, cpu_float16: bool) -> dict:
    _, model, wrapper = build(setting, options, device)
    model.train()
    raw = detection_batch(setting['batch'], setting['hw'], setting['num_gt'],
                          num_classes_of(model))
    data = model.data_preprocessor(raw, training=True)
    scaler = torch.amp.GradScaler('cpu') if cpu_float16 else None
    memory = PeakMemory(device)
    memory.start()
    times, losses = [], []
    for it in range(setting['warmup'] + setting['iters']):
        sync(device)
        t0 = time.perf_counter()
        if scaler is None:
            with wrapper.optim_context(model):
                loss, log_vars = model.parse_losses(model(**data, mode='loss'))
            wrapper.update_params(loss)
        else:
            loss, log_vars = cpu_float16_step(model, data, wrapper, scaler)
        sync(device)
        if it >= setting['warmup']:
            times.append(time.perf_counter() - t0)
        losses.append({k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()})
    finite_losses = all(math.isfinite(v) for step in losses for v in step.values())
    finite_params = all(torch.isfinite(p).all() for p in model.parameters())
    result = {'ok': finite_losses and finite_params, 'step_s': round(median(times), 4),
              'peak_mem_mb': memory.report()['peak_mb'], 'memory': memory.report(),
              'loss': losses[-1].get('loss'), 'finite_losses': finite_losses,
              'finite_params': finite_params}
    if hasattr(wrapper, 'loss_scaler'):
        result['loss_scale'] = float(wrapper.loss_scaler.get_scale())
    if scaler is not None:
        result['loss_scale'] = float(scaler.get_scale())
    return result


def cpu_float16_step(model, data: dict, wrapper, scaler) -> tuple:
    """AmpOptimWrapper's step with float16 autocast on a CPU: scaled backward, unscale,
    clip, step (skipped by the scaler on inf / NaN gradients), update the scale."""
    with torch.autocast('cpu', dtype=torch.float16):
        loss, log_vars = model.parse_losses(model(**data, mode='loss'))
    scaler.scale(loss).backward()
    scaler.unscale_(wrapper.optimizer)
    if wrapper.clip_grad_kwargs:
        torch.nn.utils.clip_grad_norm_(model.parameters(), **wrapper.clip_grad_kwargs)
    scaler.step(wrapper.optimizer)
    scaler.update()
    wrapper.optimizer.zero_grad()
    return loss, log_vars


# ------------------------------------------------------------------ DDP and prediction


def check_ddp(device: torch.device, quick: bool, report: Report) -> dict:
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel

    from codetr.engine import CPUDistributedDataParallel
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if device.type == 'cpu':
        report.skip('ddp.nccl', 'NCCL needs CUDA: one DDP step over gloo instead')
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    dist.init_process_group(backend, init_method=f'tcp://127.0.0.1:{port}', rank=0,
                            world_size=1)
    try:
        setting = step_setting(device, quick)
        _, model, wrapper = build(setting, {}, device)
        wrapped = (MMDistributedDataParallel(model, device_ids=[device.index or 0])
                   if device.type == 'cuda' else CPUDistributedDataParallel(model))
        raw = detection_batch(setting['batch'], setting['hw'], setting['num_gt'],
                              num_classes_of(model))
        sync(device)
        t0 = time.perf_counter()
        log_vars = wrapped.train_step(raw, optim_wrapper=wrapper)
        sync(device)
        seconds = time.perf_counter() - t0
    finally:
        dist.destroy_process_group()
    finite = all(math.isfinite(float(torch.as_tensor(v).detach())) for v in log_vars.values())
    return {'ok': finite, 'backend': backend, 'world_size': 1, 'step_s': round(seconds, 4),
            'loss': float(torch.as_tensor(log_vars['loss']).detach()), 'finite_losses': finite}


def check_predict(device: torch.device, quick: bool, report: Report) -> dict:
    setting = step_setting(device, quick)
    _, model, _ = build(setting, {}, device)
    model.eval()
    raw = detection_batch(setting['batch'], setting['hw'], setting['num_gt'],
                          num_classes_of(model))
    iters = 1 if quick else (5 if device.type == 'cuda' else 2)
    times = []
    with torch.no_grad():
        data = model.data_preprocessor(raw, training=False)
        for it in range(iters + 1):
            sync(device)
            t0 = time.perf_counter()
            results = model(**data, mode='predict')
            sync(device)
            if it:
                times.append(time.perf_counter() - t0)
    batch_s = median(times)
    boxes_ok = all(torch.isfinite(r.pred_instances.bboxes).all() for r in results)
    return {'ok': boxes_ok and len(results) == setting['batch'], 'batch_s': round(batch_s, 4),
            'images_per_s': round(setting['batch'] / batch_s, 3), 'batch': setting['batch'],
            'image_hw': list(setting['hw']), 'finite_boxes': boxes_ok}
