"""The matrix-product floor of a step: how long its matrix products alone take on this machine.

A step's matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``, convolutions forward and
backward, scaled-dot-product attention) are recorded with their exact operands (shapes,
strides, dtypes, non-tensor arguments) by a ``TorchDispatchMode`` while one step runs, forward
and backward, activation-checkpoint recomputation included. Each distinct call is then run
again in isolation on fresh random operands of the same layout and precision, and timed;
the floor is the sum over the step's calls of those isolated times. Its FLOPs are counted
with torch's FLOP formulas (``torch.utils.flop_counter``), so the floor also gives this
machine's throughput at the step's own shapes (``gflop_per_s``).

``step_s / floor_s`` is how far a step is from doing nothing but its matrix products; unlike
a time, it is comparable across machines.

Only torch is imported here: the MMDetection port's adapter (peer_mmdet_port.py) uses the
same measurement in its own environment. The replay runs with glibc's mmap threshold at its
ceiling (32 MB), so each timed call reuses the heap block its previous output freed whatever
the process's allocator settings: the floor counts matrix work, not the page faults of fresh
mappings (with codetr's 4 MB threshold every large output would otherwise be a new mapping,
and the two sides of a ``--peer`` run would be timed under different allocators).
"""
from __future__ import annotations

import ctypes
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import flop_registry

aten = torch.ops.aten


def _sdpa_cpu_flops(query, key, value, *args, out_val=None, **kwargs) -> int:
    """Forward of CPU flash attention: Q K^T and P V, 2 * 2 * B * H * Q * S * D."""
    batch, heads, queries, dims = query.shape
    return 4 * batch * heads * queries * key.shape[-2] * dims


def _sdpa_cpu_backward_flops(grad_out, query, key, value, *args, out_val=None, **kwargs) -> int:
    """Backward of CPU flash attention: the scores recomputed plus four products."""
    batch, heads, queries, dims = query.shape
    return 10 * batch * heads * queries * key.shape[-2] * dims


def _formulas() -> dict:
    """``{OpOverloadPacket: flops(*args, out_val=...)}`` for every matrix product counted."""
    formulas = dict(flop_registry)
    for name, fn in (('_scaled_dot_product_flash_attention_for_cpu', _sdpa_cpu_flops),
                     ('_scaled_dot_product_flash_attention_for_cpu_backward',
                      _sdpa_cpu_backward_flops)):
        packet = getattr(aten, name, None)
        if packet is not None and packet not in formulas:
            formulas[packet] = fn
    return formulas


@dataclass(frozen=True)
class TensorSpec:
    """Layout of one operand: enough to make a fresh tensor the kernel treats the same."""
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype

    def make(self) -> torch.Tensor:
        """A random tensor with this shape, strides and dtype (0-strides allowed)."""
        span = 1 + sum((s - 1) * st for s, st in zip(self.shape, self.stride) if s > 0)
        if any(s == 0 for s in self.shape):
            span = 0
        base = torch.empty(span, dtype=self.dtype)
        if self.dtype.is_floating_point:
            base.normal_()
        else:
            base.zero_()
        return base.as_strided(self.shape, self.stride)


def _spec(x):
    if isinstance(x, torch.Tensor):
        return TensorSpec(tuple(x.shape), tuple(x.stride()), x.dtype)
    return x


def _materialise(x):
    return x.make() if isinstance(x, TensorSpec) else x


def _key(func, args, kwargs) -> str:
    return f'{func}|{args!r}|{sorted(kwargs.items())!r}'


class MatrixOpRecorder(TorchDispatchMode):
    """Records every matrix product run while active: ``calls[key] = count``, FLOPs per key.

    CPU tensors only (the replay allocates on the CPU).
    """

    def __init__(self) -> None:
        super().__init__()
        self.formulas = _formulas()
        self.calls: Counter[str] = Counter()
        self.ops: dict[str, tuple] = {}  # key -> (func, arg specs, kwarg specs)
        self.flops: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func.overloadpacket)
        if formula is not None:
            specs, kwspecs = tree_map(_spec, args), tree_map(_spec, kwargs)
            key = _key(func, specs, kwspecs)
            if key not in self.ops:
                self.ops[key] = (func, specs, kwspecs)
                self.flops[key] = int(formula(*args, **kwargs, out_val=out))
            self.calls[key] += 1
        return out


