"""Checkpoint safety: the ``torch.load`` allow-list, checked loading and atomic saving.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses any pickled global
that is not allow-listed. mmengine's checkpoints hold a few such objects (listed in
``SAFE_GLOBALS`` with the reason for each); they are allow-listed once, when
``codetr.engine`` is imported. Loading never falls back to ``weights_only=False``: a file
holding anything else is reported, not executed.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_core_global(name: str) -> Any:
    """``numpy._core.multiarray.<name>`` (numpy >= 2) or ``numpy.core.multiarray.<name>``."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return getattr(multiarray, name)


def _numpy_dtype_classes() -> list[type]:
    """The dtype classes of the numpy scalars/arrays mmengine logs (numpy >= 1.25 has them)."""
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:
        return []
    names = ('Float64DType', 'Float32DType', 'Float16DType', 'Int64DType', 'Int32DType',
             'BoolDType')
    return [getattr(dtypes, n) for n in names if hasattr(dtypes, n)]


# HistoryBuffer's built-in statistics; ``register_statistics`` may add more at run time.
_HISTORY_STATISTICS = frozenset({'min', 'max', 'mean', 'current'})


# (class, attribute) look-ups the stand-in resolves besides HistoryBuffer's statistics, added
# for the duration of a load by ``allowed_attributes`` (e.g. sharded FSDP checkpoints).
_EXTRA_ATTRIBUTES: set[tuple[type, str]] = set()


@contextmanager
def allowed_attributes(pairs: list[tuple[type, str]]) -> Iterator[None]:
    """Let checkpoints loaded inside the block also look up ``getattr(cls, name)`` for each
    ``(cls, name)`` pair (nested classes some pickles name that way)."""
    added = [p for p in pairs if p not in _EXTRA_ATTRIBUTES]
    _EXTRA_ATTRIBUTES.update(added)
    try:
        yield
    finally:
        _EXTRA_ATTRIBUTES.difference_update(added)


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to ``HistoryBuffer``'s registered statistics methods.

    Stands in for ``builtins.getattr`` while unpickling, so a checkpoint can restore a
    ``HistoryBuffer`` but cannot reach any other attribute of any other object (except the
    look-ups an ``allowed_attributes`` block admits).
    """
    allowed = _HISTORY_STATISTICS.union(HistoryBuffer._statistics_methods)
    if (obj is HistoryBuffer and name in allowed) or (obj, name) in _EXTRA_ATTRIBUTES:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: getattr({getattr(obj, "__qualname__", type(obj).__name__)}, '
        f'{name!r}) is not allowlisted via `add_safe_globals`; a checkpoint may only look up '
        f'HistoryBuffer statistics methods.')


SAFE_GLOBALS: list[Any] = [
    # message_hub.log_scalars: every logged scalar ('loss', 'lr', 'time', ...) is kept in a
    # HistoryBuffer, whose state is two numpy arrays.
    HistoryBuffer,
    # HistoryBuffer.__getstate__ also pickles its statistics functions (min, max, mean,
    # current) as ``getattr(HistoryBuffer, 'min')``. The name ``builtins.getattr`` is
    # mapped to a stand-in that resolves exactly those look-ups and refuses any other.
    (_history_buffer_getattr, 'builtins.getattr'),
    # How numpy arrays pickle: ndarray.__reduce__ names _reconstruct, ndarray and a dtype.
    _numpy_core_global('_reconstruct'),
    np.ndarray,
    np.dtype,
    # numpy scalars (e.g. np.float64 values in message_hub.runtime_info) pickle via scalar().
    _numpy_core_global('scalar'),
    # numpy >= 1.25 pickles a dtype through its class (np.dtypes.Float64DType, ...).
    *_numpy_dtype_classes(),
]


def allow_mmengine_checkpoint_types() -> None:
    """Allow-list ``SAFE_GLOBALS`` for ``torch.load(weights_only=True)``; idempotent."""
    if hasattr(torch.serialization, 'add_safe_globals'):  # torch >= 2.4
        torch.serialization.add_safe_globals(SAFE_GLOBALS)


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not a checkpoint."""


