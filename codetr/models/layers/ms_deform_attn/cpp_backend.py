"""``cpp`` backend: fused CPU kernels for multi-scale deformable attention.

``csrc/ms_deform_attn_cpu.cpp`` holds a forward kernel (one task per output row, the four
bilinear corners of each point read straight from ``value``) and a backward kernel (one task
per (image, head), so the value-gradient rows each task writes are its own: no atomics, the
same result for any thread count). Nothing is recomputed or stored besides the inputs; the
pytorch backend needs ``grid_sample`` recomputation and its backward for the same gradients.

The kernels are compiled on first use with ``torch.utils.cpp_extension.load`` (a C++
compiler and ninja are needed; the build is cached under ``TORCH_EXTENSIONS_DIR``, by
default ``~/.cache/torch_extensions``, and rebuilt when the source changes), for AVX-512,
AVX2 and a baseline x86-64 target at once, the CPU picking its version at load time.

Values may be float32, float64 or bfloat16 (autocast's activations, read as they are: no
float32 copy is made or saved); sums, locations, weights and gradients are float32 (float64
for float64 values), and the value gradient is cast to the value's dtype once at the end.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

SOURCE = Path(__file__).resolve().parent / 'csrc' / 'ms_deform_attn_cpu.cpp'
_lock = threading.Lock()
_loaded = False


def load_extension(verbose: bool = False) -> None:
    """Compile (first time) and load the kernels; registers ``torch.ops.codetr_msda``.

    Raises:
        ImportError: no compiler / ninja, or the build failed (the message says which).
    """
    global _loaded
    with _lock:
        if _loaded:
            return
        _put_venv_ninja_on_path()
        try:
            from torch.utils.cpp_extension import load
            load(name='codetr_msda_cpu', sources=[str(SOURCE)], is_python_module=False,
                 extra_cflags=['-O3', '-fno-math-errno'], verbose=verbose)
        except Exception as err:  # compiler missing, ninja missing, build error
            raise ImportError(f'could not build the CPU deformable-attention kernels from '
                              f'{SOURCE}: {err}') from err
        _loaded = True


def _put_venv_ninja_on_path() -> None:
    """torch's loader runs ``ninja`` from PATH; the pip package installs it beside python."""
    if shutil.which('ninja') is None:
        bin_dir = Path(sys.executable).parent
        if (bin_dir / 'ninja').exists():
            os.environ['PATH'] = f'{bin_dir}{os.pathsep}{os.environ.get("PATH", "")}'


def _as_tensor(x: Tensor | Sequence) -> Tensor:
    return x if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.long)


class _CppMSDeformAttn(torch.autograd.Function):
    """Forward saves only its inputs; backward is one fused kernel (once differentiable)."""

    @staticmethod
    def forward(ctx: FunctionCtx, value: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, sampling_locations: Tensor,
                attention_weights: Tensor) -> Tensor:
        ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights)
        return torch.ops.codetr_msda.forward(value, spatial_shapes, level_start_index,
                                             sampling_locations, attention_weights)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        value, shapes, starts, locations, weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = torch.ops.codetr_msda.backward(
            grad_output, value, shapes, starts, locations, weights)
        needs = ctx.needs_input_grad
        return (grad_value if needs[0] else None, None, None,
                grad_locations if needs[3] else None, grad_weights if needs[4] else None)


def ms_deform_attn_cpp(value: Tensor, spatial_shapes: Tensor | Sequence,
                       level_start_index: Tensor | Sequence, sampling_locations: Tensor,
                       attention_weights: Tensor) -> Tensor:
    """Same contract as :func:`ms_deform_attn_pytorch` (CPU tensors).

    float32, float64 and bfloat16 values are read as they are (float16 ones as float32);
    the result is in ``value.dtype``, summed in float32 (float64 for float64 values).
    """
    load_extension()
    dtype = value.dtype
    if dtype not in (torch.float32, torch.float64, torch.bfloat16):
        value = value.float()
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    shapes, starts = _as_tensor(spatial_shapes), _as_tensor(level_start_index)
    out = _CppMSDeformAttn.apply(value, shapes, starts, sampling_locations.to(compute),
                                 attention_weights.to(compute))
    batch, queries, heads, dims = out.shape
    return out.view(batch, queries, heads * dims).to(dtype)