def time_isolated(func, specs, kwspecs, min_time_s: float = 0.01, repeats: int = 3) -> float:
    """Median seconds of one call of ``func`` on fresh operands of the recorded layouts.

    One untimed call first; then ``repeats`` timings, each of as many back-to-back calls as
    fill ``min_time_s`` (small products are timed in batches).
    """
    args, kwargs = tree_map(_materialise, specs), tree_map(_materialise, kwspecs)
    with torch.no_grad():
        t0 = time.perf_counter()
        func(*args, **kwargs)
        first = time.perf_counter() - t0
        number = max(1, int(min_time_s / max(first, 1e-7)))
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(number):
                func(*args, **kwargs)
            samples.append((time.perf_counter() - t0) / number)
    return statistics.median(samples)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
M_TRIM_THRESHOLD = -1
HEAP_REUSE_THRESHOLD = 32 * 2**20  # the most glibc accepts (and its dynamic ceiling)


@contextmanager
def heap_reuse() -> Iterator[bool]:
    """glibc's mmap threshold at its 32 MB ceiling inside the block (freed outputs stay in the
    heap for the next call); afterwards back to the threshold codetr's start-up settings
    fixed (``codetr.cpu_runtime.APPLIED_MMAP_THRESHOLD``), or left at 32 MB, where glibc's
    dynamic threshold ends after a step anyway. Yields whether it applied (glibc only)."""
    try:
        libc = ctypes.CDLL('libc.so.6') if sys.platform.startswith('linux') else None
    except OSError:
        libc = None
    applied = libc is not None and libc.mallopt(M_MMAP_THRESHOLD, HEAP_REUSE_THRESHOLD) == 1
    if applied:
        libc.mallopt(M_TRIM_THRESHOLD, 2 * HEAP_REUSE_THRESHOLD)
    try:
        yield applied
    finally:
        lean = sys.modules.get('codetr.cpu_runtime')
        threshold = getattr(lean, 'APPLIED_MMAP_THRESHOLD', None) if lean else None
        if applied and threshold:
            libc.mallopt(M_MMAP_THRESHOLD, threshold)


def floor_of(recorder: MatrixOpRecorder, min_time_s: float = 0.01) -> dict:
    """Replay each distinct recorded product in isolation; the step's floor and FLOPs.

    Returns:
        ``flops`` (the step's matrix-product FLOPs), ``floor_s`` (sum of isolated times over
        every call), ``gflop_per_s`` (flops / floor_s), ``calls``, ``distinct``, ``by_op``
        (floor seconds and GFLOPs per operator) and ``dtypes`` (GFLOPs per operand dtype).
    """
    floor_s, flops = 0.0, 0
    by_op: dict[str, dict[str, float]] = defaultdict(lambda: {'floor_s': 0.0, 'gflop': 0.0,
                                                               'calls': 0})
    dtypes: dict[str, float] = defaultdict(float)
    with heap_reuse():
        seconds_of = {key: time_isolated(*recorder.ops[key], min_time_s)
                      for key in recorder.calls}
    for key, count in recorder.calls.items():
        func, specs, kwspecs = recorder.ops[key]
        seconds = seconds_of[key]
        name = str(func.overloadpacket).removeprefix('aten.')
        floor_s += seconds * count
        flops += recorder.flops[key] * count
        by_op[name]['floor_s'] += seconds * count
        by_op[name]['gflop'] += recorder.flops[key] * count / 1e9
        by_op[name]['calls'] += count
        first = next((s for s in specs if isinstance(s, TensorSpec)), None)
        if first is not None:
            dtypes[str(first.dtype).removeprefix('torch.')] += recorder.flops[key] * count / 1e9
    return {
        'flops': flops, 'floor_s': round(floor_s, 6),
        'gflop_per_s': round(flops / floor_s / 1e9, 2) if floor_s else None,
        'calls': sum(recorder.calls.values()), 'distinct': len(recorder.calls),
        'by_op': {k: {'floor_s': round(v['floor_s'], 6), 'gflop': round(v['gflop'], 2),
                      'calls': v['calls']} for k, v in sorted(by_op.items(),
                                                            key=lambda kv: -kv[1]['floor_s'])},
        'gflop_by_dtype': {k: round(v, 2) for k, v in dtypes.items()},
    }


def measure_floor(step: Callable[[], object], step_s: float | None = None,
                  min_time_s: float = 0.01) -> dict:
    """Run ``step`` (a whole training step or a predict call) once under the recorder, then
    time its matrix products in isolation; with ``step_s`` adds ``step_over_floor``."""
    recorder = MatrixOpRecorder()
    with recorder:
        step()
    result = floor_of(recorder, min_time_s)
    result['method'] = ('each distinct matrix product of one step (shapes, strides, dtype) '
                        'timed alone on random operands; floor = sum over the step\'s calls')
    if step_s is not None and result['floor_s']:
        result['step_s'] = round(step_s, 4)
        result['step_over_floor'] = round(step_s / result['floor_s'], 3)
    return result