def load_checkpoint(path: str, map_location: str | Callable | None = 'cpu',
                    require: tuple[str, ...] = ()) -> dict:
    """Load a local checkpoint with ``torch.load`` (weights only) and clear errors.

    Args:
        path: a local ``.pth`` file.
        map_location: as for ``torch.load``.
        require: keys the checkpoint must have, e.g. ``('state_dict', 'meta')`` to resume.
            Without it, either a ``state_dict`` key or a plain ``{name: tensor}`` state dict
            is accepted (pretrained weights are often saved that way).

    Raises:
        CheckpointError: "checkpoint not found: PATH", "PATH is not a readable checkpoint
            (truncated or corrupt?): <cause>", or a message listing the keys it has.
    """
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if any(marker in str(err) for marker in _ALLOW_LIST_MARKERS):
            raise CheckpointError(
                f'{path} holds Python objects outside the checkpoint allow-list '
                f'(codetr.engine.checkpoint.SAFE_GLOBALS); they are not loaded because '
                f'unpickling them could run code. If you trust the file, allow the type '
                f'with torch.serialization.add_safe_globals. {_unpickler_cause(err)}') from err
        raise CheckpointError(_unreadable(path, err)) from err
    except Exception as err:  # noqa: BLE001 - garbage bytes fail anywhere in the unpickler
        raise CheckpointError(_unreadable(path, err)) from err
    _check_layout(path, checkpoint, require)
    return checkpoint


# How torch's weights-only unpickler words a refused (rather than a malformed) object.
_ALLOW_LIST_MARKERS = ('Unsupported global', 'allowlisted via `add_safe_globals`',
                       'Trying to call reduce for unrecognized function')


def _unpickler_cause(err: Exception) -> str:
    """The line of torch's long weights-only message that names the refused object."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    named = [ln for ln in lines if any(m in ln for m in _ALLOW_LIST_MARKERS)]
    return (named or lines or [type(err).__name__])[0]


def _unreadable(path: str, err: Exception) -> str:
    cause = _unpickler_cause(err)
    return f'{path} is not a readable checkpoint (truncated or corrupt?): {cause}'


def _check_layout(path: str, checkpoint: Any, require: tuple[str, ...]) -> None:
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path} is not a checkpoint: it holds a '
                              f'{type(checkpoint).__name__}, not a dict with a state_dict')
    keys = sorted(map(str, checkpoint))
    missing = [k for k in require if k not in checkpoint]
    is_plain_state_dict = bool(checkpoint) and all(
        isinstance(v, torch.Tensor) for v in checkpoint.values())
    if missing or not (require or 'state_dict' in checkpoint or is_plain_state_dict):
        needed = ', '.join(require or ('state_dict',))
        raise CheckpointError(f'{path} is not a checkpoint: it has no {needed} '
                              f'(its keys: {", ".join(keys[:20]) or "none"})')


def atomic_save(save_fn: Callable[[str], None], final_path: str) -> None:
    """Run ``save_fn(tmp_path)`` then move the result to ``final_path`` in one step.

    The temporary file sits in the same directory (``os.replace`` is atomic only within a
    file system), so ``final_path`` is either the old file or the complete new one, never a
    partial write. On failure the temporary file is removed and the error re-raised.
    """
    directory, name = osp.split(final_path)
    tmp_path = osp.join(directory, f'.{name}.tmp-{os.getpid()}')
    try:
        save_fn(tmp_path)
        os.replace(tmp_path, final_path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write a small text file (e.g. the ``last_checkpoint`` pointer) atomically."""
    def write(tmp: str) -> None:
        with open(tmp, 'w') as f:
            f.write(text)
    atomic_save(write, path)
