"""Speed and peak memory of the ms_deform_attn backends; prints one JSON object per line.

    python benchmarks/ms_deform_attn.py [--sizes small,small_encoder] [--backends pytorch]
                                        [--device cpu|cuda] [--repeat N]

Sizes follow Co-DINO's 5-level deformable attention (H=8 heads, D=32 channels per head,
P=4 points, strides 4..64): ``small``/``small_encoder`` use a 320x320 input and batch 1 to
fit a CPU; ``codino``/``codino_encoder`` are the full 800x1333, batch-2 shape (GPU; on a
CPU only when named explicitly). ``*_encoder`` has one query per feature position,
the others 900 decoder queries.

Two reference variants always run next to ``pytorch`` and are printed as ratios to it:
``pytorch_autograd`` (the previous per-point formulation differentiated by autograd; what
the hand-written backward replaced) and ``pytorch_stacked`` (stack every level's samples,
then weight them). Memory: on CUDA ``torch.cuda.max_memory_allocated`` above the inputs; on CPU the
growth of the process's resident-set high-water mark (``resource.getrusage`` ru_maxrss),
each case in a fresh subprocess so earlier cases do not hide it.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codetr.models.layers.ms_deform_attn.op import get_backend  # noqa: E402
from codetr.models.layers.ms_deform_attn.pytorch_backend import (  # noqa: E402
    ms_deform_attn_pytorch_autograd,
    ms_deform_attn_pytorch_stacked,
)
from codetr.utils.progress import track  # noqa: E402

# Co-DINO 5-scale: strides 4..64, 8 heads of 32 channels (C=256), 4 points, 900 queries
# (official Co-DINO config).
STRIDES = (4, 8, 16, 32, 64)
HEADS, HEAD_DIMS, POINTS, DECODER_QUERIES = 8, 32, 4, 900
SIZES = {  # name: (batch, image (h, w), encoder?)
    'small': (1, (320, 320), False),
    'small_encoder': (1, (320, 320), True),
    'codino': (2, (800, 1333), False),
    'codino_encoder': (2, (800, 1333), True),
}
GPU_ONLY_SIZES = ('codino', 'codino_encoder')


def make_inputs(size: str, device: torch.device, dtype: torch.dtype) -> tuple:
    """Random op inputs of the named size; float tensors require grad."""
    batch, (img_h, img_w), encoder = SIZES[size]
    shapes = torch.tensor([[math.ceil(img_h / s), math.ceil(img_w / s)] for s in STRIDES],
                          device=device)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    num_value = int(areas.sum())
    queries = num_value if encoder else DECODER_QUERIES
    levels = len(STRIDES)
    value = torch.randn(batch, num_value, HEADS, HEAD_DIMS, device=device, dtype=dtype)
    locs = torch.rand(batch, queries, HEADS, levels, POINTS, 2, device=device, dtype=dtype)
    weights = torch.rand(batch, queries, HEADS, levels * POINTS, device=device).softmax(-1)
    weights = weights.to(dtype).view(batch, queries, HEADS, levels, POINTS)
    return tuple(t.requires_grad_() if t.is_floating_point() else t
                 for t in (value, shapes, starts, locs, weights))


REFERENCE_VARIANTS = {'pytorch_autograd': ms_deform_attn_pytorch_autograd,
                      'pytorch_stacked': ms_deform_attn_pytorch_stacked}


def get_fn(backend: str):
    return REFERENCE_VARIANTS.get(backend) or get_backend(backend)


class PeakMemory:
    """Peak bytes above the level at ``start()``: CUDA allocator stats or CPU RSS high-water."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    def peak_mb(self) -> float:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - self.base) / 2**20


def timed_ms(step, device: torch.device, repeat: int) -> float:
    """Median wall time of ``step()`` in milliseconds."""
    times = []
    for _ in range(repeat):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        tic = time.perf_counter()
        step()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append((time.perf_counter() - tic) * 1e3)
    return statistics.median(times)


