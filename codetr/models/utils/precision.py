"""Mixed precision at the boundary between the network and the box / loss arithmetic.

Under ``torch.autocast(dtype=torch.bfloat16)`` the network's convs and linears return
bfloat16. bfloat16 keeps 8 mantissa bits: an anchor corner at ~1000 px would be rounded by
4-8 px, a normalised box coordinate by up to 1/256, and focal / IoU terms lose most of their
digits. Everything that is not a network layer (priors, anchors, points, targets, box coding,
IoU / GIoU, matching costs, losses, post-processing) therefore runs in float32: the heads cast
their raw outputs with :func:`to_float32` and run that code with autocast disabled
(:func:`autocast_disabled`, or the :func:`float32_inputs` decorator doing both), because
autocast would otherwise send matmul-like ops of the loss code (``einsum`` in the focal match
cost, for one) back to bfloat16.

Without autocast every helper here is a no-op: float32 and float64 tensors pass through as the
same objects, so full-precision results do not change by a bit.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import Tensor

F = TypeVar('F', bound=Callable[..., Any])


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` raised to float32 if it is a narrower float (bf16 / fp16); else unchanged."""
    if dtype.is_floating_point and torch.finfo(dtype).bits < 32:
        return torch.float32
    return dtype


def to_float32(data: Any) -> Any:
    """Cast the half-precision floating tensors inside ``data`` to float32.

    ``data`` may be a tensor or nested tuples / lists / dicts of them (NamedTuples keep their
    type); float32 / float64 / integer / bool tensors and anything else are returned as they
    are (the same objects, no copy). The cast is differentiable.
    """
    if isinstance(data, Tensor):
        return data.float() if at_least_float32(data.dtype) != data.dtype else data
    if isinstance(data, dict):
        return type(data)((key, to_float32(value)) for key, value in data.items())
    if isinstance(data, tuple) and hasattr(data, '_fields'):  # NamedTuple
        return type(data)(*(to_float32(value) for value in data))
    if isinstance(data, (list, tuple)):
        return type(data)(to_float32(value) for value in data)
    return data


def _first_tensor(data: Any) -> Tensor | None:
    """The first tensor found in ``data`` (nested tuples / lists / dicts), if any."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, dict):
        data = list(data.values())
    if isinstance(data, (list, tuple)):
        for value in data:
            found = _first_tensor(value)
            if found is not None:
                return found
    return None


@contextmanager
def autocast_disabled(like: Tensor | str | torch.device | None = None) -> Iterator[None]:
    """Autocast off for the device type of ``like`` (a tensor, device or device type).

    Only that device type's autocast state changes; when autocast is not on, the block runs
    exactly as without this context.
    """
    if isinstance(like, Tensor):
        device_type = like.device.type
    elif like is None:
        device_type = 'cpu'
    else:
        device_type = torch.device(like).type
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    with torch.autocast(device_type, enabled=False):
        yield


def float32_inputs(fn: F) -> F:
    """Decorator: ``fn`` gets its half-precision tensor arguments as float32
    (:func:`to_float32`, also inside tuples / lists / dicts) and runs with autocast disabled
    on the device of its first tensor argument. For target, loss and post-processing
    functions that receive network outputs."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = to_float32(args), to_float32(kwargs)
        like = _first_tensor((args, kwargs))
        with autocast_disabled(like):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
