"""Loading a backbone's weights from a local checkpoint file; nothing is ever downloaded.

Accepted files: a bare state dict (torchvision's ``resnet50-*.pth``) or an mmengine
checkpoint ``{'state_dict': ..., 'meta': ..., 'message_hub': ...}`` of a whole detector, in
which case only the keys under ``prefix`` (``backbone.``) are kept, with the prefix removed.
"""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from mmengine.logging import print_log
from torch import nn

# Prefixes that name a remote location; mmengine would download them, codetr refuses.
_REMOTE_PREFIXES = ('http://', 'https://', 'torchvision://', 'open-mmlab://', 'modelzoo://',
                    's3://', 'mmcls://', 'openmmlab://')
# Keys of torchvision classifiers that a detection backbone has no use for.
_CLASSIFIER_PREFIXES = ('fc.',)


def read_checkpoint(path: str | Path) -> dict:
    """Read a local checkpoint file with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        ValueError: ``path`` is a URL or a model-zoo name (download the file and give its path).
        FileNotFoundError: no file at ``path``.
        ValueError: the file pickles objects that are not allow-listed for weights-only
            loading (the allow-list is ``codetr.engine.checkpoint.SAFE_GLOBALS``).
    """
    path_str = str(path)
    if path_str.startswith(_REMOTE_PREFIXES):
        raise ValueError(f'Checkpoint {path_str!r} is a remote location; codetr never downloads. '
                         f'Download it yourself and set init_cfg.checkpoint to the local path.')
    if not Path(path_str).is_file():
        raise FileNotFoundError(f'Checkpoint file {path_str!r} does not exist; fix '
                                f'init_cfg.checkpoint (or set init_cfg=None to train from '
                                f'scratch).')
    try:
        # One allow-list for the whole project (numpy values, mmengine's logging buffers);
        # torch's safe_globals context manager would drop entries added by others on exit.
        from codetr.engine.checkpoint import allow_mmengine_checkpoint_types
        allow_mmengine_checkpoint_types()
        return torch.load(path_str, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        # anything beyond tensors, numpy values and (once codetr.engine is imported) the
        # Runner's logging buffers: unpickling it could run code, so refuse and explain
        raise ValueError(
            f'Checkpoint {path_str!r} holds Python objects outside the weights-only allow-list, '
            f'which codetr does not unpickle. If you trust the file, save its weights alone, '
            f'e.g. torch.save(torch.load(path, weights_only=False)["state_dict"], new_path), '
            f'and point init_cfg.checkpoint at the new file. ({err})') from err


def extract_state_dict(checkpoint: dict, prefix: str = 'backbone.') -> dict[str, torch.Tensor]:
    """The module's own state dict out of a checkpoint.

    Unwraps ``state_dict`` / ``model`` entries, strips a DDP ``module.`` prefix and, when any key
    starts with ``prefix``, keeps only those keys without the prefix.
    """
    for wrapper in ('state_dict', 'model'):
        if wrapper in checkpoint and isinstance(checkpoint[wrapper], dict):
            checkpoint = checkpoint[wrapper]
            break
    state = {k.removeprefix('module.'): v for k, v in checkpoint.items()
             if isinstance(v, torch.Tensor)}
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_local_weights(module: nn.Module, path: str | Path,
                       prefix: str = 'backbone.') -> tuple[list[str], list[str]]:
    """Load the weights in the local file ``path`` into ``module`` (non-strict).

    Classifier keys (``fc.*``) are dropped silently; other missing or unexpected keys are
    reported in the log by name. A checkpoint that shares no key with the module is an error.

    Returns:
        ``(missing_keys, unexpected_keys)`` after dropping the classifier keys.
    """
    state = extract_state_dict(read_checkpoint(path), prefix)
    state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    own_keys = set(module.state_dict())
    if not own_keys & set(state):
        raise ValueError(f'Checkpoint {str(path)!r} shares no parameter name with '
                         f'{type(module).__name__} (its first keys: {sorted(state)[:5]}); '
                         f'is it a checkpoint of this backbone?')
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches: say which file caused them
        raise RuntimeError(f'Cannot load {str(path)!r} into {type(module).__name__}: {err}') \
            from err
    name = type(module).__name__
    if result.missing_keys:
        print_log(f'{name}: {len(result.missing_keys)} keys missing from {path}: '
                  f'{result.missing_keys}', logger='current', level=logging.WARNING)
    if result.unexpected_keys:
        print_log(f'{name}: {len(result.unexpected_keys)} unexpected keys in {path}: '
                  f'{result.unexpected_keys}', logger='current', level=logging.WARNING)
    print_log(f'{name}: loaded {len(own_keys) - len(result.missing_keys)}/{len(own_keys)} '
              f'tensors from {path}', logger='current')
    return list(result.missing_keys), list(result.unexpected_keys)