def run_case(backend: str, size: str, device: torch.device, repeat: int,
             dtype: torch.dtype) -> dict:
    """Measure one backend at one size in this process."""
    fn = get_fn(backend)
    inputs = make_inputs(size, device, dtype)
    grad = torch.randn(inputs[0].shape[0], inputs[3].shape[1], HEADS * HEAD_DIMS,
                       device=device, dtype=dtype)
    memory = PeakMemory(device)

    def forward() -> None:
        with torch.no_grad():
            fn(*inputs)

    def forward_backward() -> None:
        torch.autograd.grad(fn(*inputs), (inputs[0], inputs[3], inputs[4]), grad)

    # The first calls set the peaks (RSS high-water only grows, and training >= inference).
    memory.start()
    forward()
    forward_peak = memory.peak_mb()
    if device.type == 'cuda':  # the CPU high-water mark cannot be reset: keep its base
        memory.start()
    forward_backward()
    train_peak = memory.peak_mb()
    return dict(backend=backend, size=size, device=device.type, dtype=str(dtype),
                threads=torch.get_num_threads() if device.type == 'cpu' else None,
                queries=inputs[3].shape[1], forward_ms=round(timed_ms(forward, device, repeat), 2),
                forward_backward_ms=round(timed_ms(forward_backward, device, repeat), 2),
                peak_mb_forward=round(forward_peak, 1),
                peak_mb_forward_backward=round(train_peak, 1),
                memory_measure=('cuda.max_memory_allocated' if device.type == 'cuda'
                                else 'ru_maxrss delta (fresh process)'))


def measure(backend: str, size: str, args: argparse.Namespace) -> dict:
    """One case: in-process on CUDA, in a fresh subprocess on CPU (clean RSS high-water)."""
    if args.device == 'cuda':
        return run_case(backend, size, torch.device('cuda'), args.repeat, DTYPES[args.dtype])
    cmd = [sys.executable, __file__, '--worker', '--backends', backend, '--sizes', size,
           '--device', 'cpu', '--repeat', str(args.repeat), '--dtype', args.dtype,
           '--threads', str(args.threads)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        return dict(backend=backend, size=size, error=result.stderr.strip().splitlines()[-1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def skip_reason(backend: str, size: str, args: argparse.Namespace, asked: set) -> str | None:
    if args.device == 'cpu' and backend in ('triton', 'mmcv'):
        return f'{backend} needs CUDA (the triton interpreter is for tests, far too slow here)'
    if args.device == 'cpu' and size in GPU_ONLY_SIZES and size not in asked:
        return 'full-size shape is skipped on CPU unless named in --sizes'
    return None


def compare(results: list[dict]) -> list[dict]:
    """Reference-variant / pytorch ratios for every size where both ran."""
    by_key = {(r['backend'], r['size']): r for r in results if 'error' not in r}
    lines = []
    for (backend, size), naive in by_key.items():
        lean = by_key.get(('pytorch', size))
        if backend not in REFERENCE_VARIANTS or lean is None:
            continue
        lines.append(dict(
            compare=f'{backend} / pytorch', size=size,
            peak_mb_forward_ratio=round(naive['peak_mb_forward'] / max(lean['peak_mb_forward'],
                                                                        1e-3), 2),
            peak_mb_forward_backward_ratio=round(naive['peak_mb_forward_backward']
                                                 / max(lean['peak_mb_forward_backward'], 1e-3), 2),
            forward_ms_ratio=round(naive['forward_ms'] / lean['forward_ms'], 2),
            forward_backward_ms_ratio=round(naive['forward_backward_ms']
                                            / lean['forward_backward_ms'], 2)))
    return lines


DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default=None,
                        help=f'comma-separated from {list(SIZES)}; default: small,small_encoder '
                             'on CPU, all on CUDA')
    parser.add_argument('--backends', default='pytorch,triton',
                        help='comma-separated from pytorch, triton, mmcv, pytorch_autograd, '
                             'pytorch_stacked (both references are added whenever pytorch '
                             'runs)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        choices=('cpu', 'cuda'))
    parser.add_argument('--repeat', type=int, default=5, help='timed runs per case (median)')
    parser.add_argument('--dtype', default='float32', choices=list(DTYPES))
    parser.add_argument('--threads', type=int, default=0,
                        help='torch CPU threads (0: torch default); 1 gives steadier CPU figures')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.worker:  # one case, one JSON line, for the CPU parent process
        print(json.dumps(run_case(args.backends, args.sizes, torch.device(args.device),
                                  args.repeat, DTYPES[args.dtype])))
        return
    default_sizes = 'small,small_encoder' if args.device == 'cpu' else ','.join(SIZES)
    sizes = (args.sizes or default_sizes).split(',')
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f'Unknown sizes {unknown}; choose from {list(SIZES)}.')
    backends = args.backends.split(',')
    if 'pytorch' in backends:
        backends += [name for name in REFERENCE_VARIANTS if name not in backends]
    results = []
    cases = [(size, backend) for size in sizes for backend in backends]
    for size, backend in track(cases, 'ms_deform_attn', unit='cases'):
        reason = skip_reason(backend, size, args, set((args.sizes or '').split(',')))
        if reason:
            print(json.dumps(dict(backend=backend, size=size, skipped=reason)), flush=True)
            continue
        results.append(measure(backend, size, args))
        print(json.dumps(results[-1]), flush=True)
    for line in compare(results):
        print(json.dumps(line), flush=True)


if __name__ == '__main__':
    main()
