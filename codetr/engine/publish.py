"""Publishing a checkpoint: weights and metadata only, the sha256 prefix in the file name."""
from __future__ import annotations

import hashlib
import os
import os.path as osp

import torch

from .checkpoint import atomic_save, load_checkpoint

# What a published file keeps; everything else (optimizer, message_hub, param_schedulers,
# ema_state_dict, ...) is training state.
PUBLISHED_KEYS = ('state_dict', 'meta')
HASH_CHARS = 8


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def published_name(out_file: str, sha256: str) -> str:
    """``work_dirs/model.pth`` + hash -> ``work_dirs/model-<first 8 hex>.pth``."""
    stem, ext = osp.splitext(out_file)
    return f'{stem}-{sha256[:HASH_CHARS]}{ext or ".pth"}'


def strip_checkpoint(checkpoint: dict, drop_aux_heads: bool = False) -> tuple[dict, list[str]]:
    """``(published checkpoint, removed top-level keys)``.

    Keeps ``state_dict`` (a plain ``{name: tensor}`` file is taken as the state dict) and
    ``meta``; with ``drop_aux_heads`` also removes the aux heads, their positive-query
    generators and the adapter (``codetr.models.converters.drop_aux``), which inference
    through the one-to-one branch does not use.
    """
    if 'state_dict' not in checkpoint:
        checkpoint = dict(state_dict=checkpoint)
    state_dict = dict(checkpoint['state_dict'])
    if drop_aux_heads:
        from codetr.models.converters import drop_aux
        state_dict = drop_aux(state_dict)
    meta = dict(checkpoint.get('meta') or {})
    if drop_aux_heads:
        meta['aux_heads_dropped'] = True
    removed = sorted(str(k) for k in checkpoint if k not in PUBLISHED_KEYS)
    return dict(state_dict=state_dict, meta=meta), removed


def publish_checkpoint(in_file: str, out_file: str,
                       drop_aux_heads: bool = False) -> tuple[str, list[str]]:
    """Write the stripped ``in_file`` as ``<out_file stem>-<sha256[:8]>.pth``.

    Returns ``(final path, removed top-level keys)``. The file is loaded with codetr's
    weights-only loader and written atomically (a temporary file, hashed, then renamed).
    """
    published, removed = strip_checkpoint(load_checkpoint(in_file), drop_aux_heads)
    out_dir = osp.dirname(osp.abspath(out_file))
    os.makedirs(out_dir, exist_ok=True)
    tmp = osp.join(out_dir, f'.{osp.basename(out_file)}.unhashed-{os.getpid()}')
    try:
        torch.save(published, tmp)
        final = published_name(out_file, sha256_of(tmp))
        atomic_save(lambda path: os.replace(tmp, path), final)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return final, removed
