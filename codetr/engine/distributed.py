"""Distributed runs without GPUs: gloo process groups and DDP without device ids.

mmengine's ``init_dist`` calls ``torch.cuda.set_device`` before creating the process
group and its Runner wraps models in DDP with ``device_ids=[LOCAL_RANK]``; both fail on a
machine without CUDA. ``CodetrRunner.setup_env`` calls :func:`cuda_free_init_dist` in that
case, and :func:`adapt_cfg_to_device` (used by ``tools/train.py`` and ``tools/test.py``)
selects gloo and :class:`CPUDistributedDataParallel`.
"""
from __future__ import annotations

import datetime
import os
import subprocess
import warnings

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from torch import nn

from codetr.registry import MODEL_WRAPPERS, SCOPE

DEFAULT_PORT = '29500'  # torch.distributed's default master port


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU modules: ``device_ids`` is always ``None``.

    The Runner passes ``device_ids=[LOCAL_RANK]`` to every DDP subclass; DDP rejects device
    ids for CPU modules, so they are dropped here.
    """

    def __init__(self, module: nn.Module, device_ids: list[int] | None = None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def needs_cuda_free_init() -> bool:
    """Whether the process group must be created without touching CUDA."""
    return not torch.cuda.is_available()


def cuda_free_init_dist(launcher: str, backend: str = 'gloo', port: int | None = None,
                        timeout: float | None = None, init_backend: str = 'torch',
                        **kwargs) -> None:
    """Create the default process group for ``launcher`` without ``torch.cuda.set_device``.

    Args:
        launcher: 'pytorch' (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT), 'slurm'
            (derived from SLURM_* variables) or 'mpi' (from OMPI_COMM_WORLD_*).
        backend: must work on CPU; 'nccl' is replaced by 'gloo' with a warning.
        port: master port for slurm; defaults to $MASTER_PORT or 29500.
        timeout: seconds, as in mmengine's ``dist_cfg``.
        init_backend: only 'torch'; mmengine's 'deepspeed'/'colossalai' need GPUs.
    """
    if init_backend != 'torch':
        raise ValueError(f"dist_cfg.init_backend={init_backend!r} needs CUDA; use 'torch' "
                         'for CPU-only runs')
    if backend == 'nccl':
        warnings.warn('CUDA is not available: using the gloo backend instead of nccl.')
        backend = 'gloo'
    if launcher == 'slurm':
        _slurm_env(port)
    elif launcher == 'mpi':
        os.environ.setdefault('MASTER_PORT', DEFAULT_PORT)
        if 'MASTER_ADDR' not in os.environ:
            raise KeyError('launcher=mpi needs the MASTER_ADDR environment variable')
        os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
        os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
        os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']
    elif launcher != 'pytorch':
        raise ValueError(f"launcher must be 'pytorch', 'slurm' or 'mpi', got {launcher!r}")
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def _slurm_env(port: int | None) -> None:
    """Set the torch.distributed variables from slurm's, as mmengine's slurm init does."""
    node_list = os.environ['SLURM_NODELIST']
    if 'MASTER_ADDR' not in os.environ:
        addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
        os.environ['MASTER_ADDR'] = addr
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', DEFAULT_PORT)
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def adapt_cfg_to_device(cfg: Config, launcher: str) -> None:
    """For a distributed launch without CUDA, switch to gloo and CPU DDP (in place).

    A ``model_wrapper_cfg`` naming another wrapper than mmengine's default DDP is kept:
    the user chose it deliberately.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        # Scoped name: Runner.wrap_model looks the type up in mmengine's root registry.
        cfg.model_wrapper_cfg = dict(wrapper, type=f'{SCOPE}.CPUDistributedDataParallel')


def shutdown_distributed() -> None:
    """Destroy the default process group, if any, before the interpreter exits.

    Left alive, gloo's worker threads can still be running while the interpreter tears
    down, which now and then aborts a rank with "terminate called without an active
    exception" after a successful run (seen in two-process ``dist_test.sh`` runs).
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
