"""``ms_deform_attn``: one entry point, several backends, chosen once per device type.

Backends:
    ``pytorch``  plain torch ops (an ``embedding_bag`` gather forward, a ``grid_sample``
                 backward); any device, any float dtype.
    ``cpp``      fused CPU kernels (``csrc/ms_deform_attn_cpu.cpp``), compiled on first use
                 with torch's C++ extension loader; float32, float64 or bfloat16 values.
    ``triton``   fused kernels with a hand-written backward (CUDA; CPU only under
                 ``TRITON_INTERPRET=1``, for tests).
    ``mmcv``     mmcv's compiled CUDA op, used only if a full mmcv with ``mmcv._ext`` is
                 installed; never required.
    ``auto``     CUDA tensors: triton if it imports and passes a smoke test, else mmcv,
                 else pytorch. CPU tensors: cpp if it builds and passes a smoke test, else
                 pytorch. Other devices: pytorch. The environment variable
                 ``CODETR_MSDA_BACKEND`` (one of the names above) replaces ``auto``.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import torch
from torch import Tensor

from .pytorch_backend import ms_deform_attn_pytorch

BACKENDS = ('auto', 'pytorch', 'cpp', 'triton', 'mmcv')
ENV_VAR = 'CODETR_MSDA_BACKEND'
MSDAFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]

logger = logging.getLogger(__name__)
_AUTO_CHOICE: dict[str, str] = {}  # device type -> backend name picked by 'auto'


def _load_cpp() -> MSDAFn:
    from .cpp_backend import load_extension, ms_deform_attn_cpp
    load_extension()
    return ms_deform_attn_cpp


def _load_triton() -> MSDAFn:
    from .triton_backend import ms_deform_attn_triton
    return ms_deform_attn_triton


def _load_mmcv() -> MSDAFn:
    # Importing mmcv.ops fails without the compiled extension (mmcv-lite has none).
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction

    def ms_deform_attn_mmcv(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                            sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        # The compiled op is fp32-only in most mmcv releases; compute there, cast back.
        im2col_step = value.shape[0]  # one step per batch: the value of mmcv's default use
        output = MultiScaleDeformableAttnFunction.apply(
            value.float(), spatial_shapes, level_start_index, sampling_locations.float(),
            attention_weights.float(), im2col_step)
        return output.to(value.dtype)

    return ms_deform_attn_mmcv


def get_backend(name: str) -> MSDAFn:
    """The implementation called ``name`` (not ``auto``); ImportError if unavailable."""
    loaders = {'pytorch': lambda: ms_deform_attn_pytorch, 'cpp': _load_cpp,
               'triton': _load_triton, 'mmcv': _load_mmcv}
    if name not in loaders:
        raise ValueError(f'Unknown ms_deform_attn backend {name!r}; choose one of {BACKENDS}.')
    try:
        return loaders[name]()
    except ImportError as err:
        needs = {'cpp': 'a C++ compiler and ninja to build its CPU kernels',
                 'triton': 'the triton package (ships with CUDA builds of torch)',
                 'mmcv': 'a full mmcv built with its CUDA ops (mmcv-lite has none)'}[name]
        raise ImportError(f'ms_deform_attn backend {name!r} needs {needs}: {err}. Use '
                          f"backend='auto' or 'pytorch' instead.") from err


def _smoke_test(fn: MSDAFn, device: torch.device) -> bool:
    """Run ``fn`` forward and backward once on a tiny input and compare with pytorch.

    The first call usually comes from inside a model's forward: under no_grad, autocast,
    or activation checkpointing, whose saved-tensor hooks would capture the test's own
    graph. Those states are thread-local, so the test runs in a fresh thread.
    """
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(_smoke_test_here(fn, device)),
                              name='ms_deform_attn-smoke-test')
    worker.start()
    worker.join()
    return bool(result and result[0])


def _smoke_test_here(fn: MSDAFn, device: torch.device) -> bool:
    try:
        # The first call may come from inside no_grad / inference_mode / autocast code.
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(
                device.type, enabled=False):
            gen = torch.Generator().manual_seed(0)
            shapes = torch.tensor([[3, 4], [2, 2]], device=device)
            starts = torch.tensor([0, 12], device=device)
            value = torch.randn(1, 16, 2, 8, generator=gen).to(device).requires_grad_()
            locs = torch.rand(1, 3, 2, 2, 2, 2, generator=gen).to(device)
            weights = torch.rand(1, 3, 2, 2, 2, generator=gen).softmax(-1).to(device)
            out = fn(value, shapes, starts, locs, weights)
            out.sum().backward()
            ref = ms_deform_attn_pytorch(value.detach(), shapes, starts, locs, weights)
            return bool(torch.allclose(out.detach(), ref, atol=1e-4))
    except Exception as err:  # any failure (compiler, driver, missing ext) means "unusable"
        logger.warning('ms_deform_attn backend failed its smoke test: %s', err)
        return False


def resolve_backend(device: torch.device) -> str:
    """The backend ``auto`` uses on ``device``; decided once per device type, then cached."""
    override = os.environ.get(ENV_VAR, '').strip().lower()
    if override and override != 'auto':
        if override not in BACKENDS:
            raise ValueError(f'{ENV_VAR}={override!r} is not a backend; use one of {BACKENDS}.')
        return override
    if device.type in _AUTO_CHOICE:
        return _AUTO_CHOICE[device.type]
    choice = 'pytorch'
    for name in {'cuda': ('triton', 'mmcv'), 'cpu': ('cpp',)}.get(device.type, ()):
        try:
            fn = get_backend(name)
        except Exception as err:  # absent or broken install: try the next one
            logger.warning('ms_deform_attn: backend %r unavailable (%s)', name, err)
            continue
        if _smoke_test(fn, device):
            choice = name
            break
    _AUTO_CHOICE[device.type] = choice
    logger.info('ms_deform_attn: backend %r chosen for %s tensors', choice, device.type)
    return choice


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor,
                   backend: str = 'auto') -> Tensor:
    """Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021, eq. 3).

    Args:
        value: (B, S, H, D) per-head values; S = sum_l h_l * w_l, each level flattened
            row-major and levels concatenated.
        spatial_shapes: (L, 2) long, (h_l, w_l) of each level.
        level_start_index: (L,) long, offset of each level inside S.
        sampling_locations: (B, Q, H, L, P, 2) normalised xy; (0, 0) is the top-left corner
            of the map and (1, 1) the bottom-right one; points outside read zeros.
        attention_weights: (B, Q, H, L, P), already normalised over the L * P points.
        backend: 'auto', 'pytorch', 'triton' or 'mmcv'.

    Returns:
        (B, Q, H * D) in ``value.dtype``.
    """
    if backend not in BACKENDS:
        raise ValueError(f'Unknown ms_deform_attn backend {backend!r}; choose one of '
                         f'{BACKENDS}.')
    _check_shapes(value, spatial_shapes, sampling_locations, attention_weights)
    if backend == 'auto':
        backend = resolve_backend(value.device)
    device_type = value.device.type
    if not torch.is_autocast_enabled(device_type):
        return get_backend(backend)(value, spatial_shapes, level_start_index,
                                    sampling_locations, attention_weights)
    # Under autocast the backends see their inputs' own dtypes (autocast would otherwise
    # re-cast inside them).
    value = as_sampled(value, backend)
    with torch.autocast(device_type, enabled=False):
        return get_backend(backend)(value, spatial_shapes, level_start_index,
                                    sampling_locations, attention_weights)


def as_sampled(value: Tensor, backend: str = 'auto') -> Tensor:
    """``value`` in the dtype ``backend`` samples it in (a no-op outside autocast).

    Under autocast the pytorch backend samples float32 values, on every device: its
    low-precision path is a ``grid_sample`` whose grid takes the values' dtype, and sampling
    locations rounded to bfloat16 (8 significant bits) land up to 1.3 px off on the 334 px
    wide stride-4 level of a 1333 px image (float16: 0.16 px; at 320 px the bfloat16 output
    is 14 % off in norm); on a CPU that path is also slower than the float32 gather. The
    next projection casts the result back. The cpp and triton kernels read bfloat16 / float16
    values as they are, with float32 locations. Modules that reuse one projected value for
    several calls cast it once with this function.
    """
    device_type = value.device.type
    if not torch.is_autocast_enabled(device_type):
        return value
    if backend == 'auto':
        backend = resolve_backend(value.device)
    return value.float() if backend == 'pytorch' else value


def _check_shapes(value: Tensor, spatial_shapes: Tensor, sampling_locations: Tensor,
                  attention_weights: Tensor) -> None:
    """Raise with a readable message when the inputs do not fit together."""
    if value.dim() != 4 or sampling_locations.dim() != 6:
        raise ValueError(f'ms_deform_attn expects value (B, S, H, D) and sampling_locations '
                         f'(B, Q, H, L, P, 2); got {tuple(value.shape)} and '
                         f'{tuple(sampling_locations.shape)}.')
    if tuple(attention_weights.shape) != tuple(sampling_locations.shape[:-1]):
        raise ValueError(f'attention_weights {tuple(attention_weights.shape)} must equal '
                         f'sampling_locations.shape[:-1] {tuple(sampling_locations.shape[:-1])}.')
    if spatial_shapes.shape != (sampling_locations.shape[3], 2):
        raise ValueError(f'spatial_shapes {tuple(spatial_shapes.shape)} must be (L, 2) with '
                         f'L = {sampling_locations.shape[3]} levels.')
